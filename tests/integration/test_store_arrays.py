"""The JobStore contract for job arrays, on SQLite and on a real PostgreSQL: a parent and its
elements made in one transaction, elements never claimed, following their parent's
submission, and the parent ending when its last element ends."""

from __future__ import annotations

import asyncio

from bridgehead.domain.jobs import JobSpec, JobState, Transition, Usage
from bridgehead.store import JobFilter, JobStore, create_store

S = JobState


def array_spec(array: str = "0-3", **kw) -> JobSpec:
    return JobSpec(cluster="c1", script="#!/bin/sh\necho $SLURM_ARRAY_TASK_ID\n", array=array,
                   **kw)


async def submitted_array(store: JobStore, array: str = "0-3") -> str:
    """An array job claimed and submitted by agent a1 as native 77."""
    [res] = await store.submit([array_spec(array)])
    [claimed] = await store.claim("c1", "a1", limit=10, lease_s=30)
    assert claimed.id == res.job.id
    for state, native in ((S.SUBMITTING, None), (S.SUBMITTED, "77")):
        [job] = await store.transition([Transition(job_id=res.job.id, state=state,
                                                   native_id=native)], agent_id="a1")
        assert job is not None
    return res.job.id


async def test_submit_makes_parent_and_elements_once(store: JobStore) -> None:
    [res] = await store.submit([array_spec("1,3,5-7%2", idempotency_key="k1")])
    parent = res.job
    assert res.created and parent.elements == 5 and parent.parent_id is None
    elements = await store.list_jobs(JobFilter(parent_id=parent.id))
    assert [(e.id, e.array_index) for e in elements] == [
        (f"{parent.id}_{i}", i) for i in (1, 3, 5, 6, 7)]
    assert all(e.state is S.QUEUED and e.parent_id == parent.id and e.spec.script is None
               and e.spec.array is None for e in elements)
    [again] = await store.submit([array_spec("1,3,5-7%2", idempotency_key="k1")])
    assert not again.created and again.job.id == parent.id
    assert len(await store.list_jobs(JobFilter(cluster="c1"))) == 6  # no second set
    queued = [e for e in await store.events(after=0, limit=100) if e.type.endswith("queued")]
    assert len(queued) == 6


async def test_only_the_parent_is_claimed_and_elements_follow_its_submission(
        store: JobStore) -> None:
    parent_id = await submitted_array(store)
    assert await store.claim("c1", "a2", limit=10, lease_s=30) == []
    elements = await store.list_jobs(JobFilter(parent_id=parent_id))
    assert [(e.state, e.native_id, e.agent_id) for e in elements] == [
        (S.SUBMITTED, f"77_{i}", "a1") for i in range(4)]
    adopted = await store.adopt("c1", "a1", lease_s=30)
    assert len(adopted) == 5  # the parent and its elements are the agent's


async def test_parent_runs_with_an_element_and_ends_with_the_last(store: JobStore) -> None:
    parent_id = await submitted_array(store, "0-2")
    ids = [f"{parent_id}_{i}" for i in range(3)]
    await store.transition([Transition(job_id=ids[0], state=S.RUNNING)], agent_id="a1")
    assert (await store.get(parent_id)).state is S.RUNNING
    use = Usage(elapsed_s=10, cores=2, nodes=1, max_rss_mb=5)
    await store.transition([
        Transition(job_id=ids[0], state=S.SUCCEEDED, exit_code=0, usage=use),
        Transition(job_id=ids[1], state=S.FAILED, exit_code=3, usage=use)], agent_id="a1")
    assert (await store.get(parent_id)).state is S.RUNNING  # one element left
    await store.transition([Transition(job_id=ids[2], state=S.SUCCEEDED, exit_code=0,
                                       usage=use)], agent_id="a1")
    parent = await store.get(parent_id)
    assert (parent.state, parent.exit_code) == (S.FAILED, 3)
    assert "1 of 3 array elements did not succeed" in (parent.reason or "")
    assert parent.usage is not None and parent.usage.core_seconds == 60
    finished = [e.subject for e in await store.events(after=0, limit=100)
                if e.type.endswith("finished")]
    assert finished[-1].endswith(parent_id)  # its end is an event, after the elements'


async def test_all_elements_succeeding_makes_the_parent_succeed(store: JobStore) -> None:
    parent_id = await submitted_array(store, "0-1")
    await store.transition([Transition(job_id=f"{parent_id}_{i}", state=S.SUCCEEDED,
                                       exit_code=0) for i in range(2)], agent_id="a1")
    parent = await store.get(parent_id)
    assert (parent.state, parent.exit_code, parent.reason) == (S.SUCCEEDED, 0, None)


async def test_cancel_of_a_queued_array_cancels_its_elements(store: JobStore) -> None:
    [res] = await store.submit([array_spec("0-2")])
    cancelled = await store.request_cancel(res.job.id)
    assert cancelled.state is S.CANCELLED
    elements = await store.list_jobs(JobFilter(parent_id=res.job.id))
    assert {e.state for e in elements} == {S.CANCELLED}
    assert await store.claim("c1", "a1", limit=10, lease_s=30) == []


async def test_a_refused_array_fails_its_elements(store: JobStore) -> None:
    [res] = await store.submit([array_spec("0-2")])
    await store.claim("c1", "a1", limit=10, lease_s=30)
    for state in (S.SUBMITTING, S.FAILED):
        await store.transition([Transition(job_id=res.job.id, state=state,
                                           reason="sbatch said no")], agent_id="a1")
    elements = await store.list_jobs(JobFilter(parent_id=res.job.id))
    assert {e.state for e in elements} == {S.FAILED}
    assert all("sbatch said no" in (e.reason or "") for e in elements)


async def test_element_cancel_is_flagged_for_the_agent_even_before_submission(
        store: JobStore) -> None:
    [res] = await store.submit([array_spec("0-2")])
    early = await store.request_cancel(f"{res.job.id}_1")
    assert early.state is S.QUEUED and early.cancel_requested  # Slurm must cancel it
    await store.claim("c1", "a1", limit=10, lease_s=30)
    for state, native in ((S.SUBMITTING, None), (S.SUBMITTED, "9")):
        await store.transition([Transition(job_id=res.job.id, state=state, native_id=native)],
                               agent_id="a1")
    await store.request_cancel(f"{res.job.id}_2")
    asked = await store.cancel_requested("c1", "a1")
    assert sorted(j.id for j in asked) == [f"{res.job.id}_1", f"{res.job.id}_2"]
    await store.request_cancel(res.job.id)  # the whole array: the agent cancels the parent
    asked = await store.cancel_requested("c1", "a1")
    assert res.job.id in {j.id for j in asked}
    await store.transition([Transition(job_id=f"{res.job.id}_{i}", state=S.CANCELLED)
                            for i in range(3)], agent_id="a1")
    assert (await store.get(res.job.id)).state is S.CANCELLED


async def test_concurrent_ends_of_the_last_elements_end_the_parent_once(
        store_dsn: str) -> None:
    stores = [create_store(store_dsn) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        for _ in range(5):
            parent_id = await submitted_array(stores[0], "0-1")
            await asyncio.gather(*(
                s.transition([Transition(job_id=f"{parent_id}_{i}", state=S.SUCCEEDED,
                                         exit_code=0)], agent_id="a1")
                for i, s in enumerate(stores)))
            assert (await stores[0].get(parent_id)).state is S.SUCCEEDED
    finally:
        for s in stores:
            await s.close()
