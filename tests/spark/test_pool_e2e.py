"""The scaler with the ``spark_standalone`` provider, end to end on the Spark lab: a real server
with a pool of Spark workers and a real ``spark_standalone`` agent. A driver asking for more
cores than the lab's own worker has waits in Spark; the scaler buys a node (the agent starts a
worker), the driver runs there, and the worker is stopped once idle for its grace."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.spark import SparkApp
from bridgehead.pools.providers.spark_procs import log_of, running
from tests.e2e.test_local_pool_scaling import FAST
from tests.procs import eventually, stack
from tests.spark.conftest import SparkLab
from tests.spark.test_agent_e2e import start_spark_agent
from tests.spark.test_backend import APP

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CORES = 5
"""More than the lab's own worker has (4): the driver can only run on a worker of the pool."""
POOL = f"""
[[server.pools]]
name = "sw"
cluster = "spark"
provider = "spark_standalone"
shape = {{ cpus = {CORES + 1}, memory_mb = 2048 }}  # the job asks 5 + 1 executor, 512 + 1024 MB
max_nodes = 1
idle_grace_s = 2
options = {{ daemon_memory = "384m" }}
"""


def test_a_waiting_driver_gets_a_worker_stopped_after_its_idle_grace(
        tmp_path: Path, spark_lab: SparkLab) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(FAST + POOL)
    app = tmp_path / "app.py"
    app.write_text(APP)
    with stack(home, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        agent = start_spark_agent(s, spark_lab)
        root = agent.state_dir / "spark-workers" / "sw"

        def until(check: Callable[[], Any], what: str, timeout: float = 180) -> Any:
            try:
                return eventually(check, timeout, interval=0.3, what=what)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; pools {bh.pools()}; agent's log:\n"
                                     f"{agent.output()[-3000:]}") from None

        try:
            job = bh.submit(JobSpec(cluster="spark", name="wide", spark=SparkApp(
                application=str(app), driver_cores=CORES, driver_memory_mb=512)))
            until(lambda: running(root), "a worker started for the waiting driver")
            done = bh.wait(job.id, until="terminal", timeout=180)
            assert done.state is JobState.SUCCEEDED, done
            [key] = running(root)
            [(host, port)] = re.findall(rb"Starting Spark worker (\S+):(\d+) with",
                                        log_of(root / key))
            master = httpx.get(spark_lab.info["json_url"], timeout=30).json()
            [driver] = [d for d in master["completeddrivers"] if d["id"] == done.native_id]
            assert driver["worker"].endswith(f"-{host.decode()}-{port.decode()}"), driver
            until(lambda: not running(root), "the idle worker stopped")
            log = agent.output()
            assert "pool sw: launch" in log and "pool sw: terminate" in log
            assert "NodeBusy" not in log and "has Spark work" not in log
        finally:
            for pid in running(root).values():  # a failed test leaves no worker behind
                os.kill(pid, signal.SIGTERM)
