"""The JobStore contract: every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridgehead.domain.clusters import Role
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import JobSpec, JobState, Transition, Usage
from bridgehead.errors import AuthError, NotFound
from bridgehead.store import JobFilter, JobStore, LogChunk, create_store

S = JobState


def spec(cluster: str = "c1", **kw) -> JobSpec:
    return JobSpec(cluster=cluster, command=("/bin/true",), **kw)


async def submit_one(store: JobStore, **kw) -> str:
    [res] = await store.submit([spec(**kw)])
    return res.job.id


async def walk(store: JobStore, job_id: str, agent: str, *states: JobState) -> None:
    for state in states:
        native = "n-1" if state is S.SUBMITTED else None
        [job] = await store.transition(
            [Transition(job_id=job_id, state=state, native_id=native)], agent_id=agent
        )
        assert job is not None and job.state is state


async def test_submit_get_and_list(store: JobStore) -> None:
    results = await store.submit([spec(), spec(cluster="c2", labels={"run": "r1"})])
    assert all(r.created for r in results)
    job = await store.get(results[0].job.id)
    assert job.state is S.QUEUED and job.version == 1 and job.spec == spec()
    assert [j.id for j in await store.list_jobs(JobFilter(cluster="c2"))] == [results[1].job.id]
    labelled = await store.list_jobs(JobFilter(labels=(("run", "r1"),)))
    assert [j.id for j in labelled] == [results[1].job.id]
    with pytest.raises(NotFound):
        await store.get("nope")


async def test_pagination_is_by_id_in_creation_order(store: JobStore) -> None:
    ids = [r.job.id for r in await store.submit([spec() for _ in range(7)])]
    page1 = await store.list_jobs(JobFilter(), limit=4)
    page2 = await store.list_jobs(JobFilter(), limit=4, after=page1[-1].id)
    assert [j.id for j in page1 + page2] == sorted(ids)


async def test_idempotent_submit_returns_the_same_job(store: JobStore) -> None:
    first = await store.submit([spec(idempotency_key="dag/run/task/0/1")])
    again = await store.submit([spec(idempotency_key="dag/run/task/0/1")])
    other_tenant = await store.submit([spec(idempotency_key="dag/run/task/0/1", tenant="t2")])
    assert first[0].created and not again[0].created
    assert again[0].job.id == first[0].job.id
    assert other_tenant[0].created and other_tenant[0].job.id != first[0].job.id
    assert len(await store.list_jobs(JobFilter(tenant="default"))) == 1


async def test_claim_leases_in_order_and_only_for_the_cluster(store: JobStore) -> None:
    ids = [r.job.id for r in await store.submit([spec() for _ in range(3)] + [spec("c2")])]
    claimed = await store.claim("c1", "a1", limit=2, lease_s=30)
    assert [j.id for j in claimed] == ids[:2]
    assert all(j.state is S.CLAIMED and j.agent_id == "a1" for j in claimed)
    assert all(j.lease_expires_at and j.lease_expires_at > time.time() for j in claimed)
    rest = await store.claim("c1", "a2", limit=10, lease_s=30)
    assert [j.id for j in rest] == [ids[2]]
    assert await store.claim("c1", "a2", limit=10, lease_s=30) == []


async def test_concurrent_claimers_never_share_a_job(store_dsn: str) -> None:
    stores = [create_store(store_dsn) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        await stores[0].submit([spec() for _ in range(60)])

        async def drain(s: JobStore, agent: str) -> list[str]:
            got: list[str] = []
            while batch := await s.claim("c1", agent, limit=5, lease_s=30):
                got += [j.id for j in batch]
            return got

        results = await asyncio.gather(*(drain(s, f"a{i}") for i, s in enumerate(stores)))
        everything = [i for r in results for i in r]
        assert len(everything) == 60 and len(set(everything)) == 60
    finally:
        for s in stores:
            await s.close()


async def test_expired_claim_is_claimed_again_with_a_new_attempt(store: JobStore) -> None:
    job_id = await submit_one(store)
    await store.claim("c1", "a1", limit=1, lease_s=0.01)
    await asyncio.sleep(0.05)
    [again] = await store.claim("c1", "a2", limit=1, lease_s=30)
    assert again.id == job_id and again.agent_id == "a2" and again.attempt == 2
    # the first agent's late report is refused: the job is no longer its own
    [stale] = await store.transition([Transition(job_id=job_id, state=S.SUBMITTING)],
                                     agent_id="a1")
    assert stale is None


async def test_transitions_are_compare_and_set(store: JobStore) -> None:
    job_id = await submit_one(store)
    await store.claim("c1", "a1", limit=1, lease_s=30)
    await walk(store, job_id, "a1", S.SUBMITTING, S.SUBMITTED, S.RUNNING)
    done = Transition(job_id=job_id, state=S.SUCCEEDED, exit_code=0,
                      usage=Usage(elapsed_s=2.0, cores=4, nodes=1))
    [job] = await store.transition([done], agent_id="a1")
    assert job is not None and job.state is S.SUCCEEDED and job.exit_code == 0
    assert job.usage == Usage(elapsed_s=2.0, cores=4, nodes=1) and job.finished_at
    assert job.native_id == "n-1" and job.started_at and job.submitted_at
    version = job.version
    # duplicate and stale reports change nothing
    dup = await store.transition(
        [done, Transition(job_id=job_id, state=S.RUNNING),
         Transition(job_id=job_id, state=S.FAILED, exit_code=3)], agent_id="a1")
    assert dup == [None, None, None]
    job = await store.get(job_id)
    assert job.state is S.SUCCEEDED and job.version == version and job.exit_code == 0


async def test_a_batch_may_name_one_job_twice_in_order(store: JobStore) -> None:
    ids = [r.job.id for r in await store.submit([spec(), spec()])]
    await store.claim("c1", "a1", limit=2, lease_s=30)
    batch = [Transition(job_id=i, state=s, native_id="n" if s is S.SUBMITTED else None)
             for i in ids for s in (S.SUBMITTING, S.SUBMITTED, S.RUNNING, S.SUCCEEDED)]
    applied = await store.transition(batch, agent_id="a1")
    assert all(a is not None for a in applied)
    assert [(await store.get(i)).state for i in ids] == [S.SUCCEEDED, S.SUCCEEDED]


async def test_cancel_queued_is_immediate_and_in_flight_is_flagged(store: JobStore) -> None:
    queued, flying = [r.job.id for r in await store.submit([spec(), spec()])]
    assert (await store.request_cancel(queued)).state is S.CANCELLED
    await store.claim("c1", "a1", limit=5, lease_s=30)
    await walk(store, flying, "a1", S.SUBMITTING, S.SUBMITTED)
    job = await store.request_cancel(flying)
    assert job.state is S.SUBMITTED and job.cancel_requested
    assert [j.id for j in await store.cancel_requested("c1", "a1")] == [flying]
    assert await store.cancel_requested("c2", "a1") == []  # the agent id of another cluster
    await walk(store, flying, "a1", S.CANCELLED)
    assert await store.cancel_requested("c1", "a1") == []
    with pytest.raises(NotFound):
        await store.request_cancel("missing")


async def test_cancel_of_a_claimed_job_stops_its_submission(store: JobStore) -> None:
    job_id = await submit_one(store)
    await store.claim("c1", "a1", limit=1, lease_s=30)
    assert (await store.request_cancel(job_id)).state is S.CANCELLED
    [refused] = await store.transition([Transition(job_id=job_id, state=S.SUBMITTING)],
                                       agent_id="a1")
    assert refused is None


async def test_adopt_returns_the_agents_jobs_and_orphans(store: JobStore) -> None:
    # Claims take the oldest job first, expired leases included: the short lease is taken
    # last, so no claim after it can pick up its job however slow the machine is.
    mine, other, orphan = [r.job.id for r in await store.submit([spec(), spec(), spec()])]
    await store.claim("c1", "a1", limit=1, lease_s=30)
    await store.claim("c1", "alive", limit=1, lease_s=30)
    await store.claim("c1", "dead", limit=1, lease_s=0.01)
    await walk(store, mine, "a1", S.SUBMITTING)
    await walk(store, orphan, "dead", S.SUBMITTING, S.SUBMITTED)
    await walk(store, other, "alive", S.SUBMITTING, S.SUBMITTED)
    await asyncio.sleep(0.05)
    adopted = await store.adopt("c1", "a1", lease_s=30)
    assert sorted(j.id for j in adopted) == sorted([mine, orphan])
    assert all(j.agent_id == "a1" for j in adopted)
    await walk(store, orphan, "a1", S.RUNNING)


async def test_heartbeat_registers_cluster_with_counts(store: JobStore) -> None:
    await store.submit([spec(), spec()])
    await store.heartbeat("c1", "a1", backend="local", labels={"site": "x"},
                          info={"slots": 4}, lease_s=30)
    [stats] = await store.clusters()
    assert stats.cluster.name == "c1" and stats.cluster.labels == {"site": "x"}
    assert stats.cluster.online(time.time(), 10) and stats.counts == {"queued": 2}
    assert await store.counts() == {("c1", "queued"): 2}


async def test_log_chunks_are_idempotent_and_read_by_offset(store: JobStore) -> None:
    job_id = await submit_one(store)
    chunks = [LogChunk(job_id=job_id, stream="stdout", pos=0, data=b"hello "),
              LogChunk(job_id=job_id, stream="stdout", pos=6, data=b"world\n")]
    await store.append_logs(chunks)
    await store.append_logs(chunks[1:])  # re-sent after a retry
    assert await store.read_logs(job_id, "stdout", 0, 1 << 20) == b"hello world\n"
    assert await store.read_logs(job_id, "stdout", 3, 1 << 20) == b"lo world\n"
    assert await store.read_logs(job_id, "stdout", 3, 4) == b"lo w"
    assert await store.read_logs(job_id, "stderr", 0, 100) == b""
    # a gap (chunk at 20 arrived before 12..20) is not read past
    await store.append_logs([LogChunk(job_id=job_id, stream="stdout", pos=20, data=b"later")])
    assert await store.read_logs(job_id, "stdout", 0, 100) == b"hello world\n"


async def test_events_are_an_ordered_log_with_cursors(store: JobStore) -> None:
    job_id = await submit_one(store)
    await store.claim("c1", "a1", limit=1, lease_s=30)
    await walk(store, job_id, "a1", S.SUBMITTING, S.SUBMITTED, S.RUNNING, S.SUCCEEDED)
    events = await store.events(after=0, limit=100)
    assert [e.type.rsplit(".", 1)[1] for e in events] == [
        "queued", "claimed", "submitting", "submitted", "started", "finished"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert all(e.subject == f"jobs/{job_id}" for e in events)
    assert events[-1].data["state"] == "succeeded"
    tail = await store.events(after=events[2].seq, limit=2)
    assert [e.seq for e in tail] == [events[3].seq, events[4].seq]
    [(ext, _)] = await store.append_events([Event(type="file.created", subject="/data/x.nc")])
    assert ext.seq > events[-1].seq


async def test_tokens_hash_only_and_revoke(store: JobStore) -> None:
    principal, secret = await store.create_token(name="a", role=Role.AGENT, cluster="c1",
                                                 tenant=None)
    got = await store.authenticate(secret)
    assert got == principal and got.may_serve("c1") and not got.may_serve("c2")
    await store.revoke_token(principal.token_id)
    with pytest.raises(AuthError):
        await store.authenticate(secret)
    with pytest.raises(AuthError):
        await store.authenticate("bh_guess")


async def test_waiters_are_woken_by_changes(store: JobStore) -> None:
    job_id = await submit_one(store)
    async with store.hub.watch(f"job:{job_id}") as changed:
        await store.claim("c1", "a1", limit=1, lease_s=30)
        assert await changed.wait(5)
    async with store.hub.watch("cluster:c1") as work:
        await store.submit([spec()])
        assert await work.wait(5)
