"""A real server and a real ``livy`` agent over the Livy and YARN fakes (in this process) over
the Spark lab: Spark apps end to end, and exactly once when the agent is killed -9 at each
boundary of a create: while its request is in flight and never reaches Livy (before create),
and right after Livy took the batch, before its id was recorded (after create)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.spark import SparkApp
from tests.livy.conftest import APP, LivyLab
from tests.procs import Agent, Stack, eventually, stack

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture
def bh_stack(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        yield s, bh


def start_livy_agent(s: Stack, lab: LivyLab, **env: str) -> Agent:
    return s.start_agent(cluster="livy", poll=0.5, args=("--backend", "livy"),
                         **{**lab.agent_env(), **env})


def livy_job(tmp_path: Path, *args: str, **env: str) -> JobSpec:
    app = tmp_path / "app.py"
    app.write_text(APP)
    return JobSpec(cluster="livy", name="e2e", env=env, spark=SparkApp(
        application=str(app), arguments=args, driver_memory_mb=512))


def test_spark_apps_through_livy_and_a_real_server(bh_stack: tuple[Stack, Client],
                                                   tmp_path: Path, livy_lab: LivyLab) -> None:
    """States, exit codes, logs and usage end to end; Livy restarted WITH recovery while a
    batch runs: it comes back ``recovering``, resyncs by tag and the job ends true, in its
    first attempt."""
    s, bh = bh_stack
    start_livy_agent(s, livy_lab)
    ok = bh.submit(livy_job(tmp_path, "x y", "$HOME", SLEEP="8"))
    bad = bh.submit(livy_job(tmp_path, EXIT="4"))
    eventually(lambda: bh.get(ok.id).state is JobState.RUNNING, 120, what="the app to run")
    livy_lab.livy.restart(recovery=True)
    done_ok = bh.wait(ok.id, until="terminal", timeout=180)
    done_bad = bh.wait(bad.id, until="terminal", timeout=180)
    assert (done_ok.state, done_ok.exit_code, done_ok.attempt) == (JobState.SUCCEEDED, 0, 1)
    assert done_bad.state is JobState.FAILED and done_bad.exit_code is None, done_bad
    assert done_ok.usage is not None and done_ok.usage.cores >= 1  # from YARN
    logs = eventually(lambda: bh.read_logs(ok.id)[0], 30, what="the batch's stdout")
    assert json.loads(logs.decode().splitlines()[0]) == {"argv": ["x y", "$HOME"],
                                                         "job": ok.id}
    assert len(livy_lab.drivers_of(ok.id)) == 1


def test_agent_killed_after_create_makes_one_batch(bh_stack: tuple[Stack, Client],
                                                   tmp_path: Path,
                                                   livy_lab: LivyLab) -> None:
    s, bh = bh_stack
    jobs = bh.submit_many([livy_job(tmp_path, EXIT="3")] * 2)
    doomed = start_livy_agent(s, livy_lab, BRIDGEHEAD_FAILPOINT="after-backend-submit")
    eventually(lambda: not doomed.alive, 60, what="the agent to kill itself after create")
    assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
    assert {bh.get(j.id).state for j in jobs} == {JobState.SUBMITTING}
    start_livy_agent(s, livy_lab)
    done = [bh.wait(j.id, until="terminal", timeout=180) for j in jobs]
    assert [j.state for j in done] == [JobState.FAILED] * 2  # their true ends
    assert livy_lab.livy.next_id == 2  # ONE batch per job
    for job in done:
        assert len(livy_lab.drivers_of(job.id)) == 1
        assert job.native_id is not None and job.native_id.endswith(f" bh:{job.id}")


def test_agent_killed_before_its_create_reached_livy(bh_stack: tuple[Stack, Client],
                                                     tmp_path: Path,
                                                     livy_lab: LivyLab) -> None:
    """The create is held in flight; the agent dies; the request never reaches Livy (the
    fake drops it). The next agent finds no batch by name or tag and submits it once."""
    s, bh = bh_stack
    faults = livy_lab.livy.faults
    faults.hold_s, faults.hold_then, faults.hold_creates = 8.0, "drop", 1
    job = bh.submit(livy_job(tmp_path))
    doomed = start_livy_agent(s, livy_lab)
    eventually(lambda: livy_lab.livy.requests["POST /batches"] >= 1, 60,
               what="the agent's create to be in flight")
    doomed.kill(signal.SIGKILL)
    assert bh.get(job.id).state is JobState.SUBMITTING
    eventually(lambda: faults.dropped == 1, 60, what="the held create to be dropped")
    assert livy_lab.livy.next_id == 0
    start_livy_agent(s, livy_lab)
    done = bh.wait(job.id, until="terminal", timeout=180)
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0), done
    assert livy_lab.livy.next_id == 1 and len(livy_lab.drivers_of(job.id)) == 1


def test_livy_restarted_without_recovery_loses_the_attempt_and_it_runs_again(
        bh_stack: tuple[Stack, Client], tmp_path: Path, livy_lab: LivyLab) -> None:
    """Livy stops every batch when it restarts with recovery off: YARN says KILLED, not by
    Bridgehead, so the attempt is lost to the infrastructure and the server gives the job one
    new attempt (a new tag, ``<id>.a2``), which runs to its true end. Never succeeded by
    mistake, one Spark driver per attempt."""
    s, bh = bh_stack
    start_livy_agent(s, livy_lab)
    job = bh.submit(livy_job(tmp_path, SLEEP="10"))
    eventually(lambda: bh.get(job.id).state is JobState.RUNNING, 120, what="the app to run")
    livy_lab.livy.restart(recovery=False)
    done = bh.wait(job.id, until="terminal", timeout=240)
    assert (done.state, done.exit_code, done.attempt) == (JobState.SUCCEEDED, 0, 2), done
    assert len(livy_lab.drivers_of(job.id)) == 1
    assert len(livy_lab.drivers_of(f"{job.id}.a2")) == 1
    assert done.native_id is not None and done.native_id.endswith(f" bh:{job.id}.a2")
