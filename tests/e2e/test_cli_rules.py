"""`bridgehead rules apply|list|delete` as real processes against a real server: files are
checked locally (exit 2 with file:line, nothing sent), applied all or none, listed with
secrets masked, pruned and deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli_workflow import CLI
from tests.e2e.test_rules import LOOPBACK
from tests.procs import stack

pytestmark = pytest.mark.slow

RULES = """\
rules:
  - name: notify
    match: {type: run.ended}
    actions:
      - webhook: {url: "http://127.0.0.1:9/hook", secret: "{secret}"}
  - name: per-file
    match:
      type: file.created
      data: {name: {wildcard: "*.h5"}}
    actions:
      - start_workflow:
          file: wf.yaml
          params: {path: "{{ data.path }}"}
"""
WORKFLOW = """\
name: per-file
params: {path: none}
defaults: {cluster: local}
steps:
  - id: show
    command: [echo, "{{ params.path }}"]
"""
SECRET = "do-not-show-me"


@pytest.fixture
def bh(tmp_path: Path) -> Iterator[CLI]:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text(LOOPBACK)  # the webhook on 127.0.0.1
    with stack(tmp_path / "home", agent=False) as s:
        cli = CLI(s, tmp_path)
        cli.env["BRIDGEHEAD_TOKEN"] = s.admin  # changing rules needs an admin token
        yield cli


def test_apply_list_prune_and_delete(bh: CLI) -> None:
    bh.file("wf.yaml", WORKFLOW)
    rules = bh.file("rules.yaml", RULES.replace("{secret}", SECRET))
    applied = bh("rules", "apply", rules)
    assert applied.returncode == 0, applied
    assert "2 rules applied" in applied.stdout and SECRET not in applied.stdout
    listed = bh.json("rules", "list")
    assert [r["name"] for r in listed] == ["notify", "per-file"]
    assert listed[0]["actions"][0]["webhook"]["secret"] == "***"
    assert "name: per-file" in listed[1]["actions"][0]["start_workflow"]["spec"]  # inlined

    only = bh.file("only.yaml", RULES.replace("{secret}", SECRET).split("  - name: per-file")[0])
    pruned = bh.json("rules", "apply", only, "--prune")
    assert pruned["deleted"] == ["per-file"]
    assert bh("rules", "delete", "notify").returncode == 0
    assert bh.json("rules", "list") == []
    gone = bh("rules", "delete", "notify")
    assert gone.returncode == 2 and "not found" in gone.stderr


def test_a_bad_file_exits_2_with_its_line_and_sends_nothing(bh: CLI) -> None:
    bh.file("wf.yaml", WORKFLOW)
    bad = RULES.replace("{secret}", SECRET).replace(
        'data: {name: {wildcard: "*.h5"}}',
        'data: {name: {wildcard: "*.h5"}, size: {numeric: [">", x]}}')
    result = bh("rules", "apply", bh.file("bad.yaml", bad))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "bad.yaml:9: rules[1].match.data.size.numeric[1]:" in line, line
    missing = bh("rules", "apply", bh.file("m.yaml", RULES.replace("wf.yaml", "nope.yaml")))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    assert bh.json("rules", "list") == []
    dry = bh("rules", "apply", bh.file("ok.yaml", RULES.replace("{secret}", SECRET)),
             "--dry-run", "--json")
    assert dry.returncode == 0 and len(json.loads(dry.stdout)) == 2
    assert bh.json("rules", "list") == []  # a dry run sends nothing
