"""The PostgreSQL event log read by cursor (``seq > :after``): no reader ever passes an event
that commits later, so every event is read exactly once, in ``seq`` order.

The first test drives the interleaving that used to lose an event: writer A takes its xid
first, writer B a later one, B logs its event, then A logs its own. It uses the store's
write path (``_write`` and ``_insert_events``); every wait is bounded, so a deadlock fails.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from bridgehead.domain.events import Event, job_event
from bridgehead.domain.jobs import JobSpec, JobState, Transition
from bridgehead.store import queries as q
from bridgehead.store.postgres import PostgresJobStore
from bridgehead.store.sql import WriteTx, event_row, job_from_row

S = JobState
WAIT_S = 10.0
ALL = None  # a follower of every event type (``events``), else of a few (``events_of``)


@pytest.fixture
async def pg_store(pg_database: str) -> AsyncIterator[PostgresJobStore]:
    store = PostgresJobStore(pg_database, max_size=20)
    await store.open()
    try:
        yield store
    finally:
        await asyncio.wait_for(store.close(), WAIT_S)


def spec() -> JobSpec:
    return JobSpec(cluster="c1", command=("/bin/true",))


class Follower:
    """A consumer of the log by cursor: ``events`` as ``GET /v1/events`` and SSE read it, or
    ``events_of`` (a few types) as the workflow runner and the rule engine read it."""

    def __init__(self, store: PostgresJobStore, types: Sequence[str] | None = ALL) -> None:
        self.store, self.types = store, types
        self.after = 0
        self.seen: list[int] = []

    async def catch_up(self) -> None:
        while True:
            if self.types is None:
                batch = await self.store.events(after=self.after, limit=7)
                cursor = batch[-1].seq if batch else self.after
            else:
                batch, cursor = await self.store.events_of(
                    after=self.after, limit=7, types=self.types)
            assert all(e.seq > self.after for e in batch)
            self.seen += [e.seq for e in batch]
            if cursor == self.after:
                return
            self.after = cursor


async def logged_seqs(store: PostgresJobStore, types: Sequence[str] | None = ALL) -> list[int]:
    """Every seq the table holds (of ``types``), by a full read after the writers ended."""
    events = await store.events(after=0, limit=1_000_000)
    return [e.seq for e in events if types is None or e.type in types]


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT_S)


async def test_an_event_committed_later_is_not_passed_by_a_cursor(
    pg_store: PostgresJobStore,
) -> None:
    store = pg_store
    ja, jb = [r.job.id for r in await store.submit([spec(), spec()])]
    readers = [Follower(store), Follower(store, ["bridgehead.job.finished"])]
    for reader in readers:
        await reader.catch_up()
    a_has_xid, b_logged, a_logged, commit_a, commit_b = (asyncio.Event() for _ in range(5))

    async def cancel(tx: WriteTx, job_id: str) -> list[dict[str, Any]]:
        """The first write of the transaction (it takes its xid); the event rows to log."""
        rows = await tx.conn.fetch(q.CANCEL_NOW, {"id": job_id, "now": time.time()})
        job = job_from_row(rows[0])
        return [event_row(job_event(job.id, job.cluster, job.state), time.time())]

    async def writer_a() -> None:
        async with store._write() as tx:
            rows = await cancel(tx, ja)
            a_has_xid.set()
            await wait(b_logged)
            await store._insert_events(tx, rows)  # waits for B's commit: the lock
            a_logged.set()
            await wait(commit_a)

    async def writer_b() -> None:
        await wait(a_has_xid)
        async with store._write() as tx:
            await store._insert_events(tx, await cancel(tx, jb))
            b_logged.set()
            await wait(commit_b)

    tasks = [asyncio.create_task(writer_a()), asyncio.create_task(writer_b())]
    try:
        await wait(b_logged)
        try:  # A's insert has had time to run (it must not pass B's uncommitted one)
            await asyncio.wait_for(a_logged.wait(), 1.0)
        except TimeoutError:
            pass
        commit_a.set()
        if a_logged.is_set():
            await asyncio.wait_for(tasks[0], WAIT_S)  # only without the lock: A commits first
        for reader in readers:
            await reader.catch_up()  # B is still open
        commit_b.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        for reader in readers:
            await reader.catch_up()
    finally:
        for task in tasks:
            task.cancel()

    finished = await store.events(after=0, limit=100)
    seq_of = {e.data["job_id"]: e.seq for e in finished if e.type == "bridgehead.job.finished"}
    assert seq_of[jb] < seq_of[ja]  # B committed first, so B's event comes first
    for reader in readers:
        assert reader.seen == await logged_seqs(store, reader.types)


async def writer(store: PostgresJobStore, rng: random.Random, n: int) -> None:
    """``n`` random writes through the public store API: submits, claims, a job's walk to
    its end, cancels and external events."""
    agent = f"agent-{rng.randrange(1 << 30)}"
    for _ in range(n):
        action = rng.choice(("submit", "walk", "cancel", "external"))
        if action == "submit":
            await store.submit([spec() for _ in range(rng.randint(1, 3))])
        elif action == "walk":
            await store.submit([spec()])
            for job in await store.claim("c1", agent, limit=rng.randint(1, 3), lease_s=60):
                for state in (S.SUBMITTING, S.SUBMITTED, S.RUNNING, S.SUCCEEDED):
                    await store.transition(
                        [Transition(job_id=job.id, state=state, native_id="n-1")],
                        agent_id=agent)
                    await asyncio.sleep(rng.random() * 0.002)
        elif action == "cancel":
            [res] = await store.submit([spec()])
            await store.request_cancel(res.job.id)
        else:
            await store.append_events([Event(type="x.ping", subject="x", source="tests")])
        await asyncio.sleep(rng.random() * 0.005)


@pytest.mark.parametrize("seed", [1, 2])
async def test_concurrent_writers_and_followers_see_every_event_once_in_order(
    pg_store: PostgresJobStore, seed: int,
) -> None:
    store = pg_store
    rng = random.Random(seed)
    readers = [Follower(store), Follower(store, ["bridgehead.job.finished", "x.ping"])]
    done = asyncio.Event()

    async def follow(reader: Follower) -> None:
        while not done.is_set():
            await reader.catch_up()
            await asyncio.sleep(rng.random() * 0.003)
        await reader.catch_up()

    writers = [asyncio.create_task(writer(store, random.Random(rng.random()), 12))
               for _ in range(16)]
    followers = [asyncio.create_task(follow(r)) for r in readers]
    try:
        await asyncio.wait_for(asyncio.gather(*writers), 120)
        done.set()
        await asyncio.wait_for(asyncio.gather(*followers), WAIT_S)
    finally:
        for task in writers + followers:
            task.cancel()

    for reader in readers:
        logged = await logged_seqs(store, reader.types)
        assert len(logged) > 16
        assert reader.seen == logged
