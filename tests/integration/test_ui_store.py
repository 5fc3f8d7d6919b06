"""The web UI's store queries and sessions (store/ui_sql.py), on SQLite and PostgreSQL: each
Jobs-page filter, newest-first keyset paging, capped counts, log ends, events by subject, and
sessions that end with their token. Each filter is checked to use an index on SQLite (EXPLAIN
QUERY PLAN never scans the whole jobs table) and on PostgreSQL (with sequential scans off,
the plan names an index)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from bridgehead.domain.clusters import Role
from bridgehead.domain.jobs import JobSpec, JobState, Transition
from bridgehead.errors import AuthError
from bridgehead.store import JobStore, LogChunk
from bridgehead.store.ui_sql import JobQuery, UiStore


def spec(name: str, **kw: Any) -> JobSpec:
    return JobSpec(cluster=kw.pop("cluster", "c1"), command=("/bin/true",), name=name, **kw)


@pytest.fixture
def ui(store: JobStore) -> UiStore:
    return cast(UiStore, store)


async def ids(ui: UiStore, q: JobQuery, **kw: Any) -> list[str]:
    return [j.id for j in await ui.query_jobs(q, limit=100, **kw)]


async def test_each_filter_newest_first(ui: UiStore) -> None:
    made = [r.job.id for r in await ui.submit([
        spec("etl-daily", labels={"team": "red"}),
        spec("etl-hourly", cluster="c2", tenant="t2"),
        spec("report", labels={"team": "blue"}),
        spec("etl", labels={"team": "red", "tier": "gold"})])]
    newest_first = made[::-1]
    assert await ids(ui, JobQuery()) == newest_first
    assert await ids(ui, JobQuery(cluster="c2")) == [made[1]]
    assert await ids(ui, JobQuery(tenant="t2")) == [made[1]]
    assert await ids(ui, JobQuery(labels=(("team", "red"),))) == [made[3], made[0]]
    assert await ids(ui, JobQuery(labels=(("tier", "gold"),))) == [made[3]]
    assert await ids(ui, JobQuery(labels=(("team", "green"),))) == []
    assert await ids(ui, JobQuery(name_prefix="etl")) == [made[3], made[1], made[0]]
    assert await ids(ui, JobQuery(name_prefix="etl-h")) == [made[1]]
    assert await ids(ui, JobQuery(name_prefix="ETL")) == []  # a prefix is case-sensitive
    assert await ids(ui, JobQuery(states=(JobState.QUEUED,), tenant="default")) == [
        made[3], made[2], made[0]]
    page1 = await ids(ui, JobQuery(), )
    assert await ids(ui, JobQuery(), before=page1[1]) == page1[2:]


async def test_time_range_is_by_creation(ui: UiStore) -> None:
    [old] = await ui.submit([spec("old")])
    await asyncio.sleep(0.05)
    middle = time.time()
    [new] = await ui.submit([spec("new")])
    assert await ids(ui, JobQuery(created_from=middle)) == [new.job.id]
    assert await ids(ui, JobQuery(created_to=middle)) == [old.job.id]
    assert await ids(ui, JobQuery(created_from=middle + 3600)) == []


async def test_counts_by_state_ignore_the_state_filter(ui: UiStore) -> None:
    made = await ui.submit([spec("a"), spec("b"), spec("c")])
    await ui.request_cancel(made[0].job.id)
    counts = await ui.count_jobs(JobQuery(states=(JobState.QUEUED,)))
    assert counts.by_state == {"queued": 2, "cancelled": 1}
    assert counts.exact


async def test_log_end_and_subject_events(ui: UiStore) -> None:
    [made] = await ui.submit([spec("logs")])
    job_id = made.job.id
    assert await ui.log_end(job_id, "stdout") == 0
    await ui.append_logs([LogChunk(job_id=job_id, stream="stdout", pos=0, data=b"abc"),
                          LogChunk(job_id=job_id, stream="stdout", pos=3, data=b"defg")])
    assert await ui.log_end(job_id, "stdout") == 7
    assert await ui.log_end(job_id, "stderr") == 0
    [claimed] = await ui.claim("c1", "agent-1", limit=1, lease_s=60)
    await ui.transition([Transition(job_id=job_id, state=JobState.SUBMITTING)],
                        agent_id="agent-1")
    events = await ui.subject_events(f"jobs/{job_id}", limit=10)
    assert [e.data["state"] for e in events] == ["queued", "claimed", "submitting"]
    assert claimed.id == job_id


async def test_sessions_end_with_their_token(ui: UiStore) -> None:
    p, _secret = await ui.create_token(name="web", role=Role.CLIENT, cluster=None, tenant="a")
    cookie, csrf = await ui.create_session(p.token_id, 3600)
    found = await ui.session(cookie)
    assert found.principal == p and found.csrf == csrf
    with pytest.raises(AuthError):
        await ui.session("not-a-session")
    await ui.revoke_token(p.token_id)
    with pytest.raises(AuthError):
        await ui.session(cookie)


async def test_sessions_expire_and_end(ui: UiStore) -> None:
    p, _ = await ui.create_token(name="web", role=Role.ADMIN, cluster=None, tenant=None)
    short, _ = await ui.create_session(p.token_id, 0.01)
    await asyncio.sleep(0.05)
    with pytest.raises(AuthError):
        await ui.session(short)
    cookie, _ = await ui.create_session(p.token_id, 3600)
    await ui.end_session(cookie)
    with pytest.raises(AuthError):
        await ui.session(cookie)


FILTERS = {
    "cluster": JobQuery(cluster="c2"),
    "state": JobQuery(states=(JobState.FAILED,)),
    "tenant": JobQuery(tenant="t2"),
    "label": JobQuery(labels=(("team", "red"),)),
    "name": JobQuery(name_prefix="etl"),
    "time range": JobQuery(created_from=time.time() - 60, created_to=time.time()),
}


@pytest.mark.parametrize("name", list(FILTERS))
async def test_each_filter_uses_an_index(ui: UiStore, store_dsn: str, name: str) -> None:
    await ui.submit([spec(f"etl-{i}", labels={"team": "red"}) for i in range(20)])
    where, params = ui._job_where(FILTERS[name])  # type: ignore[attr-defined]
    sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT 50"
    async with ui._read() as conn:  # type: ignore[attr-defined]
        if store_dsn.startswith("sqlite"):
            plan = " | ".join(str(r["detail"]) for r in await conn.fetch(
                f"EXPLAIN QUERY PLAN {sql}", params))
            assert "SCAN jobs" not in plan.replace("SCAN jobs USING", "USING"), plan
        else:
            await conn.fetch("SET enable_seqscan = off")
            rows = await conn.fetch(f"EXPLAIN {sql}", params)
            await conn.fetch("RESET enable_seqscan")
            plan = " | ".join(str(r["QUERY PLAN"]) for r in rows)
            assert "Seq Scan on jobs" not in plan, plan
