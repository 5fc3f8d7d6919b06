"""The scaling policies Bridgehead is compared with in ``bench/autoscale.py``, as
:class:`~bridgehead.pools.simulation.Simulation` policies (the planner's signature: queued
demand, pool states, now -> a Plan). They run WITHOUT Bridgehead's re-check
(``recheck=False``): a node they terminate takes its jobs with it (killed, their work lost, the
job queued again), which is what their batch users complain about.

Each pairs a scheduler with an autoscaler, as it runs in practice. Common simplifications:
one pool per cluster (the benchmark's shape); a job is placed all or nothing (a gang
scheduler, as Kueue or Volcano give Kubernetes); a failed boot is given up after the
policy's own timeout; the scheduler scores nodes once per pass.

- :class:`ParslSimple`: Parsl's ``simple`` strategy (``parsl/jobs/strategy.py``
  ``_general_strategy``): every 5 s it compares outstanding *tasks* with *slots* (blocks x
  workers per node x nodes per block; here one worker per one-node block, so a task is one
  node of a job, whatever it asks for: it counts tasks, not sizes, Parsl #3414). More tasks
  than slots: ``ceil(tasks x parallelism - slots)`` more blocks. More slots than tasks for
  its 120 s ``max_idletime``: scale in the excess, the oldest blocks first, whatever runs on
  them (``list(blocks)[:n]``; the task killed by a scale-in of Parsl #2769). Its interchange
  hands tasks to free workers in node order.
- :class:`ClusterAutoscaler`: kube-scheduler (LeastAllocated: the least used node first)
  with cluster-autoscaler: a 10 s scan; unschedulable pods bin-packed first-fit-decreasing
  onto upcoming nodes, then new nodes of the group's template; scale-down of a node under
  50% cpu use whose pods fit elsewhere, once unneeded for 10 min and not within 10 min of a
  scale-up (empty ones 10 at a time, others one per scan), evicting its pods (#4048); a boot
  given up after 15 min (``max-node-provision-time``).
- :class:`Karpenter`: the same scheduler with Karpenter: each pass (its 1 s batch window is
  under the simulation's step) pending pods go first-fit onto in-flight nodes, then onto new
  ones; a node empty for 30 s is deleted; consolidation (``WhenEmptyOrUnderutilized``)
  deletes one node a pass whose pods fit on the others, after it was a candidate for 30 s
  plus its 15 s validation, evicting its pods (karpenter #701); registration given up after
  15 min.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bridgehead.domain.planner import Demand, Plan, PoolState
from bridgehead.domain.pools import NODE_COMING, NodeState, Pool


@dataclass(slots=True)
class _Free:
    """A ready node's free capacity during one pass."""

    id: str
    pool: str
    cores: int
    memory_mb: int
    gpus: int
    load: int
    since: float

    def fits(self, cores: int, memory_mb: int, gpus: int) -> bool:
        return self.cores >= cores and self.memory_mb >= memory_mb and self.gpus >= gpus

    def take(self, cores: int, memory_mb: int, gpus: int) -> None:
        self.cores -= cores
        self.memory_mb -= memory_mb
        self.gpus -= gpus
        self.load += cores


def ready_nodes(s: PoolState) -> list[_Free]:
    """The pool's ready nodes (idle or busy) with what is free on them, in id order."""
    used: dict[str, list[int]] = {}
    for r in s.running:
        u = used.setdefault(r.node_id, [0, 0, 0])
        u[0] += r.cores
        u[1] += r.memory_mb
        u[2] += r.gpus
    shape = s.pool.shape
    out = []
    for n in sorted(s.nodes, key=lambda n: n.id):
        if n.state in (NodeState.IDLE, NodeState.BUSY):
            c, m, g = used.get(n.id, [0, 0, 0])
            out.append(_Free(n.id, n.pool, shape.cpus - c, shape.memory_mb - m, shape.gpus - g,
                             c, n.launched_at if n.launched_at is not None else n.since))
    return out


@dataclass(slots=True)
class Scheduled:
    placements: dict[str, tuple[str, ...]] = field(default_factory=dict)
    start: list[str] = field(default_factory=list)
    pending: list[Demand] = field(default_factory=list)


def schedule(demand: Sequence[Demand], nodes: Mapping[str, list[_Free]], *,
             spread: bool) -> Scheduled:
    """Each queued job in queue order onto free capacity of its cluster's ready nodes, all or
    nothing: the least used nodes first (``spread``, kube-scheduler's default score) or in
    node order (a Parsl interchange handing tasks to free workers). ``nodes``: per cluster."""
    out = Scheduled()
    failed: set[tuple[str, int, int, int, int]] = set()
    for d in demand:
        key = (d.cluster, d.cores, d.memory_mb, d.gpus, d.nodes)
        if key in failed:
            out.pending.append(d)
            continue
        fit = [f for f in nodes.get(d.cluster, ()) if f.fits(d.cores, d.memory_mb, d.gpus)]
        if len(fit) < d.nodes:
            failed.add(key)  # capacity only shrinks within the pass
            out.pending.append(d)
            continue
        if spread:
            fit.sort(key=lambda f: (f.load, f.id))
        chosen = fit[:d.nodes]
        for f in chosen:
            f.take(d.cores, d.memory_mb, d.gpus)
        out.placements[d.job_id] = tuple(f.id for f in chosen)
        out.start.append(d.job_id)
    return out


def boot_timeouts(states: Sequence[PoolState], now: float, timeout_s: float) -> list[str]:
    return sorted(n.id for s in states for n in s.nodes
                  if n.state in (NodeState.LAUNCHING, NodeState.BOOTING)
                  and now - (n.launched_at if n.launched_at is not None else n.since)
                  > timeout_s)


def _active(s: PoolState, failed: set[str]) -> int:
    """Nodes that count: every one not ended, ending or given up."""
    return sum(1 for n in s.nodes if n.id not in failed and (
        n.state in NODE_COMING or n.state in (NodeState.IDLE, NodeState.BUSY,
                                              NodeState.CORDONED)))


def _by_cluster(states: Sequence[PoolState]) -> dict[str, list[_Free]]:
    out: dict[str, list[_Free]] = {}
    for s in states:
        out.setdefault(s.pool.cluster, []).extend(ready_nodes(s))
    return out


def _pods(pending: Sequence[Demand], cluster: str) -> list[tuple[int, int, int]]:
    """The pending jobs of ``cluster`` as pods (one per node of each job), largest first."""
    pods = [(d.cores, d.memory_mb, d.gpus) for d in pending if d.cluster == cluster
            for _ in range(d.nodes)]
    return sorted(pods, reverse=True)


def _ffd_new_nodes(pods: Sequence[tuple[int, int, int]], pool: Pool, free: Sequence[_Free],
                   upcoming: int) -> int:
    """New nodes of ``pool``'s shape first-fit-decreasing needs for ``pods`` once the free
    capacity of its ready nodes and ``upcoming`` empty nodes (on their way) are filled first
    (cluster-autoscaler's and Karpenter's scheduling simulation)."""
    shape = pool.shape
    bins: list[list[int]] = [[f.cores, f.memory_mb, f.gpus] for f in free if f.pool == pool.name]
    known = len(bins)
    bins += [[shape.cpus, shape.memory_mb, shape.gpus] for _ in range(upcoming)]
    for c, m, g in pods:
        if c > shape.cpus or m > shape.memory_mb or g > shape.gpus:
            continue  # no node of this group can ever hold it
        for b in bins:
            if b[0] >= c and b[1] >= m and b[2] >= g:
                b[0], b[1], b[2] = b[0] - c, b[1] - m, b[2] - g
                break
        else:
            bins.append([shape.cpus - c, shape.memory_mb - m, shape.gpus - g])
    return max(len(bins) - known - upcoming, 0)


def _fits_elsewhere(jobs: Sequence[tuple[int, int, int]], room: Sequence[_Free],
                    skip: set[str], own: str) -> bool:
    """Whether every pod fits on the free capacity of ``room`` (the most free cores first)
    but node ``own`` and the nodes in ``skip``, first fit, each pod reserving what it
    takes."""
    taken: dict[str, tuple[int, int, int]] = {}
    for c, m, g in sorted(jobs, reverse=True):
        for f in room:
            if f.cores < c:
                return False  # nor any node after it
            if f.id == own or f.id in skip:
                continue
            fc, fm, fg = taken.get(f.id, (f.cores, f.memory_mb, f.gpus))
            if fc >= c and fm >= m and fg >= g:
                taken[f.id] = (fc - c, fm - m, fg - g)
                break
        else:
            return False
    return True


def _most_free(nodes: Sequence[_Free]) -> list[_Free]:
    return sorted(nodes, key=lambda f: (-f.cores, f.id))


def _held(s: PoolState) -> dict[str, list[tuple[int, int, int]]]:
    out: dict[str, list[tuple[int, int, int]]] = {}
    for r in s.running:
        out.setdefault(r.node_id, []).append((r.cores, r.memory_mb, r.gpus))
    return out


class ParslSimple:
    """Parsl's ``simple`` strategy (see the module's docstring)."""

    def __init__(self, *, period_s: float = 5.0, max_idletime_s: float = 120.0,
                 parallelism: float = 1.0, boot_timeout_s: float = 600.0) -> None:
        self.period_s = period_s
        self.max_idletime_s = max_idletime_s
        self.parallelism = parallelism
        self.boot_timeout_s = boot_timeout_s
        self._idle_since: dict[str, float] = {}
        self._last = -math.inf

    def __call__(self, demand: Sequence[Demand], states: Sequence[PoolState],
                 now: float) -> Plan:
        sched = schedule(demand, _by_cluster(states), spread=False)
        failed = boot_timeouts(states, now, self.boot_timeout_s)
        launch: dict[str, int] = {}
        terminate: list[str] = []
        if now - self._last >= self.period_s:
            self._last = now
            for s in states:
                grow, ended = self._strategize(s, demand, set(failed), now)
                if grow:
                    launch[s.pool.name] = grow
                terminate += ended
        return Plan(launch=launch, placements=sched.placements, start=tuple(sched.start),
                    terminate=tuple(terminate), failed_boots=tuple(failed))

    def _strategize(self, s: PoolState, demand: Sequence[Demand], failed: set[str],
                    now: float) -> tuple[int, list[str]]:
        pool = s.pool
        tasks = sum(d.nodes for d in demand if d.cluster == pool.cluster) + len(s.running)
        blocks = _active(s, failed)
        slots = blocks  # one worker per node, one node per block
        if tasks == 0 or slots > tasks:
            since = self._idle_since.setdefault(pool.name, now)
            if now - since <= self.max_idletime_s or blocks <= pool.min_nodes:
                return 0, []
            self._idle_since.pop(pool.name)
            excess = blocks - pool.min_nodes if tasks == 0 else min(
                math.ceil(slots - tasks * self.parallelism), blocks - pool.min_nodes)
            oldest = sorted((n for n in s.nodes if n.id not in failed and n.state in (
                NODE_COMING | {NodeState.IDLE, NodeState.BUSY, NodeState.CORDONED})),
                key=lambda n: (n.launched_at if n.launched_at is not None else n.since, n.id))
            return 0, [n.id for n in oldest[:excess]]
        self._idle_since.pop(pool.name, None)
        if slots / tasks < self.parallelism and blocks < pool.max_nodes:
            excess_slots = math.ceil(tasks * self.parallelism - slots)
            return min(excess_slots, pool.max_nodes - blocks), []
        return 0, []


class ClusterAutoscaler:
    """kube-scheduler and cluster-autoscaler (see the module's docstring)."""

    def __init__(self, *, scan_s: float = 10.0, unneeded_s: float = 600.0,
                 utilization: float = 0.5, delay_after_add_s: float = 600.0,
                 provision_timeout_s: float = 900.0, max_empty_bulk: int = 10) -> None:
        self.scan_s = scan_s
        self.unneeded_s = unneeded_s
        self.utilization = utilization
        self.delay_after_add_s = delay_after_add_s
        self.provision_timeout_s = provision_timeout_s
        self.max_empty_bulk = max_empty_bulk
        self._unneeded: dict[str, dict[str, float]] = {}
        """Per pool: since when each node has been unneeded."""
        self._last_add: dict[str, float] = {}
        self._last = -math.inf

    def __call__(self, demand: Sequence[Demand], states: Sequence[PoolState],
                 now: float) -> Plan:
        ready = _by_cluster(states)
        sched = schedule(demand, ready, spread=True)
        failed = boot_timeouts(states, now, self.provision_timeout_s)
        launch: dict[str, int] = {}
        terminate: list[str] = []
        if now - self._last >= self.scan_s:
            self._last = now
            for s in states:
                upcoming = sum(1 for n in s.nodes if n.state in NODE_COMING
                               and n.id not in failed)
                add = min(_ffd_new_nodes(_pods(sched.pending, s.pool.cluster), s.pool,
                                         ready.get(s.pool.cluster, []), upcoming),
                          s.pool.max_nodes - _active(s, set(failed)))
                if add > 0:
                    launch[s.pool.name] = add
                    self._last_add[s.pool.name] = now
                    continue
                terminate += self._scale_down(s, ready.get(s.pool.cluster, []), sched, now)
        return Plan(launch=launch, placements=sched.placements, start=tuple(sched.start),
                    terminate=tuple(terminate), failed_boots=tuple(failed))

    def _scale_down(self, s: PoolState, ready: list[_Free], sched: Scheduled,
                    now: float) -> list[str]:
        mine = [f for f in ready if f.pool == s.pool.name]
        if now - self._last_add.get(s.pool.name, -math.inf) < self.delay_after_add_s:
            return []
        since = self._unneeded.setdefault(s.pool.name, {})
        held = _held(s)
        placed = {n for nodes in sched.placements.values() for n in nodes}
        cpus = s.pool.shape.cpus
        unneeded: list[_Free] = []
        skip: set[str] = set()
        room = _most_free(mine)
        for f in mine:
            jobs = held.get(f.id, [])
            if f.id in placed or f.load / cpus >= self.utilization:
                continue
            if jobs and not _fits_elsewhere(jobs, room, skip, f.id):
                continue
            unneeded.append(f)
            skip.add(f.id)
        for node_id in [k for k in since if k not in skip]:
            del since[node_id]
        for f in unneeded:
            since.setdefault(f.id, now)
        due = [f for f in unneeded if now - since[f.id] >= self.unneeded_s]
        spare = len(mine) + sum(1 for n in s.nodes if n.state in NODE_COMING) - s.pool.min_nodes
        empty = [f.id for f in due if f.id not in held][:max(min(self.max_empty_bulk, spare), 0)]
        busy = [f.id for f in due if f.id in held][:1 if spare > len(empty) else 0]
        for node_id in empty + busy:
            since.pop(node_id, None)
        return empty + busy


class Karpenter:
    """kube-scheduler and Karpenter (see the module's docstring)."""

    def __init__(self, *, empty_after_s: float = 30.0, consolidate_after_s: float = 30.0,
                 validation_s: float = 15.0, registration_timeout_s: float = 900.0) -> None:
        self.empty_after_s = empty_after_s
        self.consolidate_after_s = consolidate_after_s
        self.validation_s = validation_s
        self.registration_timeout_s = registration_timeout_s
        self._empties: dict[str, dict[str, float]] = {}
        self._candidates: dict[str, dict[str, float]] = {}
        """Per pool: since when each node has been empty / a consolidation candidate."""

    def __call__(self, demand: Sequence[Demand], states: Sequence[PoolState],
                 now: float) -> Plan:
        ready = _by_cluster(states)
        sched = schedule(demand, ready, spread=True)
        failed = boot_timeouts(states, now, self.registration_timeout_s)
        launch: dict[str, int] = {}
        terminate: list[str] = []
        for s in states:
            pods = _pods(sched.pending, s.pool.cluster)
            upcoming = sum(1 for n in s.nodes if n.state in NODE_COMING and n.id not in failed)
            add = min(_ffd_new_nodes(pods, s.pool, ready.get(s.pool.cluster, []), upcoming),
                      s.pool.max_nodes - _active(s, set(failed)))
            if add > 0:
                launch[s.pool.name] = add
            terminate += self._disrupt(s, ready.get(s.pool.cluster, []), sched, bool(pods),
                                       now)
        return Plan(launch=launch, placements=sched.placements, start=tuple(sched.start),
                    terminate=tuple(terminate), failed_boots=tuple(failed))

    def _disrupt(self, s: PoolState, ready: list[_Free], sched: Scheduled, pending: bool,
                 now: float) -> list[str]:
        mine = [f for f in ready if f.pool == s.pool.name]
        ids = {f.id for f in mine}
        empties = self._empties.setdefault(s.pool.name, {})
        candidates_since = self._candidates.setdefault(s.pool.name, {})
        for node_id in [k for k in candidates_since if k not in ids]:
            del candidates_since[node_id]
        held = _held(s)
        placed = {n for nodes in sched.placements.values() for n in nodes}
        keep = s.pool.min_nodes
        out: list[str] = []
        empty = [f for f in mine if f.id not in held and f.id not in placed]
        for f in empty:
            empties.setdefault(f.id, now)
        empty_ids = {f.id for f in empty}
        for node_id in [k for k in empties if k not in empty_ids]:
            del empties[node_id]
        for f in empty:
            if now - empties[f.id] >= self.empty_after_s and len(mine) - len(out) > keep:
                out.append(f.id)
                del empties[f.id]
        if pending or len(mine) - len(out) <= keep:
            candidates_since.clear()
            return out
        gone = set(out)
        room = _most_free(mine)
        candidates = [f for f in mine if f.id in held and f.id not in placed]
        for f in sorted(candidates, key=lambda f: (f.load, f.id)):
            if not _fits_elsewhere(held[f.id], room, gone, f.id):
                candidates_since.pop(f.id, None)
                continue
            since = candidates_since.setdefault(f.id, now)
            if now - since >= self.consolidate_after_s + self.validation_s:
                del candidates_since[f.id]
                out.append(f.id)
                break  # one disruption command at a time
        return out
