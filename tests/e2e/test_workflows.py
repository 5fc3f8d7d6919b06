"""Workflow runs end to end: a real server (its runner) and a real local agent.

Dependency order, fan-out width from a param, failure skipping dependents, retries with
backoff, retry-from-failed running only what failed, cancel, and a server killed with SIGKILL
mid-run that resumes the run on restart with every step run exactly once (SQLite and
PostgreSQL).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import Job
from bridgehead.errors import Conflict
from tests.procs import eventually, stack

pytestmark = pytest.mark.slow

PY = json.dumps(sys.executable)
MARK = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
"""A step that appends its name to a file: each line is one execution."""


def workflow(steps: str, params: str = "{}") -> str:
    return (f"name: wf-test\nparams: {params}\n"
            "defaults: {cluster: local, resources: {cores: 1, walltime: 5m}}\n"
            f"steps:\n{steps}")


def mark_step(step_id: str, log: Path, *, needs: str = "[]", extra: str = "",
              label: str | None = None) -> str:
    word = json.dumps(label or step_id)
    return (f"  - id: {step_id}\n    needs: {needs}\n{extra}"
            f"    command: [{PY}, -c, {json.dumps(MARK)}, {json.dumps(str(log))}, {word}]\n")


def jobs_of(bh: Client, run_id: str) -> list[Job]:
    jobs, _ = bh.list_jobs(labels={"run": run_id}, limit=1000)
    return jobs


def tasks_by_step(run: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for task in run["tasks"]:
        out.setdefault(task["step"], []).append(task)
    return out


def executions(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def test_dependency_order_and_fan_out_width_from_a_param(tmp_path: Path) -> None:
    log = tmp_path / "ran"
    steps = (mark_step("prepare", log)
             + mark_step("index", log, needs="[prepare]", extra="    foreach: {param: bins}\n",
                         label="index-{{ item }}")
             + mark_step("qc", log, needs="[prepare]")
             + mark_step("merge", log, needs="[index, qc]"))
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        run = bh.start_run(workflow(steps, "{bins: 2}"), params={"bins": 5})
        assert run["counts"] == {"waiting": 8}  # 1 + 5 + 1 + 1: the width is the param's
        done = bh.wait_run(run["id"], timeout=120)
        jobs = {(j.spec.labels["step"], j.spec.command[-1]): j for j in jobs_of(bh, run["id"])}
    assert done["state"] == "succeeded", done
    assert executions(log) == Counter(["prepare", "qc", "merge",
                                       *(f"index-{i}" for i in range(5))])
    by_step = tasks_by_step(done)
    assert [t["item"] for t in by_step["index"]] == [0, 1, 2, 3, 4]
    prepare = jobs[("prepare", "prepare")]
    assert prepare.finished_at is not None
    for i in range(5):  # each index job was created after prepare ended
        assert jobs[("index", f"index-{i}")].created_at >= prepare.finished_at
    merge = jobs[("merge", "merge")]
    needed = [j for (step, _), j in jobs.items() if step in ("index", "qc")]
    assert merge.created_at >= max(j.finished_at or 0 for j in needed)


def test_failure_skips_dependents_and_spares_other_branches(tmp_path: Path) -> None:
    log = tmp_path / "ran"
    steps = (mark_step("a", log)
             + "  - id: b\n    needs: [a]\n    command: [\"false\"]\n    retries: 0\n"
             + mark_step("c", log, needs="[b]")
             + mark_step("d", log, needs="[c]")
             + mark_step("e", log, needs="[a]"))
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        run = bh.start_run(workflow(steps))
        done = bh.wait_run(run["id"], timeout=120)
    assert done["state"] == "failed"
    states = {t["step"]: t["state"] for t in done["tasks"]}
    assert states == {"a": "succeeded", "b": "failed", "c": "skipped", "d": "skipped",
                      "e": "succeeded"}
    assert executions(log) == Counter(["a", "e"])
    skipped = next(t for t in done["tasks"] if t["step"] == "c")
    assert "'b'" in skipped["reason"]


FLAKY = ("import os, sys\n"
         "marker = sys.argv[1]\n"
         "if not os.path.exists(marker):\n"
         "    open(marker, 'w').close()\n"
         "    sys.exit(3)\n")


def flaky_step(step_id: str, marker: Path, retries: str, needs: str = "[]") -> str:
    return (f"  - id: {step_id}\n    needs: {needs}\n    retries: {retries}\n"
            f"    command: [{PY}, -c, {json.dumps(FLAKY)}, {json.dumps(str(marker))}]\n")


def test_a_failed_attempt_is_retried_after_its_backoff(tmp_path: Path) -> None:
    steps = flaky_step("flaky", tmp_path / "marker", "{count: 2, backoff: 1s}")
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        run = bh.start_run(workflow(steps))
        done = bh.wait_run(run["id"], timeout=120)
        jobs = sorted(jobs_of(bh, run["id"]), key=lambda j: j.created_at or 0)
    assert done["state"] == "succeeded"
    [task] = done["tasks"]
    assert (task["attempt"], task["tries"]) == (2, 2)
    assert [j.exit_code for j in jobs] == [3, 0]
    assert [j.spec.idempotency_key for j in jobs] == [
        f"wf:{run['id']}:flaky:0:1", f"wf:{run['id']}:flaky:0:2"]
    assert (jobs[1].created_at or 0) - (jobs[0].finished_at or 0) >= 1.0  # the backoff


def test_retry_from_failed_runs_only_what_failed_or_was_skipped(tmp_path: Path) -> None:
    log, marker = tmp_path / "ran", tmp_path / "fixed"
    gate = ("import os, sys; sys.exit(0 if os.path.exists(sys.argv[1]) else 5)")
    steps = (mark_step("a", log)
             + mark_step("side", log, needs="[a]")
             + f"  - id: b\n    needs: [a]\n    retries: 0\n"
               f"    command: [{PY}, -c, {json.dumps(gate)}, {json.dumps(str(marker))}]\n"
             + mark_step("c", log, needs="[b]"))
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        run = bh.start_run(workflow(steps))
        failed = bh.wait_run(run["id"], timeout=120)
        assert failed["state"] == "failed"
        first = {j.spec.labels["step"]: j.id for j in jobs_of(bh, run["id"])}
        with pytest.raises(Conflict, match="only a failed or cancelled run"):
            bh.retry_run(bh.start_run(workflow(mark_step("x", log)))["id"])  # a live run
        marker.touch()
        again = bh.retry_run(run["id"])
        assert again["state"] == "running" and again["id"] == run["id"]
        done = bh.wait_run(run["id"], timeout=120)
        jobs = jobs_of(bh, run["id"])
    assert done["state"] == "succeeded"
    per_step = Counter(j.spec.labels["step"] for j in jobs)
    assert per_step == Counter({"a": 1, "side": 1, "b": 2, "c": 1})
    assert executions(log)["a"] == 1 and executions(log)["side"] == 1
    assert {j.spec.labels["step"]: j.id for j in jobs if j.spec.labels["step"] == "a"} == \
        {"a": first["a"]}


def test_cancel_cancels_live_jobs_and_starts_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "ran"
    steps = ("  - id: slow\n    command: [sleep, \"60\"]\n"
             + mark_step("after", log, needs="[slow]"))
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        run = bh.start_run(workflow(steps))
        eventually(lambda: any(j.state.value == "running" for j in jobs_of(bh, run["id"])),
                   60, what="the slow job to run")
        bh.cancel_run(run["id"])
        done = bh.wait_run(run["id"], timeout=60)
        [job] = jobs_of(bh, run["id"])
    assert done["state"] == "cancelled"
    assert {t["step"]: t["state"] for t in done["tasks"]} == {"slow": "cancelled",
                                                              "after": "cancelled"}
    assert job.state.value == "cancelled"
    assert not log.exists()


def test_a_step_past_its_timeout_is_cancelled_and_counts_as_failed(tmp_path: Path) -> None:
    log = tmp_path / "ran"
    steps = ("  - id: stuck\n    command: [sleep, \"60\"]\n    timeout: 2s\n"
             "    retries: {count: 1, backoff: 0s}\n"
             + mark_step("after", log, needs="[stuck]"))
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        started = time.monotonic()
        run = bh.start_run(workflow(steps))
        done = bh.wait_run(run["id"], timeout=60)
        took = time.monotonic() - started
        jobs = jobs_of(bh, run["id"])
    assert done["state"] == "failed"
    stuck = next(t for t in done["tasks"] if t["step"] == "stuck")
    assert stuck["state"] == "failed" and stuck["reason"] == "timed out after 2s"
    assert stuck["tries"] == 2  # the timeout counts as a failed attempt: retried once
    assert [j.state.value for j in jobs] == ["cancelled", "cancelled"]
    assert took < 30  # neither attempt ran its 60 s
    assert not log.exists()


def test_server_killed_mid_run_resumes_it_with_each_step_run_once(
    store_dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    slow = ("import sys, time; time.sleep(float(sys.argv[3])); "
            "open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')")

    def step(step_id: str, needs: str, word: str, sleep: float, extra: str = "") -> str:
        return (f"  - id: {step_id}\n    needs: {needs}\n{extra}    command: [{PY}, -c, "
                f"{json.dumps(slow)}, {json.dumps(str(log))}, {json.dumps(word)}, "
                f"\"{sleep}\"]\n")

    steps = (step("first", "[]", "first", 0.2)
             + step("fan", "[first]", "fan-{{ item }}", 0.6, "    foreach: {range: [0, 12]}\n")
             + step("merge", "[fan]", "merge", 0.5)
             + step("report", "[merge]", "report", 0.1))
    expected = Counter(["first", "merge", "report", *(f"fan-{i}" for i in range(12))])
    with stack(tmp_path, store_dsn, slots=4) as s, Client(s.server.url, s.admin, timeout=10) as bh:
        run = bh.start_run(workflow(steps))
        eventually(lambda: executions(log)["first"] == 1 and len(executions(log)) >= 3, 60,
                   what="the fan-out to be under way")
        s.server.kill(signal.SIGKILL)  # mid fan-out
        time.sleep(1.0)
        s.server.start()
        eventually(lambda: executions(log)["merge"] == 1, 120, what="merge to run")
        s.server.kill(signal.SIGKILL)  # right after the merge: report is next
        s.server.start()
        done = bh.wait_run(run["id"], timeout=120)
        jobs = jobs_of(bh, run["id"])
    assert done["state"] == "succeeded", done["counts"]
    assert executions(log) == expected  # every step ran, each exactly once
    assert len(jobs) == 15 and all(j.state.value == "succeeded" for j in jobs)
    keys = Counter((j.spec.labels["step"], j.spec.command[-2]) for j in jobs)
    assert set(keys.values()) == {1}  # one job per task
