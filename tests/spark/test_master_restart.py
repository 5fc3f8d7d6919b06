"""A lost worker and a restarted master (these tests run last in tests/spark).

A worker that dies takes its unsupervised drivers to ERROR with no exception
(Master.scala ``removeWorker``: ``removeDriver(driver.id, DriverState.ERROR, None)``): they are
lost, not failed. A Spark master restarted with the default ``spark.deploy.recoveryMode=NONE``
forgets every driver (Master.scala keeps drivers in memory only; the status call then answers
``success: false``): the backend leaves them out of its answer (the agent looks again and
calls them lost after its grace) and never reports one as succeeded. Runs last in tests/spark
(the restart forgets the other tests' drivers too)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bridgehead.domain.jobs import TERMINAL, JobState
from tests.spark.conftest import SparkLab
from tests.spark.test_backend import new_id, spec_of, until

pytestmark = pytest.mark.spark


def kill_left_in(driver_dir: Path) -> None:
    """The app's Python process, orphaned when its worker was killed (its cwd is its driver's
    directory)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == str(driver_dir):
            os.kill(int(pid), signal.SIGKILL)


async def test_a_driver_whose_worker_died_is_lost(spark_lab: SparkLab, tmp_path: Path) -> None:
    backend = spark_lab.backend(tmp_path / "state")
    try:
        nid = await backend.submit(new_id("orphan"), spec_of(tmp_path, SLEEP="120"))
        await until(backend, nid, {JobState.RUNNING})
        spark_lab.cmd("kill-worker")
        try:
            done = await until(backend, nid, set(TERMINAL), timeout=90)
            assert done.state is JobState.LOST and done.infrastructure, done
            assert "worker was lost" in (done.reason or "")
        finally:
            kill_left_in(Path(spark_lab.info["work_dir"]) / nid)
            spark_lab.cmd("up")
    finally:
        await backend.close()


async def test_a_forgotten_driver_is_never_succeeded(spark_lab: SparkLab,
                                                     tmp_path: Path) -> None:
    backend = spark_lab.backend(tmp_path / "state")
    try:
        done = await backend.submit(new_id("done"), spec_of(tmp_path))
        assert (await until(backend, done, set(TERMINAL))).state is JobState.SUCCEEDED
        running = await backend.submit(new_id("running"), spec_of(tmp_path, SLEEP="300"))
        await until(backend, running, {JobState.RUNNING})
        try:
            spark_lab.cmd("restart-master")
        finally:
            # the driver's JVM ends with the old master, its Python process does not
            kill_left_in(Path(spark_lab.info["work_dir"]) / running)
        answer = await backend.poll([done, running])
        assert answer == {}, answer  # unknown: neither succeeded nor anything else
        # the cluster works again, and a new driver's status is its own
        after = await backend.submit(new_id("after"), spec_of(tmp_path, EXIT="2"))
        assert (await until(backend, after, set(TERMINAL))).state is JobState.FAILED
        assert running not in await backend.poll([running, after])
    finally:
        await backend.close()
