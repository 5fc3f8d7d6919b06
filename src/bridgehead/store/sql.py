"""The store logic shared by SQLite and PostgreSQL: named SQL, row mapping, CAS writes.

A dialect subclass supplies connections (``_write``/``_read``), how a list of ids is bound,
the claim statement, the batch transition and how notifications leave a transaction.
SQL lives here and in the dialect modules only, as named constants with ``:name`` parameters.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, replace
from typing import Any, Protocol

from bridgehead.domain.clusters import Cluster, Principal, Role
from bridgehead.domain.costs import AttemptRecord
from bridgehead.domain.events import Event, job_event
from bridgehead.domain.jobs import (
    LOST_ATTEMPT_STATES,
    Job,
    JobSpec,
    JobState,
    Transition,
    Usage,
    array_indices,
    lost_marker,
    new_job_id,
    predecessors,
    requeue_lost,
)
from bridgehead.errors import AuthError, Conflict, InvalidSpec, NotFound
from bridgehead.store import queries as q
from bridgehead.store.base import ClusterStats, JobFilter, LogChunk, Submitted
from bridgehead.store.hub import ChangeHub

logger = logging.getLogger(__name__)
LOG_STREAMS = ("stdout", "stderr")

Row = Mapping[str, Any]


class Conn(Protocol):
    """One connection inside a transaction (or a read)."""

    async def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]: ...

    async def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None: ...


class WriteTx(Protocol):
    @property
    def conn(self) -> Conn: ...

    def notify(self, *keys: str) -> None:
        """Publish ``keys`` once the transaction has committed."""
        ...


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class Tx:
    """A write transaction's connection and the change keys to publish once it commits."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.keys: set[str] = set()

    def notify(self, *keys: str) -> None:
        self.keys.update(keys)


def job_from_row(row: Row) -> Job:
    usage = _loads(row["usage"])
    return Job(
        id=row["id"],
        spec=JobSpec.from_stored(_loads(row["spec"])),
        state=JobState(row["state"]),
        version=row["version"],
        attempt=row["attempt"],
        native_id=row["native_id"],
        exit_code=row["exit_code"],
        reason=row["reason"],
        agent_id=row["agent_id"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
        usage=Usage(**usage) if usage else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        parent_id=row["parent_id"],
        array_index=row["array_index"],
        elements=row["elements"],
        log_base=_loads(row["log_base"]) or None,
    )


def attempt_row(job: Job, *, state: JobState | None = None,
                ended_at: float | None = None) -> dict[str, Any] | None:
    """The cost ledger's row of ``job``'s current attempt once it ended (as ``state`` at
    ``ended_at`` when given, else as the job ended); None for an attempt that never started
    and for an array parent (its elements are the jobs that ran)."""
    end = ended_at if ended_at is not None else job.finished_at
    if job.started_at is None or end is None or job.elements is not None:
        return None
    res, usage = job.spec.resources, job.usage
    return {"job_id": job.id, "attempt": job.attempt, "cluster": job.cluster,
            "tenant": job.spec.tenant, "state": (state or job.state).value,
            "cores": usage.cores if usage and usage.cores else res.capped_cores,
            "nodes": usage.nodes if usage and usage.nodes else res.capped_nodes,
            "memory_mb": res.memory_mb, "gpus": res.gpus or 0,
            "started_at": job.started_at, "ended_at": max(end, job.started_at),
            "usage": json.dumps(asdict(usage)) if usage else None}


def measured_elapsed(usage: dict[str, Any]) -> float | None:
    """An attempt's run time as its scheduler accounted it, or None: not measured (no usage,
    0 for unknown) or apportioned from a shared resource (EMR's estimates)."""
    elapsed = usage.get("elapsed_s")
    if usage.get("estimated") or not isinstance(elapsed, int | float) or elapsed <= 0:
        return None
    return float(elapsed)


def event_row(event: Event, at: float | None = None) -> dict[str, Any]:
    """The insert row of ``event``; ``at`` is its time when the event has none."""
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time or at,
        "data": json.dumps(event.data),
        "tenant": event.tenant,
    }


def event_from_row(row: Row) -> Event:
    return Event(
        seq=row["seq"],
        id=row["id"],
        type=row["type"],
        source=row["source"],
        subject=row["subject"],
        time=row["time"],
        data=json.loads(row["data"]),
        tenant=row["tenant"],
    )


def transition_row(t: Transition, now: float) -> dict[str, Any]:
    return {
        "id": t.job_id,
        "state": t.state.value,
        "native_id": t.native_id,
        "exit_code": t.exit_code,
        "reason": t.reason,
        "usage": json.dumps(asdict(t.usage)) if t.usage else None,
        "at": t.at if t.at is not None else now,
    }


def _principal(row: Row) -> Principal:
    return Principal(
        token_id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        cluster=row["cluster"],
        tenant=row["tenant"],
    )


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def job_event_rows(jobs: Sequence[Job], now: float) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        event = job_event(
            job.id, job.cluster, job.state, exit_code=job.exit_code, reason=job.reason,
            native_id=job.native_id, attempt=job.attempt, name=job.spec.name,
            labels=job.spec.labels, tenant=job.spec.tenant,
        )
        rows.append(event_row(event, now))
    return rows


def job_rows(jobs: Sequence[tuple[str, JobSpec]],
             now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Insert rows (``q.INSERT_JOB``) of new jobs ``(id, spec)`` and of their ``queued``
    events (``q.INSERT_EVENT``)."""
    rows, events = [], []
    for job_id, spec in jobs:
        rows.append({"id": job_id, "cluster": spec.cluster, "tenant": spec.tenant,
                     "idempotency_key": spec.idempotency_key,
                     "spec": json.dumps(spec.to_dict()), "now": now, "parent_id": None,
                     "array_index": None, "elements": array_size(spec)})
        events.append(event_row(job_event(job_id, spec.cluster, JobState.QUEUED, attempt=1,
                                          name=spec.name, labels=spec.labels,
                                          tenant=spec.tenant), now))
    return rows, events


class SqlJobStore(abc.ABC):
    """Shared logic; see the module docstring for what a dialect adds."""

    def __init__(self) -> None:
        self.hub = ChangeHub()

    # -- dialect hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def _write(self) -> AbstractAsyncContextManager[WriteTx]: ...

    @abc.abstractmethod
    def _read(self) -> AbstractAsyncContextManager[Conn]: ...

    @abc.abstractmethod
    def _ids_sql(self, param: str) -> str:
        """An SQL expression usable as ``x IN <expr>`` for the id list bound to ``param``."""

    @abc.abstractmethod
    def _ids_value(self, ids: Sequence[str]) -> Any: ...

    def _name_range_sql(self) -> str:
        """An SQL condition: the job's name is >= :name_lo and < :name_hi (a prefix as a
        range, on the index jobs_name of migration 0005)."""
        return ("json_extract(spec, '$.name') >= :name_lo "
                "AND json_extract(spec, '$.name') < :name_hi")

    @abc.abstractmethod
    async def _claim(self, conn: Conn, params: dict[str, Any]) -> list[Row]: ...

    @abc.abstractmethod
    async def _apply_round(
        self, conn: Conn, rows: list[dict[str, Any]], agent_id: str | None, now: float
    ) -> list[Row]:
        """Apply transitions of distinct jobs in one statement; the rows that changed."""

    async def _apply(
        self, conn: Conn, rows: list[dict[str, Any]], agent_id: str | None, now: float
    ) -> list[Row | None]:
        out: list[Row | None] = [None] * len(rows)
        for batch in _rounds(rows):
            changed = await self._apply_round(conn, [rows[i] for i in batch], agent_id, now)
            by_id = {r["id"]: r for r in changed}
            for i in batch:
                out[i] = by_id.get(rows[i]["id"])
        return out

    @abc.abstractmethod
    async def _lock_events(self, conn: Conn) -> None:
        """Make this transaction the only event writer until it ends: taken right before
        its first insert into ``events``, so sequence order is commit order."""

    async def _insert_elements(self, tx: WriteTx, jobs: Sequence[tuple[str, JobSpec]],
                               now: float) -> list[Job]:
        """Insert the elements of the new array jobs among ``jobs`` (id, spec), made in
        ``tx`` (arrays_sql.py)."""
        return []

    async def _follow(self, tx: WriteTx, changed: Sequence[Job], now: float) -> list[Job]:
        """The jobs changed because ``changed`` did: an array's elements follow their
        parent, a parent its elements (arrays_sql.py)."""
        return []

    async def _insert_events(self, tx: WriteTx, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log ``rows`` (:func:`event_row`) in ``tx``, after :meth:`_lock_events`. It must be
        the transaction's last write: the lock is held to the commit, and a writer that took
        it and then waited on a row lock could deadlock with one that holds the row and
        waits on the lock (reads after it are fine)."""
        if rows:
            await self._lock_events(tx.conn)
            await tx.conn.executemany(q.INSERT_EVENT, rows)
            tx.notify("events")

    # -- jobs ------------------------------------------------------------------------------
    async def submit(self, specs: Sequence[JobSpec]) -> list[Submitted]:
        now = time.time()
        rows, _ = job_rows([(new_job_id(), s) for s in specs], now)
        out: list[Submitted] = []
        async with self._write() as tx:
            await tx.conn.executemany(q.INSERT_JOB, rows)
            for spec, row in zip(specs, rows, strict=True):
                if spec.idempotency_key is None:
                    out.append(Submitted(job=_new_job(row["id"], spec, now), created=True))
                    continue
                found = await tx.conn.fetch(
                    q.SELECT_BY_KEY, {"tenant": spec.tenant, "key": spec.idempotency_key}
                )
                job = job_from_row(found[0])
                if job.id != row["id"] and not job.spec.same_request(spec):
                    raise Conflict(  # rolls the whole batch back
                        f"idempotency key {spec.idempotency_key!r} is taken by job {job.id}, "
                        "submitted with a different body: use a new key for a different job")
                out.append(Submitted(job=job, created=job.id == row["id"]))
            created = [s.job for s in out if s.created]
            tx.notify(*{f"cluster:{j.cluster}" for j in created})
            created += await self._insert_elements(tx, [(j.id, j.spec) for j in created], now)
            await self._insert_events(tx, job_event_rows(created, now))
        return out

    async def get(self, job_id: str) -> Job:
        async with self._read() as conn:
            rows = await conn.fetch(q.SELECT_JOB, {"id": job_id})
        if not rows:
            raise NotFound(f"job {job_id} not found")
        return job_from_row(rows[0])

    async def list_jobs(
        self, flt: JobFilter, *, limit: int = 100, after: str | None = None
    ) -> list[Job]:
        where, params = self._job_where(flt)
        params["limit"] = limit
        if after is not None:
            where.append("id > :after")
            params["after"] = after
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id LIMIT :limit"
        async with self._read() as conn:
            return [job_from_row(r) for r in await conn.fetch(sql, params)]

    def _job_where(self, flt: JobFilter, *,
                   states: bool = True) -> tuple[list[str], dict[str, Any]]:
        """The conditions on ``jobs`` of ``flt`` (its states only with ``states``), each on
        an index (migration 0005: labels in ``job_labels``, name prefix as a range, a time
        range as a range of ids), and their parameters."""
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {}
        for column in ("cluster", "tenant", "agent_id", "parent_id"):
            if getattr(flt, column) is not None:
                where.append(f"{column} = :{column}")
                params[column] = getattr(flt, column)
        if states and len(flt.states) == 1:  # jobs_state gives it in id order
            where.append("state = :state")
            params["state"] = flt.states[0].value
        elif states and flt.states:
            where.append(f"state IN {self._ids_sql('states')}")
            params["states"] = self._ids_value([s.value for s in flt.states])
        for i, (key, value) in enumerate(flt.labels):
            where.append(f"id IN (SELECT job_id FROM job_labels WHERE key = :lk{i} "
                         f"AND value = :lv{i})")
            params[f"lk{i}"], params[f"lv{i}"] = key, value
        if flt.name_prefix:
            where.append(self._name_range_sql())
            params["name_lo"], params["name_hi"] = name_range(flt.name_prefix)
        if flt.created_from is not None:
            where.append("id >= :id_from")
            params["id_from"] = job_id_at(flt.created_from)
        if flt.created_to is not None:
            where.append("id < :id_to")
            params["id_to"] = job_id_at(flt.created_to)
        return where, params

    async def clusters_of(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Each known job id's cluster (authorization of agent reports)."""
        sql = f"SELECT id, cluster FROM jobs WHERE id IN {self._ids_sql('ids')}"
        async with self._read() as conn:
            rows = await conn.fetch(sql, {"ids": self._ids_value(list(set(job_ids)))})
        return {r["id"]: r["cluster"] for r in rows}

    async def claim(
        self, cluster: str, agent_id: str, *, limit: int, lease_s: float
    ) -> list[Job]:
        if limit <= 0:
            return []
        now = time.time()
        params = {
            "cluster": cluster, "agent": agent_id, "limit": limit,
            "now": now, "lease": now + lease_s,
        }
        async with self._write() as tx:
            jobs = sorted((job_from_row(r) for r in await self._claim(tx.conn, params)),
                          key=lambda j: j.id)
            if jobs:
                tx.notify(*(f"job:{j.id}" for j in jobs))
                await self._insert_events(tx, job_event_rows(jobs, now))
        return jobs

    async def adopt(self, cluster: str, agent_id: str, *, lease_s: float) -> list[Job]:
        now = time.time()
        params = {"cluster": cluster, "agent": agent_id, "now": now, "lease": now + lease_s}
        async with self._write() as tx:
            rows = await tx.conn.fetch(q.ADOPT, params)
        return sorted((job_from_row(r) for r in rows), key=lambda j: j.id)

    async def transition(
        self, transitions: Sequence[Transition], *, agent_id: str | None = None,
        max_lost_attempts: int = 0,
    ) -> list[Job | None]:
        if not transitions:
            return []
        now = time.time()
        async with self._write() as tx:
            jobs, events = await self._transition_in(tx, transitions, agent_id,
                                                     max_lost_attempts, now)
            await self._insert_events(tx, events)
        return jobs

    async def _transition_in(self, tx: WriteTx, transitions: Sequence[Transition],
                             agent_id: str | None, max_lost_attempts: int, now: float
                             ) -> tuple[list[Job | None], list[dict[str, Any]]]:
        """:meth:`transition` inside ``tx``: the jobs, and the event rows to log last."""
        rows = [transition_row(t, now) for t in transitions]
        requeued = await self._requeue_lost(tx, transitions, rows, agent_id,
                                            max_lost_attempts, now)
        rest = [i for i in range(len(rows)) if i not in requeued]
        applied: list[Row | None] = [requeued.get(i) for i in range(len(rows))]
        for i, row in zip(rest, await self._apply(tx.conn, [rows[i] for i in rest],
                                                  agent_id, now), strict=True):
            applied[i] = row
        jobs = [job_from_row(r) if r is not None else None for r in applied]
        changed = [j for j in jobs if j is not None]
        changed += await self._follow(tx, changed, now)
        await tx.conn.executemany(q.INSERT_ATTEMPT, [
            r for j in changed if j.terminal and (r := attempt_row(j)) is not None])
        tx.notify(*(f"job:{j.id}" for j in changed))
        tx.notify(*{f"cluster:{j.cluster}" for j in changed if j.state is JobState.QUEUED})
        return jobs, job_event_rows(changed, now)

    async def _requeue_lost(self, tx: WriteTx, transitions: Sequence[Transition],
                            rows: list[dict[str, Any]], agent_id: str | None, cap: int,
                            now: float) -> dict[int, Row]:
        """Queue again, for a new attempt, the jobs whose report says the infrastructure lost
        their attempt (:func:`requeue_lost`): {index in ``transitions``: the job's new row}.
        Each stream's log goes on after the lost attempt's bytes and a marker line. A lost
        attempt past the cap ends LOST as reported, its reason saying why no attempt
        follows (``rows`` is edited)."""
        out: dict[int, Row] = {}
        for i, t in enumerate(transitions):
            if t.state is not JobState.LOST or not t.infrastructure:
                continue
            found = await tx.conn.fetch(q.SELECT_JOB, {"id": t.job_id})
            job = job_from_row(found[0]) if found else None
            if job is None or (agent_id is not None and job.agent_id != agent_id):
                continue
            if not requeue_lost(job, t, cap):
                if job.attempt > cap and job.state in LOST_ATTEMPT_STATES:
                    rows[i]["reason"] = (f"{t.reason or 'lost'} (no new attempt: {job.attempt} "
                                         f"attempts lost, [server] max_lost_attempts is {cap})")
                continue
            ends = {r["stream"]: r["end_pos"] or 0
                    for r in await tx.conn.fetch(q.LOG_ENDS, {"id": job.id})}
            marker = lost_marker(job.attempt, t.reason)
            base = {s: ends.get(s, 0) + len(marker) for s in LOG_STREAMS}
            changed = await tx.conn.fetch(q.REQUEUE_LOST, {
                "id": job.id, "version": job.version, "now": now,
                "log_base": json.dumps(base),
                "reason": (f"attempt {job.attempt} lost: {t.reason or 'lost'}; "
                           f"queued for attempt {job.attempt + 1}")})
            if not changed:  # another writer moved the job first: its report decides
                continue
            out[i] = changed[0]
            await tx.conn.executemany(q.INSERT_LOG, [
                {"job_id": job.id, "stream": s, "pos": ends.get(s, 0), "size": len(marker),
                 "data": marker} for s in LOG_STREAMS])
            tx.notify(f"logs:{job.id}")
            ended = attempt_row(job, state=JobState.LOST,
                                ended_at=t.at if t.at is not None else now)
            if ended is not None:
                await tx.conn.executemany(q.INSERT_ATTEMPT, [ended])
            logger.info("job %s: attempt %d lost to the infrastructure (%s); queued again "
                        "for attempt %d", job.id, job.attempt, t.reason, job.attempt + 1)
        return out

    async def attempts(self, *, since: float, until: float,
                       tenant: str | None = None) -> list[AttemptRecord]:
        args = {"since": since, "until": until, "tenant": tenant or ""}
        async with self._read() as conn:
            rows = await conn.fetch(q.SELECT_ATTEMPTS, args)
            on_nodes = await conn.fetch(q.SELECT_ATTEMPT_POOLS, args)
        pools: dict[tuple[str, int], list[str]] = {}
        for r in on_nodes:
            pools.setdefault((r["job_id"], int(r["attempt"])), []).append(r["pool"])
        out = []
        for r in rows:
            usage = _loads(r["usage"]) or {}
            out.append(AttemptRecord(
                job_id=r["job_id"], attempt=r["attempt"], cluster=r["cluster"],
                tenant=r["tenant"], state=r["state"], cores=r["cores"], nodes=r["nodes"],
                gpus=r["gpus"], started_at=r["started_at"], ended_at=r["ended_at"],
                labels=(_loads(r["spec"]) or {}).get("labels") or {},
                instance_hours=usage.get("instance_hours"), elapsed_s=measured_elapsed(usage),
                pools=tuple(pools.get((r["job_id"], int(r["attempt"])), ()))))
        return out

    async def request_cancel(self, job_id: str) -> Job:
        now = time.time()
        async with self._write() as tx:
            rows = await tx.conn.fetch(q.CANCEL_NOW, {"id": job_id, "now": now})
            if rows:
                job = job_from_row(rows[0])
                changed = [job, *await self._follow(tx, [job], now)]
                tx.notify(*(f"job:{j.id}" for j in changed))
                await self._insert_events(tx, job_event_rows(changed, now))
                return job
            rows = await tx.conn.fetch(q.FLAG_CANCEL, {"id": job_id, "now": now})
            if rows:
                job = job_from_row(rows[0])
                tx.notify(f"job:{job.id}", f"cluster:{job.cluster}", f"agent:{job.agent_id}")
                return job
        return await self.get(job_id)

    async def cancel_requested(self, cluster: str, agent_id: str) -> list[Job]:
        async with self._read() as conn:
            rows = await conn.fetch(q.SELECT_CANCEL_REQUESTED,
                                    {"agent": agent_id, "cluster": cluster})
        return [job_from_row(r) for r in rows]

    # -- clusters --------------------------------------------------------------------------
    async def heartbeat(
        self,
        cluster: str,
        agent_id: str,
        *,
        backend: str,
        labels: dict[str, str],
        info: dict[str, object],
        lease_s: float,
    ) -> None:
        now = time.time()
        async with self._write() as tx:
            await tx.conn.executemany(q.UPSERT_CLUSTER, [{
                "name": cluster, "backend": backend, "labels": json.dumps(labels),
                "agent": agent_id, "now": now, "info": json.dumps(info),
            }])
            await tx.conn.executemany(q.RENEW_LEASES, [
                {"agent": agent_id, "cluster": cluster, "lease": now + lease_s}])

    async def clusters(self) -> list[ClusterStats]:
        async with self._read() as conn:
            rows = await conn.fetch(q.SELECT_CLUSTERS)
            count_rows = await conn.fetch(q.ACTIVE_COUNTS)
        counts: dict[str, dict[str, int]] = {}
        for r in count_rows:
            counts.setdefault(r["cluster"], {})[r["state"]] = r["n"]
        return [
            ClusterStats(
                cluster=Cluster(
                    name=r["name"], backend=r["backend"], labels=_loads(r["labels"]),
                    agent_id=r["agent_id"], last_heartbeat=r["last_heartbeat"],
                    info=_loads(r["info"]),
                ),
                counts=counts.get(r["name"], {}),
            )
            for r in rows
        ]

    async def counts(self) -> dict[tuple[str, str], int]:
        async with self._read() as conn:
            rows = await conn.fetch(q.ACTIVE_COUNTS)
        return {(r["cluster"], r["state"]): r["n"] for r in rows}

    # -- logs and events -------------------------------------------------------------------
    async def append_logs(self, chunks: Sequence[LogChunk]) -> None:
        if not chunks:
            return
        rows = [
            {"job_id": c.job_id, "stream": c.stream, "pos": c.pos, "size": len(c.data),
             "data": c.data}
            for c in chunks
        ]
        async with self._write() as tx:
            await tx.conn.executemany(q.INSERT_LOG, rows)
            tx.notify(*{f"logs:{c.job_id}" for c in chunks})

    async def read_logs(self, job_id: str, stream: str, offset: int, limit: int) -> bytes:
        start, data = await self.read_log_span(job_id, stream, offset, limit)
        return data if start == offset else b""

    async def read_log_span(self, job_id: str, stream: str, offset: int,
                            limit: int) -> tuple[int, bytes]:
        params = {"id": job_id, "stream": stream, "offset": offset}
        async with self._read() as conn:
            rows = await conn.fetch(q.SELECT_LOGS, params)
        at = max(offset, rows[0]["pos"]) if rows else offset  # past a gap at the offset
        out, start = bytearray(), at
        for row in rows:
            if row["pos"] > at or len(out) >= limit:
                break  # the next gap, or enough
            data = bytes(row["data"])
            out += data[at - row["pos"]:]
            at = row["pos"] + len(data)
        return start, bytes(out[:limit])

    async def events(self, *, after: int, limit: int,
                     tenant: str | None = None) -> list[Event]:
        query, params = q.SELECT_EVENTS, {"after": after, "limit": limit, "tenant": tenant}
        if tenant is not None:
            query = q.SELECT_TENANT_EVENTS
        async with self._read() as conn:
            rows = await conn.fetch(query, params)
        return [event_from_row(r) for r in rows]

    async def append_events(self, events: Sequence[Event], *,
                            wake: Sequence[str] = ()) -> list[tuple[Event, bool]]:
        """Log external events; one whose (source, id) is logged already is returned as
        logged, with False. ``wake``: more change keys to publish on commit."""
        now = time.time()
        out = []
        async with self._write() as tx:
            if events:
                await self._lock_events(tx.conn)  # the inserts below are the last writes
            for event in events:
                row = event_row(event, now)
                found = await tx.conn.fetch(q.INSERT_EXTERNAL_EVENT, row)
                if found:
                    out.append((replace(event, time=found[0]["time"], seq=found[0]["seq"]), True))
                    continue
                same = await tx.conn.fetch(q.SELECT_EVENT_BY_ID, {
                    "tenant": event.tenant, "source": event.source, "id": event.id})
                out.append((event_from_row(same[0]), False))
            tx.notify("events", *wake)
        return out

    # -- tokens ----------------------------------------------------------------------------
    async def create_token(
        self, *, name: str, role: Role, cluster: str | None, tenant: str | None
    ) -> tuple[Principal, str]:
        if role is Role.AGENT and not cluster:
            raise InvalidSpec("an agent token needs a cluster")
        secret = "bh_" + secrets.token_urlsafe(32)
        principal = Principal(
            token_id=secrets.token_hex(8), name=name, role=role, cluster=cluster, tenant=tenant
        )
        async with self._write() as tx:
            await tx.conn.executemany(q.INSERT_TOKEN, [{
                "id": principal.token_id, "name": name, "hash": hash_token(secret),
                "role": role.value, "cluster": cluster, "tenant": tenant, "now": time.time(),
            }])
        return principal, secret

    async def authenticate(self, secret: str) -> Principal:
        async with self._read() as conn:
            rows = await conn.fetch(q.SELECT_TOKEN, {"hash": hash_token(secret)})
        if not rows:
            raise AuthError("unknown or revoked token")
        return _principal(rows[0])

    async def list_tokens(self) -> list[Principal]:
        async with self._read() as conn:
            return [_principal(r) for r in await conn.fetch(q.SELECT_TOKENS)]

    async def revoke_token(self, token_id: str) -> None:
        async with self._write() as tx:
            rows = await tx.conn.fetch(q.REVOKE_TOKEN, {"id": token_id, "now": time.time()})
        if not rows:
            raise NotFound(f"token {token_id} not found")


def job_id_at(seconds: float) -> str:
    """The smallest job id made at ``seconds`` (ids begin with their millisecond in hex):
    a time range of creation is a range of ids, on the primary key."""
    return f"{max(0, int(seconds * 1000)):012x}"


def name_range(prefix: str) -> tuple[str, str]:
    """The names starting with ``prefix`` as a half-open range of strings."""
    return prefix, prefix + "\U0010ffff"


def _rounds(rows: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Split row indexes into rounds in which each job id appears once, keeping order."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        r = seen.get(row["id"], -1) + 1
        seen[row["id"]] = r
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(i)
    return rounds


_EXPECTED = {s.value: sorted(p.value for p in predecessors(s)) for s in JobState}


def expected_states(state: str) -> list[str]:
    """The states a transition to ``state`` may come from (its CAS guard)."""
    return _EXPECTED[state]


def _new_job(job_id: str, spec: JobSpec, now: float) -> Job:
    return Job(id=job_id, spec=spec, state=JobState.QUEUED, created_at=now, updated_at=now,
               elements=array_size(spec))


def array_size(spec: JobSpec) -> int | None:
    """An array job's number of elements; None for any other job."""
    return None if spec.array is None else len(array_indices(spec.array)[0])


