"""The README's commands work as written: the "Using it" and "Workflows" blocks are read from
README.md and run line by line, by bash, with ``bridgehead`` on PATH, against ``bridgehead
up`` (the embedded default, 2 slots), from the repository's root as the README says.
Placeholders are filled as a user would: ``JOB_ID`` with the last job submitted, ``JOB_ID...``
with all of them, ``RUN`` with the run that ``--detach --json`` started. Every line must exit
0. The production, Slurm and Airflow blocks need other hosts; their commands are run by
``tests/slurm`` and ``tests/airflow``. The quickstart's own last lines are checked too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import env_for, start_up

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def bash_blocks(section: str) -> list[list[str]]:
    """The bash blocks of ``section`` (a heading's text), each as its command lines."""
    start = README.index(section)
    end = README.find("\n#", start + len(section))
    text = README[start:end if end > 0 else None]
    return [[line for line in block.splitlines() if line.strip()]
            for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("readme")
    proc = start_up(home, slots=2)
    env = env_for(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    yield env
    proc.kill()


class Shell:
    """Runs README lines one by one, as a user at a prompt would, keeping ``cd`` and
    variables, filling the placeholders from what earlier lines did."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.cwd = dict(env), ROOT
        self.jobs: list[str] = []
        self.run_id = ""

    def __call__(self, line: str) -> subprocess.CompletedProcess[str]:
        command = re.sub(r"\s+# .*$", "", line).strip()
        if match := re.fullmatch(r"(\w+)=(\S+)", command):
            self.env[match[1]] = match[2]
            return subprocess.CompletedProcess(command, 0, "", "")
        if match := re.fullmatch(r"cd (\S+)", command):
            self.cwd = (self.cwd / match[1]).resolve()
            return subprocess.CompletedProcess(command, 0, "", "")
        command = command.replace("JOB_ID...", " ".join(self.jobs))
        command = command.replace("JOB_ID", self.jobs[-1] if self.jobs else "JOB_ID")
        command = re.sub(r"\bRUN\b", self.run_id or "RUN", command)
        result = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env,
                                capture_output=True, text=True, timeout=600)
        if " submit " in f" {command} ":
            jobs = json.loads(self._bh("list", "--json", "--limit", "1000"))["jobs"]
            self.jobs = [j["id"] for j in jobs]
        if "--detach --json" in command and result.returncode == 0:
            self.run_id = json.loads(result.stdout)["id"]
        return result

    def _bh(self, *args: str) -> str:
        return subprocess.run(["bridgehead", *args], env=self.env, capture_output=True,
                              text=True, check=True, timeout=60).stdout


def run_all(shell: Shell, lines: list[str]) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    done = []
    for line in lines:
        result = shell(line)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        done.append((line, result))
    return done


def test_using_it_runs_as_written(up: dict[str, str]) -> None:
    start, commands = bash_blocks("## Using it")[:2]  # the third: production, other hosts
    assert start == [line for line in start if line.startswith("bridgehead up")]
    done = dict(run_all(Shell(up), commands))
    train = next(r for line, r in done.items() if "train.py --epochs 3" in line)
    assert "queued" in train.stdout or "succeeded" in train.stdout
    logs = next(r for line, r in done.items() if line.startswith("bridgehead logs -f"))
    assert "step done" in logs.stdout  # JOB_ID is the last job: ./step.sh
    script = next(r for line, r in done.items() if "--script job.sh" in line)
    assert "succeeded" in script.stdout, script.stdout


def test_workflows_run_as_written(up: dict[str, str]) -> None:
    [commands] = bash_blocks("### Workflows")
    shell = Shell(up)
    done = run_all(shell, commands)
    assert shell.run_id
    status = next(r for line, r in done if line.startswith("bridgehead workflow status"))
    assert "succeeded" in status.stdout and "cancelled" not in status.stdout, status.stdout


def test_the_quickstart_ends_with_commands_that_work() -> None:
    script = (ROOT / "scripts" / "quickstart").read_text()
    tail = script[script.index("To go on"):]
    assert "source .venv/bin/activate" in tail and "bridgehead up --port $port" in tail
    for path in re.findall(r"cd (\S+)", tail):
        assert (ROOT / path).is_dir(), path
    assert (ROOT / "examples" / "quickstart" / "train.py").is_file()
