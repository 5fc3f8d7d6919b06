"""`bridgehead workflow|events|demo` as real processes against a real server and local agent:
a run followed live (each task's log as its job ends, then a summary), its exit code, its
JSON, bad input (exit 2 and one line, nothing sent), status, list, cancel, retry of the failed
part only, the event log, and the demo main job."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Proc, Stack, env_for, eventually, make_token, stack

pytestmark = pytest.mark.slow

SMALL = """\
name: small
params:
  n: 2
  marker: /nonexistent
defaults: {cluster: local}
steps:
  - id: first
    command: [python3, -c, "import sys; print('hello from first');
      print('careful', file=sys.stderr)"]
  - id: fan
    needs: [first]
    foreach: {param: n}
    command: [python3, -c, "print('fan item {{ item }}')"]
  - id: check
    needs: [fan]
    command: [python3, -c, "import os, sys;
      sys.exit(0 if os.path.exists('{{ params.marker }}') else 3)"]
  - id: report
    needs: [check]
    command: [echo, "report done"]
"""
SLOW = """\
name: slow
defaults: {cluster: local}
steps:
  - id: nap
    command: [sleep, "60"]
  - id: after
    needs: [nap]
    command: [echo, never]
"""


class CLI:
    """The ``bridgehead`` command as a subprocess, with the server's URL and a client token."""

    def __init__(self, s: Stack, tmp: Path) -> None:
        self.stack, self.tmp = s, tmp
        self.env = env_for(s.home, BRIDGEHEAD_URL=s.server.url,
                           BRIDGEHEAD_TOKEN=make_token(s.dsn, "client"))

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.returncode == 0, result
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def bh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CLI]:
    home = tmp_path_factory.mktemp("home")
    with stack(home, slots=4) as s:
        yield CLI(s, tmp_path_factory.mktemp("files"))


def jobs_of(run: dict[str, Any]) -> dict[tuple[str, int], str | None]:
    return {(t["step"], t["index"]): t["job_id"] for t in run["tasks"]}


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by step: [state, tasks, attempts, duration, ...]."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in stdout.splitlines() if line.startswith("│")]
    return {row[0]: row[1:] for row in rows if row and row[0]}


def test_run_follows_live_with_each_log_and_a_summary(bh: CLI) -> None:
    marker = bh.file("present", "")
    result = bh("workflow", "run", bh.file("ok.yaml", SMALL), "-p", f"marker={marker}",
                "-p", "n=[a, b]")
    assert result.returncode == 0, result
    out = result.stdout
    assert out.startswith("run r-") and "started: small, 5 tasks" in out.splitlines()[0]
    for header, text in [("first", "hello from first"), ("fan[a]", "fan item a"),
                         ("fan[b]", "fan item b"), ("report", "report done")]:
        assert f"── {header} (job " in out and text in out, out
    assert "[stderr] careful" in out
    assert out.index("── first (job") < out.index("── fan[") < out.index("── report (job")
    rows = summary_rows(out)
    assert list(rows) == ["first", "fan", "check", "report"]
    assert rows["fan"][:3] == ["succeeded", "2/2", "2"]
    assert "succeeded in" in out.splitlines()[-1]


def test_every_attempt_of_a_retried_task_shows_its_log(bh: CLI) -> None:
    flaky = """\
name: flaky
params: {marker: /nonexistent}
defaults: {cluster: local}
steps:
  - id: flaky
    retries: {count: 1, backoff: 0s}
    command: [python3, -c, "import os, sys; seen = os.path.exists('{{ params.marker }}'); \\
      open('{{ params.marker }}', 'w').close(); print('second try' if seen else 'first try'); \\
      sys.exit(0 if seen else 4)"]
"""
    marker = bh.tmp / "flaky-marker"
    result = bh("workflow", "run", bh.file("flaky.yaml", flaky), "-p", f"marker={marker}")
    assert result.returncode == 0, result
    out = result.stdout
    assert out.count("── flaky (job ") == 2, out
    assert out.index("failed exit 4") < out.index("first try") < out.index("second try")
    assert summary_rows(out)["flaky"][:3] == ["succeeded", "1/1", "2"]


def test_a_failed_run_exits_1_and_retry_reruns_only_what_failed(bh: CLI) -> None:
    marker = bh.tmp / "marker"
    spec = bh.file("failing.yaml", SMALL)
    result = bh("workflow", "run", spec, "-p", f"marker={marker}", "--no-logs")
    assert result.returncode == 1, result
    assert "── " not in result.stdout
    rows = summary_rows(result.stdout)
    assert rows["check"][:2] == ["failed", "1/1"] and "exit code 3" in rows["check"][4]
    assert rows["report"][:2] == ["skipped", "1/1"]
    assert rows["first"][0] == rows["fan"][0] == "succeeded"
    run_id = result.stdout.split()[1]
    before = bh.json("workflow", "status", run_id)
    assert before["state"] == "failed"

    tasks = bh("workflow", "status", run_id, "--tasks")
    assert tasks.returncode == 0 and before["tasks"][0]["job_id"] in tasks.stdout

    marker.write_text("")
    again = bh("workflow", "retry", run_id, "--from-failed", "--follow")
    assert again.returncode == 0, again
    assert "── check (job" in again.stdout and "── report (job" in again.stdout
    assert "── first (job" not in again.stdout and "── fan[" not in again.stdout
    after = bh.json("workflow", "status", run_id)
    assert after["state"] == "succeeded"
    old, new = jobs_of(before), jobs_of(after)
    assert {k: new[k] for k in [("first", 0), ("fan", 0), ("fan", 1)]} == {
        k: old[k] for k in [("first", 0), ("fan", 0), ("fan", 1)]}
    assert new[("check", 0)] != old[("check", 0)] and new[("report", 0)]


def test_json_output_is_the_run(bh: CLI) -> None:
    marker = bh.file("present2", "")
    run = bh.json("workflow", "run", bh.file("json.yaml", SMALL), "-p", f"marker={marker}")
    assert run["state"] == "succeeded" and run["workflow"] == "small"
    assert [s["id"] for s in run["steps"]] == ["first", "fan", "check", "report"]
    assert len(run["tasks"]) == 5 and run["params"]["n"] == 2

    started = bh.json("workflow", "run", bh.file("json.yaml", SMALL), "--detach")
    assert started["state"] == "running" and "steps" not in started
    page = bh.json("workflow", "list", "--workflow", "small")
    assert started["id"] in [r["id"] for r in page["runs"]]


@pytest.mark.parametrize("args, words", [
    (("bad.yaml",), r"bad\.yaml:\d+: invalid YAML"),
    (("unknown.yaml",), r"unknown\.yaml:6: steps\[0\]\.needs\[0\]: .*'nope'"),
    (("ok.yaml", "-p", "nope=1"), "no param 'nope'"),
    (("ok.yaml", "-p", "n=many"), "step 'fan': param 'n' must be a list or an int"),
    (("ok.yaml", "-p", "n=[1, 2"), "not a YAML list"),
    (("ok.yaml", "--params-file", "list.json"), "must be a mapping"),
])
def test_bad_input_exits_2_with_one_line_before_anything_is_sent(
        args: tuple[str, ...], words: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nsteps:\n  - id: a\n    command: [echo\n")
    (tmp_path / "unknown.yaml").write_text("name: unknown\ndefaults: {cluster: local}\nsteps:\n"
                                           "  - id: a\n    command: [echo]\n    needs: [nope]\n")
    (tmp_path / "ok.yaml").write_text(SMALL)
    (tmp_path / "list.json").write_text("[1, 2]")
    env = env_for(tmp_path, BRIDGEHEAD_URL="http://127.0.0.1:9")  # unreachable: exit 1
    result = subprocess.run(
        [sys.executable, "-m", "bridgehead.cli.main", "workflow", "run",
         *(str(tmp_path / a) if a.endswith((".yaml", ".json")) else a for a in args)],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("bridgehead: error:") and re.search(words, line), line


def test_cancel_and_list(bh: CLI) -> None:
    run_id = bh("workflow", "run", bh.file("slow.yaml", SLOW), "--detach").stdout.strip()
    assert run_id.startswith("r-")
    eventually(lambda: bh.json("workflow", "status", run_id)["tasks"][0]["job_id"], 30,
               what="the first job")
    cancelled = bh("workflow", "cancel", run_id)
    assert cancelled.returncode == 0 and run_id in cancelled.stdout
    eventually(lambda: bh.json("workflow", "status", run_id)["state"] == "cancelled", 30,
               what="the cancelled run")
    listed = bh("workflow", "list", "--state", "cancelled")
    assert listed.returncode == 0 and run_id in listed.stdout and "0/2" not in listed.stdout
    assert [r["id"] for r in bh.json("workflow", "list", "--state", "cancelled")["runs"]] == [
        run_id]
    missing = bh("workflow", "status", "r-00000000000000000000")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_events_tail(bh: CLI) -> None:
    bh.json("workflow", "run", bh.file("events.yaml", SMALL), "--detach")
    result = bh("events", "tail", "--no-follow", "--json")
    assert result.returncode == 0, result
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert "bridgehead.workflow.started" in {e["type"] for e in events}
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    runs_only = bh("events", "tail", "--no-follow", "--json", "--type", "bridgehead.workflow.*")
    types = {json.loads(line)["type"] for line in runs_only.stdout.splitlines()}
    assert types and all(t.startswith("bridgehead.workflow.") for t in types)
    after = bh("events", "tail", "--no-follow", "--after", str(seqs[-3]), "--limit", "1")
    [line] = after.stdout.splitlines()
    assert line.split()[0] == str(seqs[-2])


def test_events_tail_follows_until_ctrl_c(bh: CLI) -> None:
    tail = Proc(["events", "tail", "--json", "--type", "demo.ping"], bh.tmp / "tail.log",
                bh.env).start()
    try:
        httpx.post(f"{bh.stack.server.url}/v1/events", timeout=10,
                   headers={"Authorization": f"Bearer {bh.env['BRIDGEHEAD_TOKEN']}"},
                   json={"type": "demo.ping", "subject": "here", "data": {"n": 1}})
        eventually(lambda: "demo.ping" in tail.output(), 30, what="the followed event")
    finally:
        code = tail.kill(signal.SIGINT)
    assert code == 0, tail.output()
    [event] = [json.loads(line) for line in tail.output().splitlines() if line.startswith("{")]
    assert event["data"] == {"n": 1}


def test_demo_runs_the_crystallography_workflow(bh: CLI) -> None:
    result = bh("demo", "--bins", "3", timeout=300)
    assert result.returncode == 0, result
    rows = summary_rows(result.stdout)
    assert list(rows) == ["find_peaks", "index", "merge", "figures_of_merit"]
    assert rows["index"][:2] == ["succeeded", "3/3"]
    assert all(row[0] == "succeeded" for row in rows.values())
    for header in ("find_peaks", "index[0]", "index[2]", "merge", "figures_of_merit"):
        assert f"── {header} (job " in result.stdout
    [workdir] = (bh.stack.home / "demo").iterdir()
    assert (workdir / "merged.json").exists()
