"""The store logic shared by SQLite and PostgreSQL: named SQL, row mapping, CAS writes.

A dialect subclass supplies connections (``_write``/``_read``), how a list of ids is bound,
the claim statement, the batch transition and how notifications leave a transaction.
SQL lives here and in the dialect modules only, as named constants with ``:name`` parameters.
"""

from __future__ import annotations

import abc
import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, replace
from typing import Any, Protocol

from bridgehead.domain.clusters import Cluster, Principal, Role
from bridgehead.domain.events import Event, job_event
from bridgehead.domain.jobs import (
    Job,
    JobSpec,
    JobState,
    Transition,
    Usage,
    new_job_id,
    predecessors,
)
from bridgehead.errors import AuthError, Conflict, InvalidSpec, NotFound
from bridgehead.store import queries as q
from bridgehead.store.base import ClusterStats, JobFilter, LogChunk, Submitted
from bridgehead.store.hub import ChangeHub

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
    )


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


def _job_event_rows(jobs: Sequence[Job], now: float) -> list[dict[str, Any]]:
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
                     "spec": json.dumps(spec.to_dict()), "now": now})
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

    @abc.abstractmethod
    def _label_sql(self, key_param: str) -> str:
        """An SQL expression for the value of the label whose name is bound to ``key_param``."""

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
            await self._insert_events(tx, _job_event_rows(created, now))
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
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {"limit": limit}
        for column in ("cluster", "tenant", "agent_id"):
            if getattr(flt, column) is not None:
                where.append(f"{column} = :{column}")
                params[column] = getattr(flt, column)
        if flt.states:
            where.append(f"state IN {self._ids_sql('states')}")
            params["states"] = self._ids_value([s.value for s in flt.states])
        for i, (key, value) in enumerate(flt.labels):
            where.append(f"{self._label_sql(f'lk{i}')} = :lv{i}")
            params[f"lk{i}"], params[f"lv{i}"] = key, value
        if after is not None:
            where.append("id > :after")
            params["after"] = after
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id LIMIT :limit"
        async with self._read() as conn:
            return [job_from_row(r) for r in await conn.fetch(sql, params)]

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
                await self._insert_events(tx, _job_event_rows(jobs, now))
        return jobs

    async def adopt(self, cluster: str, agent_id: str, *, lease_s: float) -> list[Job]:
        now = time.time()
        params = {"cluster": cluster, "agent": agent_id, "now": now, "lease": now + lease_s}
        async with self._write() as tx:
            rows = await tx.conn.fetch(q.ADOPT, params)
        return sorted((job_from_row(r) for r in rows), key=lambda j: j.id)

    async def transition(
        self, transitions: Sequence[Transition], *, agent_id: str | None = None
    ) -> list[Job | None]:
        if not transitions:
            return []
        now = time.time()
        rows = [transition_row(t, now) for t in transitions]
        async with self._write() as tx:
            applied = await self._apply(tx.conn, rows, agent_id, now)
            jobs = [job_from_row(r) if r is not None else None for r in applied]
            changed = [j for j in jobs if j is not None]
            if changed:
                tx.notify(*(f"job:{j.id}" for j in changed))
                tx.notify(*{f"cluster:{j.cluster}" for j in changed if j.state is JobState.QUEUED})
                await self._insert_events(tx, _job_event_rows(changed, now))
        return jobs

    async def request_cancel(self, job_id: str) -> Job:
        now = time.time()
        async with self._write() as tx:
            rows = await tx.conn.fetch(q.CANCEL_NOW, {"id": job_id, "now": now})
            if rows:
                job = job_from_row(rows[0])
                tx.notify(f"job:{job.id}")
                await self._insert_events(tx, _job_event_rows([job], now))
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
        params = {"id": job_id, "stream": stream, "offset": offset}
        async with self._read() as conn:
            rows = await conn.fetch(q.SELECT_LOGS, params)
        out, at = bytearray(), offset
        for row in rows:
            if row["pos"] > at or len(out) >= limit:
                break  # a gap (a chunk not arrived yet) or enough
            data = bytes(row["data"])
            out += data[at - row["pos"]:]
            at = row["pos"] + len(data)
        return bytes(out[:limit])

    async def events(self, *, after: int, limit: int,
                     tenant: str | None = None) -> list[Event]:
        query, params = q.SELECT_EVENTS, {"after": after, "limit": limit, "tenant": tenant}
        if tenant is not None:
            query = q.SELECT_TENANT_EVENTS
        async with self._read() as conn:
            rows = await conn.fetch(query, params)
        return [event_from_row(r) for r in rows]

    async def append_events(self, events: Sequence[Event]) -> list[tuple[Event, bool]]:
        """Log external events; one whose (source, id) is logged already is returned as
        logged, with False."""
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
            tx.notify("events")
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
    return Job(id=job_id, spec=spec, state=JobState.QUEUED, created_at=now, updated_at=now)


