"""What the web UI reads and keeps beyond the API's store: browser sessions and the Jobs page's
queries (newest first, every offered filter on an index; see migration 0005).

A session row holds the hash of the cookie's secret, the token it speaks for and its CSRF
token. Looking one up joins the token, so a revoked token's sessions end at once on every
replica, with no cache to expire.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridgehead.domain.clusters import Principal, Role
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import NOT_STARTED, Job, JobState
from bridgehead.domain.runs import Task
from bridgehead.errors import AuthError
from bridgehead.store.base import JobFilter, JobStore
from bridgehead.store.queries import ACTIVE_COUNTS, COUNTED
from bridgehead.store.runs_sql import task_from_row
from bridgehead.store.schedules_sql import SqlScheduleStore
from bridgehead.store.sql import (
    event_from_row,
    hash_token,
    job_from_row,
)

INSERT_SESSION = """
INSERT INTO ui_sessions (hash, token_id, csrf, created_at, expires_at)
VALUES (:hash, :token_id, :csrf, :now, :expires)
"""
SELECT_SESSION = """
SELECT s.csrf, s.expires_at, t.id, t.name, t.role, t.cluster, t.tenant
FROM ui_sessions s JOIN tokens t ON t.id = s.token_id
WHERE s.hash = :hash AND s.expires_at > :now AND t.revoked_at IS NULL
"""
DELETE_SESSION = "DELETE FROM ui_sessions WHERE hash = :hash"
DELETE_EXPIRED_SESSIONS = "DELETE FROM ui_sessions WHERE expires_at <= :now"
LOG_END = """
SELECT pos, size FROM job_logs WHERE job_id = :id AND stream = :stream ORDER BY pos DESC LIMIT 1
"""
WORKFLOW_NAMES = "SELECT DISTINCT workflow FROM workflow_runs ORDER BY workflow LIMIT 200"
TENANT_WORKFLOW_NAMES = """
SELECT DISTINCT workflow FROM workflow_runs WHERE tenant = :tenant ORDER BY workflow LIMIT 200
"""
SUBJECT_EVENTS = """
SELECT seq, id, type, source, subject, time, data, tenant FROM events
WHERE subject = :subject AND seq > :after ORDER BY seq LIMIT :limit
"""
TENANT_SUBJECT_EVENTS = """
SELECT seq, id, type, source, subject, time, data, tenant FROM events
WHERE subject = :subject AND seq > :after AND tenant = :tenant ORDER BY seq LIMIT :limit
"""
RUN_TALLY = """
SELECT step, state, COUNT(*) AS n, MIN(started_at) AS started, MAX(finished_at) AS finished,
       COUNT(started_at) AS began
FROM workflow_tasks WHERE run_id = :id GROUP BY step, state
"""
RUN_HEAD = """
SELECT * FROM workflow_tasks WHERE run_id = :id AND step = :step ORDER BY idx LIMIT :shown
"""
RUN_FIRST_STARTED = """
SELECT * FROM workflow_tasks WHERE run_id = :id AND started_at IS NOT NULL
ORDER BY started_at, pos LIMIT :shown
"""
RUN_RETRYABLE = """
SELECT * FROM workflow_tasks WHERE run_id = :id AND state IN ('failed', 'skipped', 'cancelled')
ORDER BY pos
"""
TASK_JOBS = """
SELECT id, state AS job_state, exit_code AS job_exit_code, reason AS job_reason,
       started_at AS job_started_at, finished_at AS job_finished_at
FROM jobs WHERE id IN {ids}
"""
COUNT_CAP = 1_000
"""A filter the exact counts cannot answer (label, name prefix, time range) is counted up to
this many jobs on the filter's own index (then "more than 1,000", with those 1,000 by state),
as GitHub and Armada do: an exact count of such a filter is a scan of everything it matches.
Counted per state instead, a rare state read the whole filter's matches (bench/ui.py, 1M
jobs: 1.5-4.6 s a page)."""
CLUSTER_NAMES = "SELECT name FROM clusters ORDER BY name"
SAMPLE_HISTORY = """
INSERT INTO cluster_history (cluster, hour, queued_max, running_max, queued_last, running_last,
                             sampled_at)
VALUES (:cluster, :hour, :queued, :running, :queued, :running, :now)
ON CONFLICT (cluster, hour) DO UPDATE SET
    queued_max = CASE WHEN cluster_history.queued_max > excluded.queued_max
                      THEN cluster_history.queued_max ELSE excluded.queued_max END,
    running_max = CASE WHEN cluster_history.running_max > excluded.running_max
                       THEN cluster_history.running_max ELSE excluded.running_max END,
    queued_last = excluded.queued_last, running_last = excluded.running_last,
    sampled_at = excluded.sampled_at
"""
PRUNE_HISTORY = "DELETE FROM cluster_history WHERE hour < :before"
SELECT_HISTORY = """
SELECT * FROM cluster_history WHERE hour >= :since ORDER BY cluster, hour
"""
HOUR_S = 3600.0
HISTORY_KEPT_S = 2 * 86400.0


def counted_exactly(q: JobQuery) -> bool:
    """Whether the kept counts answer ``q``'s: they are by cluster, tenant and state."""
    return not (q.labels or q.name_prefix or q.created_from is not None
                or q.created_to is not None or q.agent_id or q.parent_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCounts:
    """Jobs of a filter by state: exact (from the counts the store keeps), or COUNT_CAP of
    them by state when more match (``exact`` False: each count and ``total`` is a floor)."""

    by_state: dict[str, int]
    exact: bool

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class HourSample:
    """A cluster's queue (jobs not started) and running jobs in one hour: the highest and the
    latest of the tally's samples."""

    hour: float
    queued_max: int
    running_max: int
    queued_last: int
    running_last: int


JobQuery = JobFilter
"""The Jobs page's filters are the API's (:class:`JobFilter`); each has an index."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """What a run's page shows of its tasks, read without loading them all (a 10,000-wide
    fan-out's page would spend its time making 10,000 tasks it does not show)."""

    tallies: dict[str, dict[str, tuple[int, float | None, float | None]]]
    """Per step, its tasks by state (:data:`bridgehead.domain.runs.Tally`)."""
    head: list[Task]
    """The first ``shown`` tasks of each step, by index."""
    first_started: list[Task]
    """The first ``shown`` tasks that started, by start (the Gantt chart's)."""
    started: int
    """How many tasks started."""
    retryable: list[Task]
    """The failed, skipped and cancelled tasks (those ``retry_tasks`` takes), when asked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: float


class UiStore(JobStore, Protocol):
    async def create_session(self, token_id: str, ttl_s: float) -> tuple[str, str]:
        """A new session of the token: (the cookie's secret, its CSRF token)."""
        ...

    async def session(self, secret: str) -> Session:
        """The live session whose cookie holds ``secret``, or AuthError."""
        ...

    async def end_session(self, secret: str) -> None: ...

    async def query_jobs(self, q: JobQuery, *, limit: int,
                         before: str | None = None) -> list[Job]:
        """Jobs matching ``q``, newest first; ``before`` is the last id of the previous page."""
        ...

    async def count_jobs(self, q: JobQuery) -> JobCounts:
        """Jobs matching ``q`` (its states aside) by state: exact by cluster and tenant,
        else up to COUNT_CAP of them."""
        ...

    async def tally(self, now: float) -> None:
        """Fold the counts' deltas and sample each cluster's queue and running jobs into
        its hour (the tally consumer's pass)."""
        ...

    async def cluster_history(self, *, since: float) -> dict[str, list[HourSample]]:
        """Each cluster's hourly samples from ``since``, oldest first."""
        ...

    async def log_end(self, job_id: str, stream: str) -> int:
        """Where the job's stored log ends (its last chunk's end; 0 for none)."""
        ...

    async def cluster_names(self) -> list[str]:
        """The clusters' names (without ``clusters()``'s count of every active job)."""
        ...

    async def workflow_names(self, *, tenant: str | None) -> list[str]:
        """The workflows that have runs (of ``tenant``, or all), by name."""
        ...

    async def run_view(self, run_id: str, *, shown: int, retryable: bool) -> RunView:
        """The run's tasks as its page shows them (``retryable``: with those a retry
        re-runs)."""
        ...

    async def subject_events(self, subject: str, *, limit: int, after: int = 0,
                             tenant: str | None = None) -> list[Event]:
        """The events about ``subject`` (``jobs/<id>``, ``runs/<id>``) after the cursor
        ``after``, oldest first; with ``tenant``, only that tenant's (events_subject)."""
        ...


class SqlUiStore(SqlScheduleStore):
    """Sessions and the UI's queries over the same connections as the jobs."""

    async def create_session(self, token_id: str, ttl_s: float) -> tuple[str, str]:
        secret, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), time.time()
        async with self._write() as tx:
            await tx.conn.fetch(DELETE_EXPIRED_SESSIONS, {"now": now})
            await tx.conn.executemany(INSERT_SESSION, [{
                "hash": hash_token(secret), "token_id": token_id, "csrf": csrf, "now": now,
                "expires": now + ttl_s}])
        return secret, csrf

    async def session(self, secret: str) -> Session:
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_SESSION,
                                    {"hash": hash_token(secret), "now": time.time()})
        if not rows:
            raise AuthError("no live session: log in again")
        r = rows[0]
        principal = Principal(token_id=r["id"], name=r["name"], role=Role(r["role"]),
                              cluster=r["cluster"], tenant=r["tenant"])
        return Session(principal=principal, csrf=r["csrf"], expires_at=r["expires_at"])

    async def end_session(self, secret: str) -> None:
        async with self._write() as tx:
            await tx.conn.fetch(DELETE_SESSION, {"hash": hash_token(secret)})

    async def query_jobs(self, q: JobQuery, *, limit: int,
                         before: str | None = None) -> list[Job]:
        sql, params = self.query_jobs_sql(q, limit=limit, before=before)
        async with self._read() as conn:
            return [job_from_row(r) for r in await conn.fetch(sql, params)]

    def query_jobs_sql(self, q: JobQuery, *, limit: int,
                       before: str | None = None) -> tuple[str, dict[str, Any]]:
        """The SQL of :meth:`query_jobs` and its parameters (``bench/ui.py`` EXPLAINs it)."""
        where, params = self._job_where(q)
        if before is not None:
            where.append("id < :before")
            params["before"] = before
        params["limit"] = limit
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"
        return sql, params

    async def count_jobs(self, q: JobQuery) -> JobCounts:
        if counted_exactly(q):
            return await self._exact_counts(q)
        sql, params = self.count_jobs_sql(q)
        async with self._read() as conn:
            rows = await conn.fetch(sql, params)
        out: dict[str, int] = {}
        for r in rows[:COUNT_CAP]:
            out[r["state"]] = out.get(r["state"], 0) + 1
        return JobCounts(by_state=out, exact=len(rows) <= COUNT_CAP)

    def count_jobs_sql(self, q: JobQuery) -> tuple[str, dict[str, Any]]:
        """The bounded count's SQL (``bench/ui.py`` EXPLAINs it): the states of any
        COUNT_CAP + 1 matching jobs, in no order, so the filter's own index is read in its own
        order and nothing is sorted (newest first, a common name prefix walked the primary key
        calling ``bridgehead_spec_name`` on each row: 213 ms at 100k jobs against 5)."""
        where, params = self._job_where(q, states=False)
        return f"SELECT state FROM jobs WHERE {' AND '.join(where)} LIMIT {COUNT_CAP + 1}", params

    async def _exact_counts(self, q: JobQuery) -> JobCounts:
        """By cluster and tenant, from the counts kept with the jobs (migration 0011)."""
        where, params = ["1 = 1"], {}
        for column in ("cluster", "tenant"):
            if getattr(q, column) is not None:
                where.append(f"{column} = :{column}")
                params[column] = getattr(q, column)
        sql = (f"SELECT state, CAST(SUM(n) AS BIGINT) AS n FROM {COUNTED} AS c "
               f"WHERE {' AND '.join(where)} GROUP BY state HAVING SUM(n) <> 0")
        async with self._read() as conn:
            rows = await conn.fetch(sql, params)
        return JobCounts(by_state={r["state"]: int(r["n"]) for r in rows}, exact=True)

    async def tally(self, now: float) -> None:
        hour = now // HOUR_S * HOUR_S
        async with self._write() as tx:
            await self._fold_counts(tx.conn)
            names = [r["name"] for r in await tx.conn.fetch(CLUSTER_NAMES)]
            queued = dict.fromkeys(names, 0)
            running = dict.fromkeys(names, 0)
            for r in await tx.conn.fetch(ACTIVE_COUNTS):
                if r["cluster"] not in queued:
                    continue  # jobs for a cluster that never sent a heartbeat
                if r["state"] == JobState.RUNNING.value:
                    running[r["cluster"]] += int(r["n"])
                elif JobState(r["state"]) in NOT_STARTED:
                    queued[r["cluster"]] += int(r["n"])
            await tx.conn.executemany(SAMPLE_HISTORY, [
                {"cluster": c, "hour": hour, "queued": queued[c], "running": running[c],
                 "now": now} for c in names])
            await tx.conn.fetch(PRUNE_HISTORY, {"before": hour - HISTORY_KEPT_S})

    async def _fold_counts(self, conn: Any) -> None:
        """Fold the deltas into the counts: PostgreSQL's; SQLite's triggers keep the counts
        in place."""

    async def cluster_history(self, *, since: float) -> dict[str, list[HourSample]]:
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_HISTORY, {"since": since})
        out: dict[str, list[HourSample]] = {}
        for r in rows:
            out.setdefault(r["cluster"], []).append(HourSample(
                hour=r["hour"], queued_max=int(r["queued_max"]),
                running_max=int(r["running_max"]), queued_last=int(r["queued_last"]),
                running_last=int(r["running_last"])))
        return out

    async def log_end(self, job_id: str, stream: str) -> int:
        async with self._read() as conn:
            rows = await conn.fetch(LOG_END, {"id": job_id, "stream": stream})
        return int(rows[0]["pos"]) + int(rows[0]["size"]) if rows else 0

    async def run_view(self, run_id: str, *, shown: int, retryable: bool) -> RunView:
        params = {"id": run_id, "shown": shown}
        tallies: dict[str, dict[str, tuple[int, float | None, float | None]]] = {}
        async with self._read() as conn:
            counted = await conn.fetch(RUN_TALLY, params)
            head = [r for step in sorted({r["step"] for r in counted})  # on the primary key
                    for r in await conn.fetch(RUN_HEAD, {**params, "step": step})]
            first = await conn.fetch(RUN_FIRST_STARTED, params)
            again = await conn.fetch(RUN_RETRYABLE, params) if retryable else []
            # The tasks' jobs by id, after the tasks: joined in one query, the planner (which
            # cannot tell how few tasks a LIMIT leaves) hashed the whole jobs table.
            head_rows, started, failed = await self._with_jobs(conn, head, first, again)
        for r in counted:
            tallies.setdefault(r["step"], {})[r["state"]] = (int(r["n"]), r["started"],
                                                              r["finished"])
        return RunView(tallies=tallies, head=[task_from_row(r) for r in head_rows],
                       first_started=[task_from_row(r) for r in started],
                       started=sum(int(r["began"]) for r in counted),
                       retryable=[task_from_row(r) for r in failed])

    async def _with_jobs(self, conn: Any, *parts: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """Each task row with its job's state, exit code, reason and times (as SELECT_TASKS
        gives them)."""
        ids = sorted({r["job_id"] for part in parts for r in part if r["job_id"]})
        jobs = {}
        if ids:
            sql = TASK_JOBS.format(ids=self._ids_sql("ids"))
            jobs = {r["id"]: r for r in await conn.fetch(sql, {"ids": self._ids_value(ids)})}
        return [[{**dict(r), **{k: v for k, v in dict(jobs.get(r["job_id"], {})).items()
                                if k != "id"}} for r in part] for part in parts]

    async def cluster_names(self) -> list[str]:
        async with self._read() as conn:
            return [r["name"] for r in await conn.fetch(CLUSTER_NAMES)]

    async def workflow_names(self, *, tenant: str | None) -> list[str]:
        sql = WORKFLOW_NAMES if tenant is None else TENANT_WORKFLOW_NAMES
        async with self._read() as conn:
            rows = await conn.fetch(sql, {"tenant": tenant})
        return [r["workflow"] for r in rows]

    async def subject_events(self, subject: str, *, limit: int, after: int = 0,
                             tenant: str | None = None) -> list[Event]:
        sql = SUBJECT_EVENTS if tenant is None else TENANT_SUBJECT_EVENTS
        params = {"subject": subject, "limit": limit, "after": after, "tenant": tenant}
        async with self._read() as conn:
            rows = await conn.fetch(sql, params)
        return [event_from_row(r) for r in rows]

