"""Elastic pools in the SQL stores (migration 0008): nodes, their ledger and each pool's
standing.

Every node change is a compare-and-set on the node's ``version`` and writes one ledger row
(node, version, state, prior state, time) and one ``bridgehead.pool.node`` event in the same
transaction; node cost and idle cost are derived from the ledger, never sampled.

Two writers move nodes: an agent's report (:meth:`SqlPoolStore.report_nodes`: reconcile
with what the provider lists, in one transaction with the attempts a lost node takes with
it) and the scaler's pass (:meth:`SqlPoolStore.scale`). A terminate is written only if, in
that transaction, the node's last report had no job and no job is recorded on it: a report
that put a job there in between makes the write a no-op, so a node with a job is never
terminated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bridgehead.domain.events import Event
from bridgehead.domain.jobs import LOST_ATTEMPT_STATES, JobState, Transition
from bridgehead.domain.planner import RATE_WINDOW_S
from bridgehead.domain.pool_reconcile import ProviderNode
from bridgehead.domain.pool_report import Applied, NodeError, Standing, apply_report, fail_pool
from bridgehead.domain.pools import Node, NodeState, Pool
from bridgehead.store.base import JobStore
from bridgehead.store.sql import Conn, Row, WriteTx, event_row
from bridgehead.store.ui_sql import SqlUiStore

NODE_EVENT = "bridgehead.pool.node"
QUARANTINE_EVENT = "bridgehead.pool.quarantined"
LIFTED_EVENT = "bridgehead.pool.lifted"
ENDED_KEPT_S = 3600.0
"""An ended node is looked at in reports this long (one listed again is terminated)."""

SELECT_LIVE = """
SELECT * FROM pool_nodes WHERE cluster = :cluster AND (ended_at IS NULL OR ended_at >= :since)
ORDER BY id"""
SELECT_ALL_LIVE = "SELECT * FROM pool_nodes WHERE ended_at IS NULL ORDER BY id"
SELECT_BILLED = """
SELECT * FROM pool_nodes WHERE provider_id IS NOT NULL AND launched_at IS NOT NULL
AND launched_at < :until AND (ended_at IS NULL OR ended_at >= :since) ORDER BY id
"""
INSERT_NODE = """
INSERT INTO pool_nodes (id, pool, cluster, state, version, since, launched_at, ready_at,
    ended_at, provider_id, adopted, jobs, job_ids, reported_at)
VALUES (:id, :pool, :cluster, :state, :version, :since, :launched_at, :ready_at, :ended_at,
    :provider_id, :adopted, :jobs, :job_ids, :reported_at)
ON CONFLICT (id) DO NOTHING RETURNING id
"""
UPDATE_NODE = """
UPDATE pool_nodes SET state = :state, version = :version, since = :since,
    launched_at = :launched_at, ready_at = :ready_at, ended_at = :ended_at,
    provider_id = :provider_id, jobs = :jobs, job_ids = :job_ids, reported_at = :reported_at
WHERE id = :id AND version = :expected
"""
EMPTY = " AND jobs = 0 AND job_ids = '{}'"
"""The terminate guard: nothing on the node in its last report, no job recorded on it."""
INSERT_LEDGER = """
INSERT INTO pool_node_ledger (node_id, version, pool, state, prior, at)
VALUES (:id, :version, :pool, :state, :prior, :since)
"""
SELECT_NODE = "SELECT state, job_ids, jobs, adopted, reported_at FROM pool_nodes WHERE id = :id"
ENSURE_STANDING = "INSERT INTO pool_state (pool) VALUES (:pool) ON CONFLICT (pool) DO NOTHING"
SELECT_STANDINGS = "SELECT * FROM pool_state ORDER BY pool"
UPSERT_STANDING = """
INSERT INTO pool_state (pool, backoff_until, failures_in_row, quarantined, launches, orphans,
                        short_since)
VALUES (:pool, :backoff_until, :failures_in_row, :quarantined, :launches, :orphans,
        :short_since)
ON CONFLICT (pool) DO UPDATE SET backoff_until = :backoff_until,
    failures_in_row = :failures_in_row, quarantined = :quarantined, launches = :launches,
    orphans = :orphans, short_since = :short_since
"""
SELECT_RUNTIMES = """
SELECT a.started_at, a.ended_at, j.spec FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.state = 'succeeded' AND a.ended_at >= :since AND a.cluster IN {clusters}
ORDER BY a.ended_at DESC LIMIT 5000
"""
SELECT_WAITING = """
SELECT id, cluster, spec, updated_at FROM jobs WHERE cluster IN {clusters} AND state IN {states}
AND elements IS NULL ORDER BY id LIMIT :limit
"""
SELECT_JOB_ATTEMPTS = "SELECT id, attempt, state, cluster FROM jobs WHERE id IN {ids}"
INSERT_ATTEMPT_NODE = """
INSERT INTO attempt_nodes (job_id, attempt, node_id, pool) VALUES (:job_id, :attempt, :node_id,
    :pool) ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredNode:
    node: Node
    cluster: str
    version: int = 0
    """0: not stored yet."""
    jobs: int = 0
    """Jobs on it in its last report."""
    attempts: Mapping[str, int] | None = None
    """The Bridgehead jobs recorded on it, with the attempt each was on."""
    adopted: bool = False
    reported_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting:
    """A job that has not started, as the scaler's demand: what it asks of each node."""

    id: str
    cluster: str
    name: str
    cores: int
    nodes: int
    memory_mb: int
    gpus: int
    walltime_s: int | None
    queued_at: float | None = None
    """When it entered its waiting state (queued, or queued again to retry)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeWrite:
    """One node written by the scaler: ``node`` as it should be (``version`` 0: new)."""

    node: Node
    cluster: str
    version: int = 0
    empty: bool = False
    """Only if the node is still empty (a cordon or terminate): re-checked in the write."""


class PoolStore(JobStore, Protocol):
    async def pool_nodes(self, *, live: bool = True) -> list[StoredNode]:
        """Every node not ended (``live``), by id."""
        ...

    async def billed_nodes(self, *, since: float, until: float) -> list[StoredNode]:
        """The node ledger's nodes billed during [since, until)."""
        ...

    async def pool_standings(self) -> dict[str, Standing]: ...

    async def waiting(self, clusters: Sequence[str], states: Sequence[JobState], *,
                      limit: int) -> list[Waiting]:
        """Up to ``limit`` jobs of ``clusters`` in ``states`` (an array's elements, not its
        parent), oldest first, read lean: only their requests (10k jobs in a pass)."""
        ...

    async def runtimes(self, *, since: float, clusters: Sequence[str]
                       ) -> list[tuple[str, float]]:
        """(job name, run time) of recent successful attempts on ``clusters``, newest
        first (at most 5000): the scaler's runtime estimates."""
        ...

    async def scale(self, writes: Sequence[NodeWrite], pools: Mapping[str, Pool],
                    now: float) -> list[bool]:
        """Write the scaler's node changes, each a compare-and-set (a guarded one also
        re-checks the node is empty); which applied. A new node counts against its pool's
        launch rate, a failed boot that applied against its run of failures (backoff, and
        quarantine with its event), on the standing as it is in the transaction."""
        ...

    async def lift_quarantine(self, pool: str) -> Standing:
        """End ``pool``'s quarantine, backoff and run of failures (an admin's call); logs
        ``bridgehead.pool.lifted``."""
        ...

    async def report_nodes(self, cluster: str, pools: Mapping[str, Pool],
                           listed: Sequence[ProviderNode], errors: Sequence[NodeError], *,
                           orphan_grace_s: float, max_lost_attempts: int) -> Applied:
        """Apply an agent's report of its providers' nodes (see
        :func:`bridgehead.domain.pool_report.apply_report`); a lost node's jobs' attempts are
        lost to the infrastructure, each getting one new attempt (within the cap)."""
        ...


def stored_node(r: Row) -> StoredNode:
    attempts = json.loads(r["job_ids"]) if r["job_ids"] else {}
    node = Node(id=r["id"], pool=r["pool"], state=NodeState(r["state"]), since=r["since"],
                launched_at=r["launched_at"], ready_at=r["ready_at"], ended_at=r["ended_at"],
                provider_id=r["provider_id"], jobs=frozenset(attempts))
    return StoredNode(node=node, cluster=r["cluster"], version=int(r["version"]),
                      jobs=int(r["jobs"]), attempts=attempts, adopted=bool(r["adopted"]),
                      reported_at=r["reported_at"])


def _waiting(r: Row) -> Waiting:
    spec = json.loads(r["spec"]) if isinstance(r["spec"], str) else r["spec"]
    res = spec.get("resources") or {}

    def capped(name: str) -> int:
        value, cap = int(res.get(name) or 1), res.get(f"max_{name}")
        return min(value, int(cap)) if cap else value

    return Waiting(id=r["id"], cluster=r["cluster"], name=str(spec.get("name") or ""),
                   cores=capped("cores"), nodes=capped("nodes"),
                   memory_mb=int(res.get("memory_mb") or 0), gpus=int(res.get("gpus") or 0),
                   walltime_s=res.get("walltime_s"), queued_at=r["updated_at"])


def _node_row(s: StoredNode, version: int) -> dict[str, Any]:
    n = s.node
    return {"id": n.id, "pool": n.pool, "cluster": s.cluster, "state": n.state.value,
            "version": version, "since": n.since, "launched_at": n.launched_at,
            "ready_at": n.ready_at, "ended_at": n.ended_at, "provider_id": n.provider_id,
            "adopted": int(s.adopted), "jobs": s.jobs,
            "job_ids": json.dumps(dict(sorted((s.attempts or {}).items()))),
            "reported_at": s.reported_at, "expected": s.version}


def _standing_row(s: Standing) -> dict[str, Any]:
    return {"pool": s.pool, "backoff_until": s.backoff_until,
            "failures_in_row": s.failures_in_row, "quarantined": int(s.quarantined),
            "launches": json.dumps(list(s.launches)), "orphans": json.dumps(dict(s.orphans)),
            "short_since": s.short_since}


def node_event(n: Node, prior: NodeState | None) -> Event:
    return Event(type=NODE_EVENT, subject=f"pools/{n.pool}/nodes/{n.id}", time=n.since,
                 data={"pool": n.pool, "node": n.id, "state": n.state.value,
                       "from": prior.value if prior is not None else None,
                       "provider_id": n.provider_id},
                 id=f"{n.id}:{n.state.value}:{n.since!r}")


class SqlPoolStore(SqlUiStore):
    """Nodes, the node ledger and pool standings over the same connections as the jobs."""

    _for_update = ""
    """How a write reads the standings it rewrites: locked to its end where writers run
    at once (PostgreSQL: ``FOR UPDATE``; a SQLite writer is alone already), so a report and a
    pass never write over each other's standing."""

    async def pool_nodes(self, *, live: bool = True) -> list[StoredNode]:
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_ALL_LIVE if live else
                                    "SELECT * FROM pool_nodes ORDER BY id")
        return [stored_node(r) for r in rows]

    async def billed_nodes(self, *, since: float, until: float) -> list[StoredNode]:
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_BILLED, {"since": since, "until": until})
        return [stored_node(r) for r in rows]

    async def pool_standings(self) -> dict[str, Standing]:
        async with self._read() as conn:
            return await _standings(conn)

    async def waiting(self, clusters: Sequence[str], states: Sequence[JobState], *,
                      limit: int) -> list[Waiting]:
        sql = SELECT_WAITING.format(clusters=self._ids_sql("clusters"),
                                    states=self._ids_sql("states"))
        async with self._read() as conn:
            rows = await conn.fetch(sql, {"clusters": self._ids_value(list(clusters)),
                                          "states": self._ids_value([s.value for s in states]),
                                          "limit": limit})
        return [_waiting(r) for r in rows]

    async def runtimes(self, *, since: float, clusters: Sequence[str]
                       ) -> list[tuple[str, float]]:
        sql = SELECT_RUNTIMES.format(clusters=self._ids_sql("clusters"))
        async with self._read() as conn:
            rows = await conn.fetch(sql, {"since": since,
                                          "clusters": self._ids_value(list(clusters))})
        out = []
        for r in rows:
            spec = json.loads(r["spec"]) if isinstance(r["spec"], str) else r["spec"]
            name = (spec or {}).get("name")
            if name:
                out.append((str(name), max(0.0, r["ended_at"] - r["started_at"])))
        return out

    async def scale(self, writes: Sequence[NodeWrite], pools: Mapping[str, Pool],
                    now: float) -> list[bool]:
        done: list[bool] = []
        events: list[dict[str, Any]] = []
        async with self._write() as tx:
            standings = await self._lock_standings(tx, pools)
            changed: dict[str, Standing] = {}
            for w in writes:
                ok = await self._put(tx, StoredNode(node=w.node, cluster=w.cluster,
                                                    version=w.version, attempts=None),
                                     w.empty, events)
                done.append(ok)
                name = w.node.pool
                was = changed.get(name) or standings.get(name) or Standing(pool=name)
                if ok and w.node.state is NodeState.REQUESTED:
                    recent = tuple(t for t in was.launches if now - t < RATE_WINDOW_S)
                    changed[name] = replace(was, launches=(*recent, now))
                elif ok and w.node.state is NodeState.FAILED_BOOT and name in pools:
                    changed[name] = fail_pool(pools[name], was, now)
                    if changed[name].quarantined and not was.quarantined:
                        events.append(quarantine_event(changed[name], now))
            await tx.conn.executemany(UPSERT_STANDING, [
                _standing_row(s) for s in changed.values()])
            await self._insert_events(tx, events)
        return done

    async def lift_quarantine(self, pool: str) -> Standing:
        now = time.time()
        async with self._write() as tx:
            standings = await self._lock_standings(tx, [pool])
            was = standings.get(pool, Standing(pool=pool))
            lifted = replace(was, quarantined=False, failures_in_row=0, backoff_until=0.0)
            await tx.conn.executemany(UPSERT_STANDING, [_standing_row(lifted)])
            await self._insert_events(tx, [event_row(Event(
                type=LIFTED_EVENT, subject=f"pools/{pool}", time=now,
                data={"pool": pool, "was_quarantined": was.quarantined,
                      "failures_in_row": was.failures_in_row}), now)])
        return lifted

    async def _lock_standings(self, tx: WriteTx, pools: Iterable[str]) -> dict[str, Standing]:
        """The standings, each pool's row made first so that the lock holds it: a report
        and a pass take this lock before any node row, so they never deadlock."""
        await tx.conn.executemany(ENSURE_STANDING, [{"pool": name} for name in sorted(pools)])
        return await _standings(tx.conn, self._for_update)

    async def _put(self, tx: WriteTx, s: StoredNode, empty: bool, events: list[dict[str, Any]],
                   prior: NodeState | None = None) -> bool:
        """Insert (version 0) or compare-and-set ``s``; a state change gets its ledger row
        and event. ``empty``: only if the stored node is still empty."""
        if s.version:
            sql = UPDATE_NODE + (EMPTY if empty else "") + " RETURNING id"
            old = await tx.conn.fetch(SELECT_NODE, {"id": s.node.id})
            if not old:
                return False
            prior = NodeState(old[0]["state"])
            if s.attempts is None:  # the scaler's write keeps what the reports recorded
                s = replace(s, attempts=json.loads(old[0]["job_ids"] or "{}"),
                            jobs=int(old[0]["jobs"]), adopted=bool(old[0]["adopted"]),
                            reported_at=old[0]["reported_at"])
            done = await tx.conn.fetch(sql, _node_row(s, s.version + 1))
        else:
            done = await tx.conn.fetch(INSERT_NODE, _node_row(s, 1))
        if not done:
            return False
        n = s.node
        if prior is not n.state:
            await tx.conn.executemany(INSERT_LEDGER, [{
                "id": n.id, "version": s.version + 1, "pool": n.pool, "state": n.state.value,
                "prior": prior.value if prior is not None else None, "since": n.since}])
            events.append(event_row(node_event(n, prior), n.since))
        tx.notify(f"pool:{n.pool}")
        return True

    async def report_nodes(self, cluster: str, pools: Mapping[str, Pool],
                           listed: Sequence[ProviderNode], errors: Sequence[NodeError], *,
                           orphan_grace_s: float, max_lost_attempts: int) -> Applied:
        now = time.time()
        async with self._write() as tx:
            standings = await self._lock_standings(tx, pools)  # then the nodes, as scale()
            rows = await tx.conn.fetch(SELECT_LIVE + self._for_update,
                                       {"cluster": cluster, "since": now - ENDED_KEPT_S})
            before = {r["id"]: stored_node(r) for r in rows if r["pool"] in pools}
            live = [s.node for s in before.values() if s.node.ended_at is None]
            ended = [s.node for s in before.values() if s.node.ended_at is not None]
            applied = apply_report(pools, live, ended, listed, errors, standings, now,
                                   orphan_grace_s=orphan_grace_s)
            attempts = await self._attempts_of(tx.conn, cluster,
                                               {j for p in listed for j in p.job_ids})
            counts = {p.key or p.provider_id: p for p in listed}
            events: list[dict[str, Any]] = []
            written: set[str] = set()
            placed: list[dict[str, Any]] = []  # attempts first seen on a node (costs)
            for n in applied.nodes:
                old = before.get(n.id)
                seen = counts.get(n.id) or counts.get(n.provider_id or "")
                jobs = (seen.jobs or 0) if seen is not None else (old.jobs if old else 0)
                recorded = dict(old.attempts or {}) if old is not None else {}
                if seen is not None:
                    placed += [{"job_id": j, "attempt": attempts[j], "node_id": n.id,
                                "pool": n.pool} for j in seen.job_ids
                               if j in attempts and recorded.get(j) != attempts[j]]
                    recorded = {j: attempts.get(j) or recorded[j] for j in seen.job_ids
                                if j in attempts or j in recorded}
                s = StoredNode(node=n, cluster=cluster, version=old.version if old else 0,
                               jobs=jobs, attempts=recorded,
                               adopted=old.adopted if old else n.id not in before,
                               reported_at=now if seen is not None else (
                                   old.reported_at if old else None))
                if old is not None and old.node == n and old.jobs == jobs and (
                        old.attempts == recorded):
                    continue  # unchanged: no write (the scaler's versions stay valid)
                if await self._put(tx, s, False, events):
                    written.add(n.id)
            if placed:
                await tx.conn.executemany(INSERT_ATTEMPT_NODE, placed)
            await tx.conn.executemany(UPSERT_STANDING, [  # only those that changed
                _standing_row(s) for name, s in applied.standings.items()
                if s != standings.get(name, Standing(pool=name))])
            lost = [t for n in applied.lost if n.id in written
                    for t in self._lost(before[n.id], n)]
            events += await self._lose(tx, lost, max_lost_attempts, now)
            await self._insert_events(tx, events)
        return applied

    @staticmethod
    def _lost(before: StoredNode, n: Node) -> list[tuple[Transition, int]]:
        why = f"node {n.id} of pool {n.pool} was lost"
        return [(Transition(job_id=j, state=JobState.LOST, reason=why, at=n.since,
                            infrastructure=True), attempt)
                for j, attempt in sorted((before.attempts or {}).items())]

    async def _attempts_of(self, conn: Conn, cluster: str, job_ids: set[str]
                           ) -> dict[str, int]:
        """The attempt each of ``job_ids`` runs now (a job submitted or running), for the
        jobs of ``cluster`` only: an agent records (and may lose) its own cluster's jobs,
        never another's, and a job between attempts keeps the attempt recorded before."""
        if not job_ids:
            return {}
        rows = await conn.fetch(SELECT_JOB_ATTEMPTS.format(ids=self._ids_sql("ids")),
                                {"ids": self._ids_value(sorted(job_ids))})
        return {r["id"]: int(r["attempt"]) for r in rows if r["cluster"] == cluster
                and JobState(r["state"]) in LOST_ATTEMPT_STATES}

    async def _lose(self, tx: WriteTx, lost: Sequence[tuple[Transition, int]], cap: int,
                    now: float) -> list[dict[str, Any]]:
        """The attempts a lost node took with it, lost to the infrastructure: only a job
        still on the attempt that was on the node (its rows locked first), so each lost
        attempt gets one new attempt, never two."""
        if not lost:
            return []
        await self._lock_parents(tx.conn, sorted({t.job_id for t, _ in lost}))
        rows = await tx.conn.fetch(SELECT_JOB_ATTEMPTS.format(ids=self._ids_sql("ids")),
                                   {"ids": self._ids_value(sorted({t.job_id for t, _ in lost}))})
        now_on = {r["id"]: (int(r["attempt"]), JobState(r["state"])) for r in rows}
        due = [t for t, attempt in lost if now_on.get(t.job_id, (0, None))[0] == attempt
               and now_on[t.job_id][1] in LOST_ATTEMPT_STATES]
        if not due:
            return []
        _, events = await self._transition_in(tx, due, None, cap, now)
        return events


async def _standings(conn: Conn, lock: str = "") -> dict[str, Standing]:
    rows = await conn.fetch(SELECT_STANDINGS + lock)
    return {r["pool"]: Standing(
        pool=r["pool"], backoff_until=r["backoff_until"], failures_in_row=r["failures_in_row"],
        quarantined=bool(r["quarantined"]), launches=tuple(json.loads(r["launches"])),
        orphans=json.loads(r["orphans"]), short_since=r["short_since"]) for r in rows}


def quarantine_event(s: Standing, now: float) -> dict[str, Any]:
    return event_row(Event(type=QUARANTINE_EVENT, subject=f"pools/{s.pool}", time=now,
                           data={"pool": s.pool, "failures_in_row": s.failures_in_row}), now)
