"""A real server and a real ``spark_standalone`` agent on the Spark lab: Spark applications
end to end (states, exit codes, logs, usage), and exactly once when the agent is killed right
after the master took a driver, before its id was recorded."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.spark import SparkApp
from tests.procs import Agent, Stack, eventually, stack
from tests.spark.conftest import SparkLab
from tests.spark.test_backend import APP
from tests.spark.test_master_restart import kill_left_in

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture
def bh_stack(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        yield s, bh


def start_spark_agent(s: Stack, lab: SparkLab, **env: str) -> Agent:
    return s.start_agent(cluster="spark", poll=0.5, args=("--backend", "spark_standalone"),
                         **{**lab.agent_env(), **env})


def spark_job(tmp_path: Path, *args: str, **env: str) -> JobSpec:
    app = tmp_path / "app.py"
    app.write_text(APP)
    return JobSpec(cluster="spark", name="e2e", env=env, spark=SparkApp(
        application=str(app), arguments=args, driver_memory_mb=512))


def drivers_tagged(lab: SparkLab, job_id: str) -> list[str]:
    """The lab's drivers whose launch command carries ``job_id``'s tag (every driver the
    worker launched has a directory in the work dir, its launch command atop its stderr)."""
    out = []
    for path in Path(lab.info["work_dir"]).glob("driver-*/stderr"):
        head = path.read_bytes()[:64 << 10]
        if re.search(rb'-Dspark\.app\.name=[^"]* bh:' + re.escape(job_id.encode()) + b'"',
                     head):
            out.append(path.parent.name)
    return out


def test_spark_apps_through_a_real_server(bh_stack: tuple[Stack, Client], lab_tmp: Path,
                                          spark_lab: SparkLab) -> None:
    s, bh = bh_stack
    start_spark_agent(s, spark_lab)
    ok = bh.submit(spark_job(lab_tmp, "x y", "$HOME"))
    bad = bh.submit(spark_job(lab_tmp, EXIT="4"))
    done_ok = bh.wait(ok.id, until="terminal", timeout=180)
    done_bad = bh.wait(bad.id, until="terminal", timeout=180)
    assert (done_ok.state, done_ok.exit_code) == (JobState.SUCCEEDED, 0), done_ok
    assert (done_bad.state, done_bad.exit_code) == (JobState.FAILED, 4), done_bad
    assert done_ok.native_id and done_ok.native_id.startswith("driver-")
    assert done_ok.usage is not None and done_ok.usage.cores >= 1
    logs = eventually(lambda: bh.read_logs(ok.id)[0], 30, what="the driver's stdout")
    assert json.loads(logs.decode().splitlines()[0]) == {"argv": ["x y", "$HOME"],
                                                         "job": ok.id}
    assert drivers_tagged(spark_lab, ok.id) == [done_ok.native_id]


@pytest.mark.parametrize("failpoint", ["before-backend-submit", "after-backend-submit"])
def test_agent_killed_around_create_makes_one_driver(bh_stack: tuple[Stack, Client],
                                                     lab_tmp: Path, spark_lab: SparkLab,
                                                     failpoint: str) -> None:
    """SIGKILL once the job is submitting, before the master is called, and right after the
    master took the driver, before its id was recorded: each job gets ONE driver."""
    s, bh = bh_stack
    jobs = bh.submit_many([spark_job(lab_tmp, EXIT="3")] * 2)
    doomed = start_spark_agent(s, spark_lab, BRIDGEHEAD_FAILPOINT=failpoint)
    eventually(lambda: not doomed.alive, 60, what=f"the agent to kill itself ({failpoint})")
    assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
    assert {bh.get(j.id).state for j in jobs} == {JobState.SUBMITTING}  # no driver id known
    start_spark_agent(s, spark_lab)
    done = [bh.wait(j.id, until="terminal", timeout=180) for j in jobs]
    assert [(j.state, j.exit_code) for j in done] == [(JobState.FAILED, 3)] * 2  # true ends
    for job in done:  # ONE driver per Bridgehead job
        assert drivers_tagged(spark_lab, job.id) == [job.native_id]


def test_a_job_whose_worker_died_runs_again_once(bh_stack: tuple[Stack, Client],
                                                 lab_tmp: Path, spark_lab: SparkLab) -> None:
    """The worker dies under a running driver: the backend knows the attempt was lost to the
    infrastructure, the server queues the job again, and attempt 2 (tagged ``<id>.a2``) runs
    on the restarted worker to its true end. One driver per attempt; the log has both, with
    the marker between them."""
    s, bh = bh_stack
    start_spark_agent(s, spark_lab)
    job = bh.submit(spark_job(lab_tmp, SLEEP="15"))
    eventually(lambda: b'"argv"' in bh.read_logs(job.id)[0], 120, what="the app to print")
    first = str(bh.get(job.id).native_id)
    try:
        spark_lab.cmd("kill-worker")
        eventually(lambda: bh.get(job.id).attempt == 2, 120, what="attempt 2 to be queued")
    finally:
        kill_left_in(Path(spark_lab.info["work_dir"]) / first)
        spark_lab.cmd("up")
    done = bh.wait(job.id, until="terminal", timeout=240)
    assert (done.state, done.exit_code, done.attempt) == (JobState.SUCCEEDED, 0, 2), done
    assert drivers_tagged(spark_lab, job.id) == [first]
    assert drivers_tagged(spark_lab, f"{job.id}.a2") == [done.native_id] != [first]
    seen: list[bytes] = []

    def both() -> bytes | None:
        seen[:] = [bh.read_logs(job.id)[0]]
        return seen[0] if seen[0].count(b'"argv"') == 2 else None
    log = eventually(both, 60, what=f"both attempts' stdout in {seen}")
    assert b"[bridgehead] attempt 1 was lost: Spark driver ERROR" in log


def test_master_restart_ends_the_forgotten_job_lost(bh_stack: tuple[Stack, Client],
                                                   lab_tmp: Path, spark_lab: SparkLab) -> None:
    """The master restarted without recovery forgets the running driver: the agent looks
    again each poll and, past its lost_after_s, reports the job lost, never succeeded."""
    s, bh = bh_stack
    start_spark_agent(s, spark_lab, BRIDGEHEAD_LOST_AFTER_S="5")
    job = bh.submit(spark_job(lab_tmp, SLEEP="60"))
    eventually(lambda: bh.get(job.id).state is JobState.RUNNING, 120, what="the driver to run")
    native = bh.get(job.id).native_id
    try:
        spark_lab.cmd("restart-master")
    finally:
        kill_left_in(Path(spark_lab.info["work_dir"]) / str(native))
    done = bh.wait(job.id, until="terminal", timeout=120)
    assert done.state is JobState.LOST and done.native_id == native, done


@pytest.fixture
def lab_tmp(tmp_path: Path) -> Path:
    """Where the apps are written: any path the worker can read (it runs on this host)."""
    path = tmp_path / "apps"
    path.mkdir()
    return path
