"""Settings by environment: the README's Configuration table is checked against the settings
classes (every variable documented with its config.toml key, default and command; no name
documented that nothing reads), every ``BRIDGEHEAD_*`` name the repository uses is known, and
an unknown one gets one warning line on stderr, with the name probably meant."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bridgehead import config
from tests.procs import env_for, stack

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
NAME = re.compile(r"(?<![A-Za-z0-9_$])BRIDGEHEAD_(?:[A-Z0-9_]|<[A-Z]+>)*")
COMMAND = {config.ServerSettings: "`server`", config.AgentSettings: "`agent`",
           config.ClientSettings: "client commands", config.AirflowSettings: "`airflow run`"}
NOT_VARIABLES = {"BRIDGEHEAD_CYCLES"}  # bench/slurm.py: a Python constant


def table() -> dict[str, list[str]]:
    """The Configuration table: each variable (``<KEY>`` written ``*``) -> its three cells."""
    section = README[README.index("### Configuration\n"):]
    section = section[:section.index("\n#")]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if line.startswith("| `BRIDGEHEAD_"):
            first, *cells = (cell.strip() for cell in line.strip("|").split("|"))
            rows.update({re.sub(r"<[A-Z]+>", "*", n): cells for n in NAME.findall(first)})
    return rows


def documented_default(value: object) -> str | None:
    """How the table shows a plain default (None for factories, None and empty)."""
    if value is PydanticUndefined or value is None or value == "":
        return None
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def field_of(cls: type[config.BaseSettings], key: str) -> FieldInfo:
    _, name, *sub = key.split(".")
    field = cls.model_fields[name]
    return field.annotation.model_fields[sub[0]] if sub else field  # type: ignore[union-attr]


def test_every_variable_is_in_the_table_with_its_key_default_and_command() -> None:
    rows = table()
    for cls in config.SETTINGS:
        for var, key in config.env_names(cls).items():
            assert var in rows, f"{var} ({key}) is not in the README's Configuration table"
            sets, default, read_by = rows[var]
            table_name, _, name = key.rpartition(".")
            assert f"`[{table_name}] {name}`" in sets, f"{var}: says {sets!r}, reads {key}"
            shown = documented_default(field_of(cls, key).default)
            assert shown is None or shown in default, f"{var}: default {default!r}, not {shown}"
            assert COMMAND[cls] in read_by, f"{var} is read by {COMMAND[cls]}, not {read_by!r}"
    for var in config.OTHER_VARIABLES:
        assert var in rows, f"{var} is not in the README's Configuration table"


def test_the_readme_names_only_variables_that_exist() -> None:
    warned = re.findall(r"bridgehead: warning: (\S+) is not a Bridgehead setting", README)
    assert warned and config.unknown_variables(dict.fromkeys(warned, "")).keys() == set(warned)
    names = set(NAME.findall(re.sub(r"bridgehead: warning: \S+", "", README)))
    found = unknown(names)
    assert not found, f"the README names variables that nothing reads: {sorted(found)}"


def unknown(names: set[str]) -> dict[str, str | None]:
    """``names`` that nothing reads; a placeholder (``BRIDGEHEAD_SLURM__<KEY>``, a prefix
    ``BRIDGEHEAD_SLURM__``) is unknown when no known name begins with its fixed part."""
    known = config.known_variables()
    out: dict[str, str | None] = {}
    for name in names:
        stem = name.split("<")[0]
        if stem != name or name.endswith("_"):
            if not any(k.startswith(stem) for k in known):
                out[name] = None
        else:
            out.update(config.unknown_variables({name: ""}))
    return out


def test_every_name_the_repository_uses_is_known() -> None:
    used: dict[str, Path] = {}
    for top in ("src", "scripts", "tests", "deploy", "bench", "examples", ".ci"):
        for path in (ROOT / top).rglob("*"):
            if (not path.is_file() or path == Path(__file__).resolve()
                    or {"__pycache__", "bridgehead.egg-info"} & set(path.parts)):
                continue
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            used.update(dict.fromkeys(NAME.findall(text), path))
    found = unknown(set(used) - NOT_VARIABLES)
    assert not found, {name: str(used[name].relative_to(ROOT)) for name in found}


@pytest.mark.parametrize("name, likely", [
    ("BRIDGEHEAD_CLIENT__URL", "BRIDGEHEAD_URL"),
    ("BRIDGEHEAD_CLIENT__TIMEOUT", "BRIDGEHEAD_TIMEOUT_S"),
    ("BRIDGEHEAD_SERVER__PORT", "BRIDGEHEAD_PORT"),
    ("BRIDGEHEAD_AGENT__SLURM__CONF", "BRIDGEHEAD_SLURM__CONF"),
    ("BRIDGEHEAD_AGENT__LABELS__SITE", "BRIDGEHEAD_LABELS__SITE"),
    ("BRIDGEHEAD_SLURM_JOB_ROOT", "BRIDGEHEAD_SLURM__JOB_ROOT"),
    ("BRIDGEHEAD_AIRFLOW_PASSWORD", "BRIDGEHEAD_AIRFLOW__PASSWORD"),
    ("BRIDGEHEAD_AIRFLOW__USER", "BRIDGEHEAD_AIRFLOW__USERNAME"),
    ("BRIDGEHEAD_TOKN", "BRIDGEHEAD_TOKEN"),
    ("bridgehead_tokn", "BRIDGEHEAD_TOKEN"),
    ("bridgehead_home", "BRIDGEHEAD_HOME"),  # read by os.environ, so case matters
    ("BRIDGEHEAD_XYZZY", None),
])
def test_an_unknown_name_comes_with_the_likely_one(name: str, likely: str | None) -> None:
    assert config.unknown_variables({name: "x"}) == {name: likely}


def test_names_that_are_read_are_not_unknown() -> None:
    env = dict.fromkeys(["BRIDGEHEAD_URL", "bridgehead_url", "BRIDGEHEAD_LABELS__SITE",
                         "BRIDGEHEAD_SLURM__CONF", "BRIDGEHEAD_SLURM", "BRIDGEHEAD_AIRFLOW__URL",
                         "BRIDGEHEAD_HOME", "BRIDGEHEAD_ARGV_3", "BRIDGEHEAD_TEST_PG_DSN",
                         "AIRFLOW_CONN_BRIDGEHEAD_DEFAULT", "PATH"], "x")
    assert config.unknown_variables(env) == {}


def test_loading_settings_warns_once_per_name_and_keeps_stdout_clean(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGEHEAD_HOME", str(tmp_path))
    monkeypatch.setenv("BRIDGEHEAD_SERVER__HOST", "0.0.0.0")
    server = config.ServerSettings.load()
    config.AgentSettings.load()
    config.ClientSettings.load()
    config.ServerSettings.load()
    out, err = capsys.readouterr()
    assert server.host == "127.0.0.1"  # refused, not taken as another spelling of HOST
    assert out == ""
    assert [line for line in err.splitlines() if "BRIDGEHEAD_SERVER__HOST" in line] == [
        "bridgehead: warning: BRIDGEHEAD_SERVER__HOST is not a Bridgehead setting "
        "(did you mean BRIDGEHEAD_HOST?)"]


@pytest.mark.slow
def test_the_cli_warns_on_stderr_and_its_json_still_parses(tmp_path: Path) -> None:
    with stack(tmp_path, agent=False) as s:
        env = env_for(tmp_path, BRIDGEHEAD_URL=s.server.url, BRIDGEHEAD_TOKEN=s.admin,
                      BRIDGEHEAD_CLIENT__URL="http://127.0.0.1:9")
        result = subprocess.run([sys.executable, "-m", "bridgehead.cli.main", "list", "--json"],
                                env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jobs"] == []
    assert result.stderr.splitlines() == [
        "bridgehead: warning: BRIDGEHEAD_CLIENT__URL is not a Bridgehead setting "
        "(did you mean BRIDGEHEAD_URL?)"]


def test_a_command_that_loads_no_settings_warns_too(tmp_path: Path) -> None:
    env = env_for(tmp_path, BRIDGEHEAD_CLIENT__URL="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-m", "bridgehead", "workflow", "schema"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)
    assert out.stderr.splitlines() == [
        "bridgehead: warning: BRIDGEHEAD_CLIENT__URL is not a Bridgehead setting "
        "(did you mean BRIDGEHEAD_URL?)"]
