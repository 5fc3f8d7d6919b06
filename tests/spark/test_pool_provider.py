"""The ``spark_standalone`` pool provider on the real Spark lab (scripts/spark-lab): a node is a
Worker process the agent starts, joined to the lab's master. What is asserted is what the
master's ``/json/`` and ``/proc`` show: the worker registers ALIVE, a second launch of its key
starts no second worker, an application runs on it, terminate refuses it while it works and
stops it (gone from the master's ALIVE workers) once it does not."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.pools import InvalidPool, Pool, pool_from_dict
from bridgehead.domain.spark import SparkApp
from bridgehead.pools.providers import make
from bridgehead.pools.providers.base import Listed, NodeBusy
from bridgehead.pools.providers.spark_procs import log_of, running
from bridgehead.pools.providers.spark_standalone import SparkWorkerProvider
from tests.spark.conftest import SparkLab
from tests.spark.test_backend import new_id, until

pytestmark = pytest.mark.spark

CORES = 5
"""More than the lab's own worker has (4): a driver asking for them can only go to ours."""
GATED = """\
import os, sys, time
gate = sys.argv[1]
print("started", flush=True)
while not os.path.exists(gate):
    time.sleep(0.2)
"""


def pool(**options: Any) -> Pool:
    return pool_from_dict({"name": "sw", "cluster": "spark", "provider": "spark_standalone",
                           "shape": {"cpus": CORES, "memory_mb": 1024}, "max_nodes": 2,
                           "options": {"daemon_memory": "384m", **options}})


def alive_workers(lab: SparkLab) -> list[dict[str, Any]]:
    master = httpx.get(lab.info["json_url"], timeout=30).json()
    return [w for w in master["workers"] if w["state"] == "ALIVE"]


async def listed_until(provider: SparkWorkerProvider, p: Pool,
                       done: Callable[[list[Listed]], bool], timeout: float = 120) -> list[Listed]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = await provider.list([p])
        if done(nodes):
            return nodes
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last listing {nodes}")
        await asyncio.sleep(0.5)


def environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    """Pool roots whose workers a failed test leaves are stopped (SIGTERM: the lab is shared),
    found again at the end as the provider finds them."""
    roots: list[Path] = []
    yield roots
    for root in roots:
        for pid in running(root).values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


async def test_a_worker_per_key_runs_work_and_is_never_stopped_with_it(
        spark_lab: SparkLab, tmp_path: Path, cleanup: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGEHEAD_TOKEN", "agent-secret")  # never passed on to a worker
    backend = spark_lab.backend(tmp_path / "state")
    p = pool()
    provider = make(p, backend)
    assert isinstance(provider, SparkWorkerProvider)
    before = len(alive_workers(spark_lab))
    root = tmp_path / "state" / "spark-workers" / "sw"
    cleanup.append(root)
    try:
        assert await provider.launch(p, ["k1"]) == {"k1": "k1"}
        workers = running(root)
        [pid] = workers.values()
        assert b"agent-secret" not in environ_of(pid)
        [node] = await listed_until(provider, p, lambda n: bool(n) and n[0].ready)
        assert (node.key, node.jobs) == ("k1", 0)
        ours = [w for w in alive_workers(spark_lab) if w["cores"] == CORES]
        assert len(ours) == 1 and len(alive_workers(spark_lab)) == before + 1

        # asked again (by this agent, then by one restarted after a crash): no second worker
        assert await provider.launch(p, ["k1"]) == {"k1": "k1"}
        assert await make(p, spark_lab.backend(tmp_path / "state")).launch(p, ["k1"]) == \
            {"k1": "k1"}
        assert running(root) == workers
        assert len(alive_workers(spark_lab)) == before + 1

        # an application only our worker can hold runs on it
        app = tmp_path / "gated.py"
        app.write_text(GATED)
        gate = tmp_path / "gate"
        spec = JobSpec(cluster="spark", spark=SparkApp(
            application=str(app), arguments=(str(gate),), driver_cores=CORES,
            driver_memory_mb=512))
        nid = await backend.submit(new_id("pool"), spec)
        await until(backend, nid, {JobState.RUNNING})
        [node] = await listed_until(provider, p, lambda n: n[0].jobs > 0)
        with pytest.raises(NodeBusy, match="k1 has Spark work"):
            await provider.terminate(p, ["k1"])
        assert running(root) == workers  # still there, its driver too
        gate.touch()
        assert (await until(backend, nid, {JobState.SUCCEEDED, JobState.FAILED})).state \
            is JobState.SUCCEEDED

        await listed_until(provider, p, lambda n: n[0].jobs == 0)
        await provider.terminate(p, ["k1"])
        assert running(root) == {}
        assert b"Decommission worker" in log_of(root / "k1")  # SIGPWR came before SIGTERM
        assert await provider.list([p]) == []
        assert not [w for w in alive_workers(spark_lab) if w["cores"] == CORES]
        await provider.terminate(p, ["k1"])  # gone already: not an error
    finally:
        await backend.close()


@pytest.mark.parametrize(("options", "field"), [
    ({"host": "a b"}, "host"), ({"daemon_memory": "lots"}, "daemon_memory"),
    ({"spark_home": "relative/spark"}, "spark_home"), ({"stop_timeout_s": 0}, "stop_timeout_s"),
    ({"port": 7078}, "port"),
])
def test_bad_options_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPool) as refused:
        make(pool(**options))
    assert refused.value.loc == ("options", field)
