"""The job counts the store keeps (migration 0011: job_counts, and on PostgreSQL the deltas a
tally folds) are exact: after mixed submits, claims, transitions, cancels, lost attempts
queued again, array elements and deletes, on SQLite and PostgreSQL, they equal a full
COUNT(*) of the jobs table by (cluster, tenant, state); on PostgreSQL also while concurrent
writers and folds run, read in one snapshot. A filter the counts cannot answer (label, name,
time range) is counted up to COUNT_CAP, newest first, and says it is not exact."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from typing import Any, cast

import asyncpg

from bridgehead.domain.jobs import ACTIVE, JobSpec, JobState, Transition
from bridgehead.store import JobStore, create_store
from bridgehead.store.migrations import CREATE_TABLE, _statements, migrations
from bridgehead.store.ui_sql import COUNT_CAP, JobQuery, UiStore

Key = tuple[str, str, str]
TRUTH = "SELECT cluster, tenant, state, COUNT(*) AS n FROM jobs GROUP BY cluster, tenant, state"
KEPT = """SELECT cluster, tenant, state, SUM(n) AS n FROM (
    SELECT cluster, tenant, state, n FROM job_counts
    UNION ALL SELECT cluster, tenant, state, n FROM job_count_deltas) AS c
GROUP BY cluster, tenant, state HAVING SUM(n) <> 0"""


def spec(i: int, **kw: Any) -> JobSpec:
    return JobSpec(cluster=f"c{i % 2}", tenant=f"t{i % 3}", command=("/bin/true",),
                   name=f"job-{i}", **kw)


async def raw(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    if dsn.startswith("sqlite"):
        db = sqlite3.connect(dsn.removeprefix("sqlite:///"))
        db.row_factory = sqlite3.Row
        try:
            rows = [dict(r) for r in db.execute(sql, args).fetchall()]
            db.commit()
            return rows
        finally:
            db.close()
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def by_key(rows: list[dict[str, Any]]) -> dict[Key, int]:
    return {(r["cluster"], r["tenant"], r["state"]): int(r["n"]) for r in rows}


async def check(store: JobStore, dsn: str) -> dict[Key, int]:
    """The store's counts (kept, per filter, active per cluster) against COUNT(*)."""
    truth = by_key(await raw(dsn, TRUTH))
    assert by_key(await raw(dsn, KEPT)) == truth
    ui = cast(UiStore, store)

    def summed(keep: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for (c, t, s), n in truth.items():
            if keep(c, t):
                out[s] = out.get(s, 0) + n
        return out

    everything = await ui.count_jobs(JobQuery())
    assert everything.exact and everything.by_state == summed(lambda c, t: True)
    for cluster in ("c0", "c1"):
        got = await ui.count_jobs(JobQuery(cluster=cluster, states=(JobState.RUNNING,)))
        assert got.by_state == summed(lambda c, t, want=cluster: c == want)
        for tenant in ("t0", "t1", "t2"):
            got = await ui.count_jobs(JobQuery(cluster=cluster, tenant=tenant))
            assert got.by_state == summed(lambda c, t, a=cluster, b=tenant: (c, t) == (a, b))
    active: dict[tuple[str, str], int] = {}
    for (c, _, s), n in truth.items():
        if JobState(s) in ACTIVE:
            active[(c, s)] = active.get((c, s), 0) + n
    assert await store.counts() == active
    return truth


async def workload(store: JobStore, rng: random.Random, rounds: int, agent: str) -> None:
    """Submits, claims and a mix of reports (some refused: a wrong state or agent)."""
    for r in range(rounds):
        await store.submit([spec(rng.randrange(100)) for _ in range(rng.randrange(1, 6))])
        for cluster in ("c0", "c1"):
            claimed = await store.claim(cluster, agent, limit=rng.randrange(0, 4), lease_s=60)
            reports = []
            for job in claimed:
                state = rng.choice([JobState.SUBMITTING, JobState.RUNNING, JobState.FAILED,
                                    JobState.LOST])
                reports.append(Transition(job_id=job.id, state=state, exit_code=1,
                                          infrastructure=state is JobState.LOST))
            await store.transition(reports, agent_id=agent, max_lost_attempts=1)
        if r % 3 == 0:
            listed = await store.list_jobs(JobQuery(), limit=20)
            for job in rng.sample(listed, min(2, len(listed))):
                await store.request_cancel(job.id)


async def test_counts_are_exact_after_mixed_writes(store: JobStore, store_dsn: str) -> None:
    rng = random.Random(7)
    await check(store, store_dsn)  # empty
    await store.submit([spec(i) for i in range(30)] + [spec(99, array="0-9")])
    await check(store, store_dsn)
    await workload(store, rng, 12, "agent-1")
    await check(store, store_dsn)
    await cast(UiStore, store).tally(1_000_000.0)  # folds (PostgreSQL): nothing changes
    before = await check(store, store_dsn)
    assert await raw(store_dsn, "SELECT COUNT(*) AS n FROM job_count_deltas") == [{"n": 0}]
    await raw(store_dsn, "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE "
                         "state = 'failed' ORDER BY id LIMIT 3)")
    await raw(store_dsn, "UPDATE jobs SET cluster = 'c9' WHERE id IN (SELECT id FROM jobs "
                         "WHERE state = 'queued' ORDER BY id LIMIT 2)")
    after = await check(store, store_dsn)
    assert sum(before.values()) - 3 == sum(after.values())
    await workload(store, rng, 6, "agent-2")
    await check(store, store_dsn)


async def test_counts_exact_under_concurrent_writers(pg_database: str) -> None:
    """Four writers (each its own server's store) and two folding tallies at once; a reader
    compares the counts with COUNT(*) in one REPEATABLE READ snapshot, again and again."""
    stores = [create_store(pg_database) for _ in range(4)]
    for s in stores:
        await s.open()
    done = asyncio.Event()
    compared = 0

    async def fold(s: JobStore) -> None:
        while not done.is_set():
            await cast(UiStore, s).tally(1_000_000.0)
            await asyncio.sleep(0.01)

    async def compare() -> None:
        nonlocal compared
        conn = await asyncpg.connect(pg_database)
        try:
            while not done.is_set():
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    kept = by_key([dict(r) for r in await conn.fetch(KEPT)])
                    truth = by_key([dict(r) for r in await conn.fetch(TRUTH)])
                assert kept == truth
                compared += 1
        finally:
            await conn.close()

    async def write(i: int) -> None:
        await workload(stores[i], random.Random(i), 15, f"agent-{i}")

    try:
        folders = [asyncio.create_task(fold(s)) for s in stores[:2]]
        reader = asyncio.create_task(compare())
        await asyncio.gather(*(write(i) for i in range(4)))
        done.set()
        await asyncio.gather(*folders, reader)
        assert compared > 0
        await check(stores[0], pg_database)
        await cast(UiStore, stores[0]).tally(1_000_000.0)
        await check(stores[0], pg_database)
    finally:
        done.set()
        for s in stores:
            await s.close()


async def test_filters_the_counts_cannot_answer_are_bounded(store: JobStore) -> None:
    ui = cast(UiStore, store)
    made = await store.submit([spec(i, labels={"batch": "big"}) for i in range(COUNT_CAP + 5)])
    await store.request_cancel(made[-1].job.id)
    await store.request_cancel(made[0].job.id)
    big = await ui.count_jobs(JobQuery(labels=(("batch", "big"),)))
    assert not big.exact and big.total == COUNT_CAP  # a floor of each state's
    assert big.by_state["queued"] >= COUNT_CAP - 2 and big.by_state.get("cancelled", 0) <= 2
    small = await ui.count_jobs(JobQuery(labels=(("batch", "big"),), name_prefix="job-100"))
    assert small.exact  # job-100 and job-1000 .. job-1004, the newest cancelled
    assert small.by_state == {"queued": 5, "cancelled": 1}
    assert (await ui.count_jobs(JobQuery(name_prefix="nothing"))).by_state == {}


async def test_tally_samples_each_cluster_per_hour(store: JobStore) -> None:
    ui = cast(UiStore, store)
    for c in ("c0", "c1"):
        await store.heartbeat(c, f"agent-{c}", backend="local", labels={}, info={}, lease_s=60)
    await store.submit([spec(0), spec(2), spec(1)])  # c0 x2, c1 x1
    [job] = await store.claim("c0", "a", limit=1, lease_s=60)
    for state in (JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING):
        await store.transition([Transition(job_id=job.id, state=state)], agent_id="a")
    hour = 3600.0 * 500_000
    await ui.tally(hour + 10)
    await store.submit([spec(4), spec(6)])  # c0 queue 3 at the second sample
    await ui.tally(hour + 20)
    await store.transition([Transition(job_id=job.id, state=JobState.SUCCEEDED)],
                           agent_id="a")
    await ui.tally(hour + 3600 + 5)  # the next hour
    got = await ui.cluster_history(since=hour)
    c0 = [(s.hour, s.queued_max, s.running_max, s.queued_last, s.running_last)
          for s in got["c0"]]
    assert c0 == [(hour, 3, 1, 3, 1), (hour + 3600, 3, 0, 3, 0)]
    assert [(s.queued_max, s.running_max) for s in got["c1"]] == [(1, 0), (1, 0)]
    await ui.tally(hour + 3 * 86400)  # older than two days is dropped
    assert [s.hour for s in (await ui.cluster_history(since=0))["c0"]] == [hour + 3 * 86400]


async def test_the_migration_counts_the_jobs_already_stored(store_dsn: str) -> None:
    """A store with jobs from before migration 0011: its counts start from them."""
    rows = [(f"j{i:03d}", f"c{i % 2}", f"t{i % 3}", ("queued", "running", "failed")[i % 3])
            for i in range(40)]
    insert = ("INSERT INTO jobs (id, cluster, tenant, state, spec, created_at, updated_at) "
              "VALUES ({}, '{{}}', 0, 0)")
    if store_dsn.startswith("sqlite"):
        db = sqlite3.connect(store_dsn.removeprefix("sqlite:///"))
        db.execute(CREATE_TABLE)
        for version, name, sql in migrations("sqlite"):
            if version < 11:
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
        db.executemany(insert.format("?, ?, ?, ?"), rows)
        db.commit()
        db.close()
    else:
        conn = await asyncpg.connect(store_dsn)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            await conn.execute(CREATE_TABLE)
            for version, name, sql in migrations("postgres"):
                if version < 11:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, 0)",
                                       version, name)
            await conn.executemany(insert.format("$1, $2, $3, $4"), rows)
        finally:
            await conn.close()
    store = create_store(store_dsn)
    await store.open()  # applies 0011 and later
    try:
        truth = await check(store, store_dsn)
        assert sum(truth.values()) == 40
        await store.submit([spec(1)])
        assert sum((await check(store, store_dsn)).values()) == 41
    finally:
        await store.close()
