"""A discrete-event simulation that drives the REAL planner (:mod:`bridgehead.domain.planner`),
reconciler and cost model on a fake clock against :class:`~bridgehead.pools.sim.SimCloud`,
as the scaler does each pass: evictions, reconcile, boots, job ends, arrivals, then the plan
carried out (failed boots replaced with backoff, launches, placements started, cordons,
terminations re-checked). Used by the property tests and ``bench/autoscale.py``.

The plan comes from a **policy**: a callable with the planner's signature (``plan`` by default;
``bench/autoscale.py`` also runs the baselines of :mod:`bridgehead.pools.baselines` through
the same loop). Bridgehead terminates a node only after re-checking, in the transaction that
terminates it, that nothing was placed on it (``recheck=True``). A baseline has no such
re-check (``recheck=False``): the jobs on a node it terminates are killed, their work lost,
and they are queued again, as cluster-autoscaler, Karpenter and Parsl do to batch jobs
(cluster-autoscaler #4048, karpenter #701, Parsl #2769).

What it records is what the invariants are checked against: every attempt's allocation (the
cost ledger), every node's life, jobs on a node a plan named for termination (``killed``: the
re-check kept them, or, without it, they were killed), lost attempts and the new attempt each
got, and how long each orphan lived.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from bridgehead.domain.costs import DEFAULT_WEIGHTS, Allocation, BillingWeights, bill_node
from bridgehead.domain.planner import Demand, Plan, PoolState, Running, plan
from bridgehead.domain.pool_reconcile import reconcile
from bridgehead.domain.pools import (
    NODE_READY,
    NODE_TERMINAL,
    Node,
    NodeState,
    Pool,
    backoff_until,
)
from bridgehead.pools.sim import CapacityShortage, SimCloud

Policy = Callable[[Sequence[Demand], Sequence[PoolState], float], Plan]
"""What decides each pass: the planner's signature (``bridgehead.domain.planner.plan``)."""


@dataclass(slots=True)
class SimJob:
    demand: Demand
    arrival: float
    runtime_s: float
    """How long it really runs (the planner sees ``demand.runtime_s``, an estimate)."""
    attempts: int = 0
    lost: int = 0
    killed: int = 0
    """Attempts a scale-down killed (only without the re-check)."""
    start: float | None = None
    first_start: float | None = None
    nodes: tuple[str, ...] = ()
    finished_at: float | None = None
    gave_up: bool = False


@dataclass(slots=True)
class _PoolRun:
    pool: Pool
    launches: list[float] = field(default_factory=list)
    failures_in_row: int = 0
    backoff_until: float = 0.0
    quarantined: bool = False
    short_since: float | None = None
    """As the store's standing: refused for a shortage at this time, none taken since."""


class Simulation:
    def __init__(self, pools: Sequence[Pool], jobs: Sequence[SimJob], cloud: SimCloud, *,
                 step_s: float = 5.0, orphan_grace_s: float = 60.0,
                 max_lost_attempts: int = 3, policy: Policy = plan,
                 recheck: bool = True) -> None:
        self.pools = {p.name: _PoolRun(p) for p in pools}
        self.jobs = {j.demand.job_id: j for j in jobs}
        self.cloud = cloud
        self.step_s = step_s
        self.orphan_grace_s = orphan_grace_s
        self.max_lost_attempts = max_lost_attempts
        self.policy = policy
        self.recheck = recheck
        self.nodes: dict[str, Node] = {}
        self.live: dict[str, set[str]] = {p.name: set() for p in pools}
        """Each pool's nodes not ended."""
        self.running: set[str] = set()
        self.queue: list[str] = []
        self.allocations: list[Allocation] = []
        self.killed: list[str] = []
        """Jobs on a node a plan named for termination: kept by the re-check, or killed
        without it. With the planner: none."""
        self.killed_core_s = 0.0
        """The work those killed attempts had done (cores x seconds), lost."""
        self.lost_core_s = 0.0
        """The work of attempts lost with their node (evictions), lost."""
        self.max_live: dict[str, int] = {p.name: 0 for p in pools}
        self.orphans_seen: dict[str, float] = {}
        self.orphan_lifetimes: list[float] = []
        self.events: list[tuple[float, str, str]] = []
        self.plan_passes = 0
        self.refused: set[str] = set()
        """Launches a capacity shortage refused: nothing was made, nothing is billed."""
        self.terminated = 0
        """Nodes a plan terminated (scale-down), cancelled boots included."""
        self.cancelled = 0
        """Boots a plan cancelled (a node still booting that nothing wanted)."""
        self._arrivals = sorted(jobs, key=lambda j: (j.arrival, j.demand.job_id))
        self._arrived = 0
        self._next_node = 0
        self.now = 0.0

    # -- the loop ---------------------------------------------------------------------------
    def run(self, until: float) -> None:
        now = 0.0
        while now <= until:
            self.step(now)
            now += self.step_s
        self.now = now

    def done(self) -> bool:
        """Every job arrived and ended (ran to its end or gave up)."""
        return self._arrived == len(self._arrivals) and not self.queue and not self.running

    def step(self, now: float) -> None:
        self.now = now
        self.cloud.evict(now, self.step_s)
        self._reconcile(now)
        self._boots(now)
        self._job_ends(now)
        while self._arrived < len(self._arrivals) and (
                self._arrivals[self._arrived].arrival <= now):
            self._queue(self._arrivals[self._arrived], now)
            self._arrived += 1
        self._plan(now)
        for name, live in self.live.items():
            self.max_live[name] = max(self.max_live[name], len(live))

    def _queue(self, job: SimJob, now: float) -> None:
        """Queued (again) at ``now``: what the planner's ``queued_at`` says."""
        job.demand = replace(job.demand, queued_at=now)
        self.queue.append(job.demand.job_id)

    def _set(self, n: Node) -> None:
        self.nodes[n.id] = n
        if n.state in NODE_TERMINAL:
            self.live[n.pool].discard(n.id)
        else:
            self.live[n.pool].add(n.id)

    def _live_nodes(self) -> list[Node]:
        return [self.nodes[i] for ids in self.live.values() for i in ids]

    def _reconcile(self, now: float) -> None:
        live = sorted(self._live_nodes(), key=lambda n: n.id)
        r = reconcile(live, self.cloud.nodes(), now, orphans_seen=self.orphans_seen,
                      orphan_grace_s=self.orphan_grace_s)
        for n in r.nodes:
            if self.nodes[n.id] is not n:
                self._set(n)
        hit: set[str] = set()
        for n in r.lost:
            self.events.append((now, "node.lost", n.id))
            hit |= n.jobs
        for job_id in sorted(hit):  # a gang that lost two nodes lost ONE attempt
            self._attempt_lost(self.jobs[job_id], now)
        for pid in r.terminate:
            created = self.cloud.created(pid)
            self.cloud.terminate(pid)
            if created is not None:
                self.orphan_lifetimes.append(now - created)
        self.orphans_seen = {p: t for p, t in r.orphans_seen.items() if p not in r.terminate}

    def _boots(self, now: float) -> None:
        for n in self._live_nodes():
            if (n.state is NodeState.BOOTING and n.provider_id is not None
                    and self.cloud.ready(n.provider_id, now)):
                self._set(n.to(NodeState.IDLE, now))
                self.pools[n.pool].failures_in_row = 0

    def _job_ends(self, now: float) -> None:
        for job_id in sorted(self.running):
            job = self.jobs[job_id]
            assert job.start is not None
            if job.start + job.runtime_s <= now:
                job.finished_at = job.start + job.runtime_s
                self._release_nodes(job, job.finished_at)
                self.running.discard(job_id)

    def _attempt_lost(self, job: SimJob, now: float) -> None:
        """The attempt's node was lost: it ends here; one new attempt, within the cap."""
        if job.start is None:
            return
        self.lost_core_s += job.demand.cores * len(job.nodes) * (now - job.start)
        self._release_nodes(job, now)
        self.running.discard(job.demand.job_id)
        job.lost += 1
        job.start, job.nodes = None, ()
        if job.lost <= self.max_lost_attempts:
            self._queue(job, now)
        else:
            job.gave_up = True

    def _kill(self, job: SimJob, now: float) -> None:
        """A scale-down without the re-check took the node under it: the attempt ends here,
        its work is lost, and the job is queued again."""
        assert job.start is not None
        self.killed.append(job.demand.job_id)
        self.killed_core_s += job.demand.cores * len(job.nodes) * (now - job.start)
        self._release_nodes(job, now)
        self.running.discard(job.demand.job_id)
        job.killed += 1
        job.start, job.nodes = None, ()
        self._queue(job, now)

    def _release_nodes(self, job: SimJob, at: float) -> None:
        d = job.demand
        for node_id in job.nodes:
            assert job.start is not None
            self.allocations.append(Allocation(
                job_id=d.job_id, attempt=job.attempts, node_id=node_id, cores=d.cores,
                memory_mb=d.memory_mb, gpus=d.gpus, start=job.start, end=at))
            n = self.nodes[node_id]
            jobs = n.jobs - {d.job_id}
            if n.state is NodeState.BUSY and not jobs:
                self._set(n.to(NodeState.IDLE, at, jobs=jobs))
            else:
                self._set(replace(n, jobs=jobs))

    # -- one planner pass, carried out --------------------------------------------------------
    def _plan(self, now: float) -> None:
        demand = [self.jobs[j].demand for j in self.queue]
        p = self.policy(demand, self._pool_states(now), now)
        self.plan_passes += 1
        for node_id in p.failed_boots:
            self._failed_boot(self.nodes[node_id], now)
        for pool, count in p.launch.items():
            for _ in range(count):
                if not self._launch(self.pools[pool], now):
                    break  # the cloud has no capacity now: the rest would be refused too
        for node_id in p.uncordon:
            self._set(self.nodes[node_id].to(NodeState.IDLE, now))
        for job_id in p.start:
            self._start(self.jobs[job_id], p.placements[job_id], now)
        for node_id in p.cordon:
            n = self.nodes[node_id]
            if n.state is NodeState.IDLE and not n.jobs:
                self._set(n.to(NodeState.CORDONED, now))
        for node_id in p.terminate:
            self._terminate(self.nodes[node_id], now)
        for node_id in p.cancel:  # still booting: the same re-check
            if self.nodes[node_id].state is NodeState.BOOTING:
                self._terminate(self.nodes[node_id], now)
                self.cancelled += 1

    def _terminate(self, n: Node, now: float) -> None:
        if n.state in NODE_TERMINAL or n.state is NodeState.TERMINATING:
            return
        if n.jobs and self.recheck:  # the transaction's re-check: something was placed on it
            self.killed.extend(sorted(n.jobs))
            return
        for job_id in sorted(n.jobs):
            self._kill(self.jobs[job_id], now)
        n = self.nodes[n.id]
        if n.state is NodeState.REQUESTED:
            self._set(n.to(NodeState.TERMINATED, now))
            return
        if n.state in NODE_READY:
            n = n.to(NodeState.CORDONED, now)
        self._set(n.to(NodeState.TERMINATING, now))
        self.terminated += 1
        if n.provider_id is not None:
            self.cloud.terminate(n.provider_id)

    def _pool_states(self, now: float) -> list[PoolState]:
        states = []
        for name, run in sorted(self.pools.items()):
            nodes = tuple(self.nodes[i] for i in sorted(self.live[name]))
            running = tuple(
                Running(node_id=n.id, cores=j.demand.cores, memory_mb=j.demand.memory_mb,
                        gpus=j.demand.gpus, ends_at=(j.start or now) + j.demand.runtime_s)
                for n in nodes for j in map(self.jobs.get, sorted(n.jobs)) if j is not None)
            states.append(PoolState(pool=run.pool, nodes=nodes, running=running,
                                    launches=tuple(run.launches),
                                    backoff_until=run.backoff_until,
                                    quarantined=run.quarantined,
                                    probing=run.short_since is not None))
        return states

    def _launch(self, run: _PoolRun, now: float) -> bool:
        """Whether the cloud took the launch (False: a capacity shortage refused it)."""
        self._next_node += 1
        node = Node(id=f"{run.pool.name}-n{self._next_node}", pool=run.pool.name,
                    state=NodeState.REQUESTED, since=now)
        node = node.to(NodeState.LAUNCHING, now)
        run.launches = [t for t in run.launches if now - t < 60.0] + [now]
        try:
            pid = self.cloud.launch(run.pool.name, node.id, now)
        except CapacityShortage:
            self._set(node.to(NodeState.FAILED_BOOT, now))
            self.refused.add(node.id)
            run.backoff_until = max(run.backoff_until, now + run.pool.backoff_s)
            if run.short_since is None:
                run.short_since = now
            return False
        if run.short_since is not None and now > run.short_since:
            run.short_since = None  # the cloud took one: the shortage is over
        if pid is None:
            return True  # the record of the launch was lost (a crash): the cloud has an orphan
        self._set(node.to(NodeState.BOOTING, now, provider_id=pid))
        return True

    def _failed_boot(self, node: Node, now: float) -> None:
        self._set(node.to(NodeState.FAILED_BOOT, now))
        if node.provider_id is not None:
            self.cloud.terminate(node.provider_id)
        self._pool_failed(self.pools[node.pool], now)

    def _pool_failed(self, run: _PoolRun, now: float) -> None:
        run.failures_in_row += 1
        run.backoff_until = backoff_until(run.pool, run.failures_in_row, now)
        if run.failures_in_row >= run.pool.quarantine_after and not run.quarantined:
            run.quarantined = True
            self.events.append((now, "pool.quarantined", run.pool.name))

    def _start(self, job: SimJob, nodes: tuple[str, ...], now: float) -> None:
        self.queue.remove(job.demand.job_id)
        self.running.add(job.demand.job_id)
        job.attempts += 1
        job.start, job.nodes = now, nodes
        if job.first_start is None:
            job.first_start = now
        for node_id in nodes:
            n = self.nodes[node_id]
            if n.state not in (NodeState.IDLE, NodeState.BUSY, NodeState.CORDONED):
                raise AssertionError(f"the policy started {job.demand.job_id} on {node_id}, "
                                     f"which is {n.state.value}")
            state = NodeState.BUSY if n.state is NodeState.IDLE else n.state
            self._set(n.to(state, now, jobs=n.jobs | {job.demand.job_id})
                      if state is not n.state
                      else replace(n, jobs=n.jobs | {job.demand.job_id}))

    # -- results ---------------------------------------------------------------------------
    def bills(self, end: float, weights: BillingWeights = DEFAULT_WEIGHTS) -> list[
            tuple[Node, float, float]]:
        """(node, its cost, its attempts' cost) for every node that was launched (and not
        refused by a shortage)."""
        by_node: dict[str, list[Allocation]] = {}
        for a in self.allocations:
            by_node.setdefault(a.node_id, []).append(a)
        out = []
        for n in self.nodes.values():
            if n.launched_at is None or n.id in self.refused:
                continue
            bill = bill_node(self.pools[n.pool].pool, n.id, n.launched_at,
                             n.ended_at if n.ended_at is not None else end,
                             by_node.get(n.id, ()), weights)
            out.append((n, bill.cost, bill.attempts))
        return out
