"""The scaler: one pass every ``[server] scale_interval_s`` plans each elastic pool and writes
the plan's node changes; the agents' providers carry them out (see ``docs/pools.md``).

It is a leased consumer (:mod:`bridgehead.controllers.consumers`): one server among replicas
runs it; another takes over from the store if it dies (the store holds every node and pool
standing, nothing is kept in memory between passes). A pass is what
:class:`bridgehead.pools.simulation.Simulation` models on a fake clock:

1. demand: the jobs of clusters with pools that have not started (queued, claimed,
   submitting, submitted: the scheduler may hold them waiting for a node), each with a
   runtime estimate: the mean of its name's recent successful attempts, else its walltime,
   else an hour;
2. the nodes as the agents' reports left them (:meth:`PoolStore.report_nodes`); a node with a
   job in its last report counts as full and is never released;
3. :func:`bridgehead.domain.planner.plan`;
4. written in one transaction, each change a compare-and-set: new nodes ``requested`` (their
   ids are the providers' idempotency keys), cordons, terminations (re-checked empty in the
   write: a report that put a job on the node since makes it a no-op), failed boots (the pool
   backs off; N in a row quarantine it, with a ``bridgehead.pool.quarantined`` event).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import cast

from bridgehead.controllers.consumers import EventConsumer
from bridgehead.domain.jobs import NOT_STARTED
from bridgehead.domain.planner import RATE_WINDOW_S, Demand, Plan, PoolState, Running, plan
from bridgehead.domain.pool_report import Standing
from bridgehead.domain.pools import Node, NodeState, Pool
from bridgehead.metrics import Metrics
from bridgehead.store import JobStore
from bridgehead.store.pools_sql import NODE_EVENT, NodeWrite, PoolStore, StoredNode, Waiting

logger = logging.getLogger(__name__)

WAITING = tuple(sorted(NOT_STARTED))
"""Jobs that have not started: the demand."""
DEFAULT_RUNTIME_S = 3600.0
HISTORY_S = 7 * 86400.0
MAX_DEMAND = 50_000
"""The most jobs one pass plans for (the oldest first): beyond, the next passes."""


class Scaler(EventConsumer):
    name = "scaler"
    types = (NODE_EVENT,)

    def __init__(self, store: JobStore, pools: Sequence[Pool], *, interval_s: float = 5.0,
                 lease_s: float = 15.0, metrics: Metrics | None = None) -> None:
        super().__init__(store, lease_s=lease_s, metrics=metrics)
        self.pools = {p.name: p for p in pools}
        self.interval_s = interval_s
        self._due = 0.0
        self.passes = 0
        self.last_plan: Plan | None = None

    @property
    def pool_store(self) -> PoolStore:
        return cast(PoolStore, self.store)

    async def start(self) -> None:
        self._due = 0.0

    def next_wake(self) -> float | None:
        return self._due if self.pools else None

    async def tick(self, now: float) -> None:
        if self.pools and now >= self._due:
            self._due = now + self.interval_s
            await self.scale_pass(now)

    async def scale_pass(self, now: float | None = None) -> Plan | None:
        """One pass (see the module docstring); the plan it carried out."""
        if not self.pools:
            return None
        now = time.time() if now is None else now
        store = self.pool_store
        stored = {s.node.id: s for s in await store.pool_nodes() if s.node.pool in self.pools}
        standings = await store.pool_standings()
        states = [_pool_state(pool, [s for s in stored.values() if s.node.pool == name],
                              standings.get(name, Standing(pool=name)), now)
                  for name, pool in sorted(self.pools.items())]
        # A job the scheduler already placed on a node (Slurm powering a CLOUD node up for
        # it: the node is listed with the job while ours still says submitted) is not demand:
        # that node counts as full, and the job must not buy a second one.
        placed = {j for s in stored.values() if s.node.ended_at is None
                  for j in (s.attempts or {})}
        decided = plan([d for d in await self._demand() if d.job_id not in placed], states,
                       now)
        writes = self._writes(decided, stored, now)
        if writes:
            applied = await store.scale(writes, self.pools, now)
            for w, ok in zip(writes, applied, strict=True):
                if ok:
                    self.metrics.scale_decision(w.node.pool, _op(w.node.state))
                if ok and w.node.state is NodeState.TERMINATED:
                    logger.warning("node %s of pool %s still requested after %.0f s (its "
                                   "boot_timeout_s): no agent launched it, forgotten",
                                   w.node.id, w.node.pool, self.pools[w.node.pool].boot_timeout_s)
                if ok and w.node.state is NodeState.FAILED_BOOT:
                    logger.warning("node %s of pool %s did not boot within %.0f s: replaced",
                                   w.node.id, w.node.pool, self.pools[w.node.pool].boot_timeout_s)
        self.passes += 1
        self.last_plan = decided
        return decided

    def _writes(self, p: Plan, stored: Mapping[str, StoredNode], now: float) -> list[NodeWrite]:
        writes: list[NodeWrite] = []

        def move(node_id: str, state: NodeState, empty: bool = False) -> None:
            s = stored[node_id]
            writes.append(NodeWrite(node=s.node.to(state, now), cluster=s.cluster,
                                    version=s.version, empty=empty))

        for node_id in p.failed_boots:
            move(node_id, NodeState.FAILED_BOOT)
        for node_id in p.forgotten:
            move(node_id, NodeState.TERMINATED)
        for name, count in p.launch.items():
            writes += [NodeWrite(node=Node(id=f"{name}-{secrets.token_hex(5)}", pool=name,
                                           state=NodeState.REQUESTED, since=now),
                                 cluster=self.pools[name].cluster) for _ in range(count)]
        for node_id in p.uncordon:
            move(node_id, NodeState.IDLE)
        for node_id in p.cordon:
            if not stored[node_id].jobs and not stored[node_id].node.jobs:
                move(node_id, NodeState.CORDONED, empty=True)
        for node_id in p.terminate:
            s = stored[node_id]
            if s.node.state is NodeState.CORDONED and not s.jobs and not s.node.jobs:
                move(node_id, NodeState.TERMINATING, empty=True)
        for node_id in p.cancel:  # still booting, nothing placed: the same guarded write
            s = stored[node_id]
            if s.node.state is NodeState.BOOTING and not s.jobs and not s.node.jobs:
                move(node_id, NodeState.TERMINATING, empty=True)
        return writes

    async def _demand(self) -> list[Demand]:
        clusters = sorted({p.cluster for p in self.pools.values()})
        jobs = await self.pool_store.waiting(clusters, WAITING, limit=MAX_DEMAND)
        history = await self._history(clusters) if jobs else {}
        return [_demand(j, history) for j in jobs]

    async def _history(self, clusters: Sequence[str]) -> dict[str, float]:
        """The mean run time of each job name's recent successful attempts."""
        rows = await self.pool_store.runtimes(since=time.time() - HISTORY_S, clusters=clusters)
        sums: dict[str, list[float]] = {}
        for name, seconds in rows:
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += seconds
            acc[1] += 1
        return {name: total / n for name, (total, n) in sums.items()}


def _op(state: NodeState) -> str:
    return {NodeState.REQUESTED: "launch", NodeState.CORDONED: "cordon",
            NodeState.TERMINATING: "terminate", NodeState.IDLE: "uncordon",
            NodeState.FAILED_BOOT: "failed_boot",
            NodeState.TERMINATED: "forget"}.get(state, state.value)


def _demand(job: Waiting, history: Mapping[str, float]) -> Demand:
    runtime = history.get(job.name) or (
        float(job.walltime_s) if job.walltime_s else DEFAULT_RUNTIME_S)
    return Demand(job_id=job.id, cluster=job.cluster, cores=job.cores,
                  memory_mb=job.memory_mb, gpus=job.gpus, nodes=job.nodes, runtime_s=runtime,
                  queued_at=job.queued_at)


def _pool_state(pool: Pool, nodes: Sequence[StoredNode], s: Standing, now: float) -> PoolState:
    """The pool as the planner sees it: a node with a job in its last report counts as full
    (the scheduler knows where its jobs run; the scaler only needs to never release it)."""
    planned: list[Node] = []
    running: list[Running] = []
    shape = pool.shape
    for stored in nodes:
        n = stored.node
        if stored.jobs or n.jobs:
            n = replace(n, jobs=n.jobs | {f"#{i}" for i in range(stored.jobs)})
            running.append(Running(node_id=n.id, cores=shape.cpus, memory_mb=shape.memory_mb,
                                   gpus=shape.gpus))
        planned.append(n)
    return PoolState(pool=pool, nodes=tuple(planned), running=tuple(running),
                     launches=tuple(t for t in s.launches if now - t < RATE_WINDOW_S),
                     backoff_until=s.backoff_until, quarantined=s.quarantined,
                     probing=s.short_since is not None)

