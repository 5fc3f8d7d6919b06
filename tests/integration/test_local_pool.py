"""The ``local`` pool provider on a real local backend: nodes of slots that boot, jobs placed
busiest-node-first, and a node with a job never removed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.domain.pools import NodeShape, Pool
from bridgehead.errors import SubmitRejected
from bridgehead.pools.providers import make
from bridgehead.pools.providers.base import Listed, NodeBusy, Provider

WAIT_FOR_RELEASE = "#!/bin/sh\nwhile [ ! -f release-$BRIDGEHEAD_JOB_ID ]; do sleep 0.05; done\n"
"""Runs until ``release-<its job id>`` appears in its working dir."""


def local_pool(cpus: int = 2, boot_s: float = 0.0) -> Pool:
    return Pool(name="laptop", cluster="local", provider="local",
                shape=NodeShape(cpus=cpus, memory_mb=1024), options={"boot_s": boot_s})


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(LocalBackendSettings(state_dir=tmp_path / "state", slots=8,
                                                kill_grace_s=1.0))
    yield backend
    jobs = tmp_path / "state" / "jobs"
    if jobs.is_dir():
        await backend.cancel([job.name for job in jobs.iterdir()])
    await backend.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path.resolve()


async def submit(backend: LocalBackend, job_id: str, workdir: Path, cores: int = 1) -> None:
    await backend.submit(job_id, JobSpec(cluster="local", script=WAIT_FOR_RELEASE,
                                         working_dir=str(workdir),
                                         resources=Resources(cores=cores)))


async def until(check: object, what: str, within_s: float = 30.0) -> None:
    """Poll the backend (which schedules) until ``check()`` is true."""
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


async def states(backend: LocalBackend, *ids: str) -> list[JobState]:
    got = await backend.poll(list(ids))
    return [got[i].state for i in ids]


def by_key(listed: list[Listed]) -> dict[str | None, Listed]:
    return {n.key: n for n in listed}


async def test_launch_is_idempotent_by_key(backend: LocalBackend) -> None:
    pool = local_pool()
    provider = make(pool, backend)
    first = await provider.launch(pool, ["n1"])
    assert await provider.launch(pool, ["n1"]) == first
    assert [n.provider_id for n in await provider.list([pool])] == [first["n1"]]


async def test_a_pool_replaces_the_fixed_slots_and_a_node_adds_its_own_after_booting(
        backend: LocalBackend, workdir: Path) -> None:
    pool = local_pool(cpus=2, boot_s=0.5)
    provider = make(pool, backend)
    assert backend.capacity().cores == 2  # one job's cores: one node's
    with pytest.raises(SubmitRejected, match="only 2 slots"):
        await submit(backend, "big", workdir, cores=3)
    await submit(backend, "a", workdir)
    assert await states(backend, "a") == [JobState.SUBMITTED]  # no node: the 8 slots are gone
    assert backend.free_slots() == 0
    await provider.launch(pool, ["n1"])
    [node] = await provider.list([pool])
    assert not node.ready
    await until(lambda: _running(backend, "a"), "job a runs once the node booted")
    [node] = await provider.list([pool])
    assert node.ready and node.jobs == 1
    assert backend.free_slots() == 1


async def _running(backend: LocalBackend, job_id: str) -> bool:
    return await states(backend, job_id) == [JobState.RUNNING]


async def test_jobs_go_to_the_busiest_node_with_room_so_whole_nodes_empty_out(
        backend: LocalBackend, workdir: Path) -> None:
    pool = local_pool(cpus=2)
    provider = make(pool, backend)
    ids = await provider.launch(pool, ["n1", "n2"])
    await submit(backend, "a", workdir)
    await until(lambda: _running(backend, "a"), "a runs")
    await submit(backend, "b", workdir)
    await until(lambda: _running(backend, "b"), "b runs")
    nodes = by_key(await provider.list([pool]))
    full = "n1" if nodes["n1"].jobs else "n2"
    empty = "n2" if full == "n1" else "n1"
    assert (nodes[full].jobs, nodes[empty].jobs) == (2, 0)  # b joined a's node
    await submit(backend, "c", workdir)  # the busy node is full: c takes the other
    await until(lambda: _running(backend, "c"), "c runs")
    nodes = by_key(await provider.list([pool]))
    assert (nodes[full].jobs, nodes[empty].jobs) == (2, 1)
    (workdir / "release-c").touch()
    await until(lambda: _ended(backend, "c"), "c ends")
    await submit(backend, "d", workdir)  # the full node is still full: d goes where c was
    await until(lambda: _running(backend, "d"), "d runs")
    assert by_key(await provider.list([pool]))[empty].jobs == 1
    await _check_terminate(provider, pool, backend, workdir, ids[full], ids[empty])


async def _ended(backend: LocalBackend, job_id: str) -> bool:
    [state] = await states(backend, job_id)
    return state.terminal


async def _check_terminate(provider: Provider, pool: Pool, backend: LocalBackend,
                           workdir: Path, full: str, other: str) -> None:
    """A node with a job is refused (and kept); once its jobs end it goes."""
    with pytest.raises(NodeBusy, match=full):
        await provider.terminate(pool, [full])
    assert full in {n.provider_id for n in await provider.list([pool])}
    for job in ("a", "b"):
        (workdir / f"release-{job}").touch()
    await until(lambda: _all_ended(backend, "a", "b"), "a and b end")
    await provider.terminate(pool, [full, "local-gone-1"])  # an unknown id: gone already
    assert [n.provider_id for n in await provider.list([pool])] == [other]


async def _all_ended(backend: LocalBackend, *ids: str) -> bool:
    return all(s.terminal for s in await states(backend, *ids))


async def test_a_terminated_node_takes_its_slots_away(backend: LocalBackend,
                                                      workdir: Path) -> None:
    pool = local_pool(cpus=1)
    provider = make(pool, backend)
    ids = await provider.launch(pool, ["n1"])
    await provider.terminate(pool, [ids["n1"]])
    await submit(backend, "a", workdir)
    assert await states(backend, "a") == [JobState.SUBMITTED]
    assert backend.free_slots() == 0
