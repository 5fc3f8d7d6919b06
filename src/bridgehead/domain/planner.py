"""The scaler's planner: pure, deterministic and fast. Given the queue and the pools, it says
where each job will run and what to buy or release; the scaler (a leased consumer in the
server) carries the plan out through the agents' providers and plans again next pass.

Demand is every queued or retrying job's per-node request (cores, memory, gpus) times its
nodes, a gang placed all or nothing, with a runtime estimate. Jobs queued longer than their
cluster's ``fifo_after_s`` come first, oldest first; the others are packed largest first
(Toil's ``clusterScaler.py`` packs the same way; alone, it let the large jobs arriving during
a shortage take every node that freed while small ones waited for all of them). Each goes
into, in order (Karpenter's first-fit onto existing, then launching, then new nodes):

1. free capacity of ready nodes, the busiest first, so whole nodes empty out, and of the
   empty ones the one idled last, so the nodes idle longest are left to reach their grace
   (placed by id, each arrival kept a different node warm);
2. nodes on their way (requested, launching, booting), unless booting for longer than
   ``slow_boot_factor`` x ``expected_boot_s``: boot times have a long tail and some never
   end, so the jobs planned on a slow node get a replacement bought (a hedge) while it keeps
   booting until ``boot_timeout_s``;
3. capacity that frees before a new node could boot (a running job's estimated end within
   the pool's ``expected_boot_s``): waiting for it is cheaper than buying. A job already past
   its estimate is not counted on: runtimes have long tails, and a job that overran is
   likely to run on (counting it kept gangs waiting on it pass after pass);
4. cordoned empty nodes, taken back;
5. the pool with the lowest cost per packed job-second (price x the share of a node the job
   takes) that can grow to hold it: what that pool already has room for (1-4 and nodes
   bought in this plan), then new nodes for the rest, within ``max_nodes``, the launch
   rate, and not in backoff or quarantine; one node at a time while the pool probes after a
   capacity shortage (``probing``: a job needing more waits, and the pool buys its one node
   bare). A gang that cannot get all its nodes from one pool buys nothing and waits.

Beyond the placements, each elastic pool keeps ``min_nodes`` and a reserve of empty nodes:
``warm_idle``, plus ``boot_spares`` x the nodes placed jobs wait on to boot (a gang waits for
its slowest boot: a spare that boots first takes its place).

Release: a ready node with no job and none placed, idle past its pool's ``idle_grace_s``,
beyond ``min_nodes`` and that reserve, is cordoned, unless its pool is backing off (a failed
boot, a capacity shortage) while jobs of its cluster wait: a node given back then cannot be
bought again, and jobs ending on others may yet add up to a waiting gang (a quarantined pool
releases as usual: its end is an admin's call, and idle nodes would be paid for until then;
a probing one too: keeping its nodes as well cost 0.1% more on the benchmark's 24-hour trace
at no better wait); a cordoned node still empty is terminated (the scaler re-checks, in the
transaction that terminates it, that nothing was placed on it). A node still booting that
nothing is placed on, launched longer ago than ``idle_grace_s`` and ``billing_minimum_s``,
beyond that floor and reserve, is cancelled the same way (``cancel``): it was bought for jobs
that started on capacity that freed first (a slow boot is not: it keeps booting against its
hedge). A node with a job is never released: nothing here can name it.

Cost: a pass over 100 pools and 10k queued jobs takes about 60 ms of CPU
(``bench/autoscale.py`` measures it): first fit walks bins indexed by tier and load, skipping
buckets too full to hold the job, and a job shape that had to wait answers for every larger
one until the next purchase (each shape asked once: 10k jobs have a few hundred).
``tests/unit/test_planner_reference.py`` checks the plans equal those of the simple planner
that sorted every bin for every job.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bridgehead.domain.capacity import (
    CORDONED_TIER,
    NEW_TIER,
    READY_TIER,
    _Bin,
    _bins,
    _cancel,
    _failed_boots,
    _floor_and_reserve,
    _forgotten,
    _live,
    _probe_room,
    _recent,
    _release,
    _spares,
)
from bridgehead.domain.capacity import RATE_WINDOW_S as RATE_WINDOW_S
from bridgehead.domain.pools import Node as PoolNode
from bridgehead.domain.pools import Pool


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """One queued job's request: per node, times ``nodes`` (a gang, all or nothing)."""

    job_id: str
    cluster: str
    cores: int = 1
    memory_mb: int = 0
    gpus: int = 0
    nodes: int = 1
    runtime_s: float = 3600.0
    """The estimate: history for the job's name or step, else its walltime."""
    queued_at: float | None = None
    """When it was queued (or queued again): a job waiting past its cluster's
    ``fifo_after_s`` is planned before younger ones. None: not known (largest first only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    """A job running on a node: what it holds and when it is expected to end."""

    node_id: str
    cores: int = 1
    memory_mb: int = 0
    gpus: int = 0
    ends_at: float = float("inf")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolState:
    """A pool as the planner sees it this pass."""

    pool: Pool
    nodes: tuple[PoolNode, ...] = ()
    running: tuple[Running, ...] = ()
    launches: tuple[float, ...] = ()
    """When this pool's recent launches were asked for (the rate limit looks back 60 s)."""
    backoff_until: float = 0.0
    quarantined: bool = False
    probing: bool = False
    """The provider refused its last launch for a capacity shortage and has taken none since:
    it buys one node at a time (a probe) until one is taken."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    launch: Mapping[str, int] = field(default_factory=dict)
    """New nodes to buy now, per pool."""
    placements: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Each placed job's nodes: node ids, or ``new:<pool>:<k>`` for the k-th node bought now."""
    start: tuple[str, ...] = ()
    """The placed jobs whose every node has room now (ready, or a cordoned one taken back):
    they can start; the others wait for a boot or for capacity to free."""
    waiting: Mapping[str, str] = field(default_factory=dict)
    """Jobs that wait, and why (a gang over the pool's bounds, a pool backing off)."""
    unplaceable: Mapping[str, str] = field(default_factory=dict)
    """Jobs no pool of their cluster can ever run, and why."""
    uncordon: tuple[str, ...] = ()
    cordon: tuple[str, ...] = ()
    terminate: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()
    """Nodes still booting that nothing is placed on, launched longer ago than their pool's
    idle grace and billing minimum, beyond what it keeps: terminated before they are ready
    (see :func:`~bridgehead.domain.capacity._cancel`)."""
    failed_boots: tuple[str, ...] = ()
    """Nodes past their pool's boot timeout: to be terminated, and counted against the pool."""
    forgotten: tuple[str, ...] = ()
    """Nodes still ``requested`` after their pool's boot timeout (no agent asked a provider for
    them): ended, never billed, and not counted against the pool (no boot failed)."""


def plan(demand: Sequence[Demand], pools: Sequence[PoolState], now: float) -> Plan:
    """The plan for this pass (see the module's docstring); the same inputs give the same
    plan."""
    states = sorted(pools, key=lambda s: s.pool.name)
    failed = _failed_boots(states, now)
    forgotten = _forgotten(states, now)
    bins = _bins(states, now, failed | forgotten)
    packer = _Packer(states, bins, now)
    placements: dict[str, tuple[str, ...]] = {}
    waiting: dict[str, str] = {}
    unplaceable: dict[str, str] = {}
    start: list[str] = []
    for d in sorted(demand, key=_order(states, now)):
        fit = packer.fit(d)
        if not fit:
            unplaceable[d.job_id] = _why_unfit(d, packer.of_cluster(d.cluster))
            continue
        known = packer.known_wait(d, fit)
        if known is not None:
            waiting[d.job_id] = known
            continue
        chosen = packer.first_fit(d, fit)
        if chosen is None:
            got, why = packer.buy(d, fit)
            if got is None:
                packer.waits(d)
                waiting[d.job_id] = why
                continue
            placements[d.job_id] = got
            continue
        placements[d.job_id] = tuple(b.id for b in chosen)
        if all(b.tier in (READY_TIER, CORDONED_TIER) for b in chosen):
            start.append(d.job_id)
    for name in packer.probes:  # a probe for a gang the probing pool cannot buy for yet
        packer.bought[name] = max(packer.bought.get(name, 0), 1)
    spares = _spares(states, bins)
    launch = _floor_and_reserve(states, bins, packer.bought, now, packer.live, spares)
    starved = {d.cluster for d in demand if d.job_id in waiting}
    cordon, terminate = _release(states, bins, placements, now, packer.live, starved)
    cancel = _cancel(states, bins, placements, now, packer.live, spares, starved)
    used = {node for nodes in placements.values() for node in nodes}
    uncordon = tuple(sorted(b.id for b in bins if b.tier == CORDONED_TIER and b.id in used))
    return Plan(launch={p: n for p, n in sorted(launch.items()) if n}, placements=placements,
                start=tuple(start), waiting=waiting, unplaceable=unplaceable,
                uncordon=uncordon, cordon=cordon, terminate=terminate, cancel=cancel,
                failed_boots=tuple(sorted(failed)), forgotten=tuple(sorted(forgotten)))


def _largest_first(d: Demand) -> tuple[int, int, int, str]:
    return (-d.cores * d.nodes, -d.memory_mb * d.nodes, -d.gpus * d.nodes, d.job_id)


_Key = tuple[int, float, int, int, int, str]


def _order(states: Sequence[PoolState], now: float) -> Callable[[Demand], _Key]:
    """The planning order: jobs queued longer than their cluster's ``fifo_after_s`` (the
    least of its pools') first, oldest first; then the others largest first. Largest first
    alone packs best, but while capacity is short (a shortage, a backoff) the large jobs
    arriving take every node that frees and a small one waits for all of them."""
    after: dict[str, float] = {}
    for s in states:
        after[s.pool.cluster] = min(after.get(s.pool.cluster, math.inf), s.pool.fifo_after_s)

    def key(d: Demand) -> _Key:
        if d.queued_at is not None and now - d.queued_at > after.get(d.cluster, math.inf):
            return (0, d.queued_at, 0, 0, 0, d.job_id)
        return (1, 0.0, *_largest_first(d))

    return key


def _fits_shape(d: Demand, pool: Pool) -> bool:
    s = pool.shape
    return (d.cores <= s.cpus and d.memory_mb <= s.memory_mb and d.gpus <= s.gpus
            and d.nodes <= pool.max_nodes)


def _why_unfit(d: Demand, pools: Sequence[PoolState]) -> str:
    if not pools:
        return f"cluster {d.cluster!r} has no pool"
    shapes = ", ".join(f"{s.pool.name}: {s.pool.shape.cpus} cpus, {s.pool.shape.memory_mb} MB, "
                       f"{s.pool.shape.gpus} gpus x {s.pool.max_nodes} nodes" for s in pools)
    return (f"asks for {d.nodes} node(s) of {d.cores} cores, {d.memory_mb} MB, {d.gpus} gpus: "
            f"larger than any pool of cluster {d.cluster!r} ({shapes})")


_Shape = tuple[str, int, int, int, int]
"""A demand's cluster, cores, memory, gpus and nodes: all the packing looks at."""


def _shape(d: Demand) -> _Shape:
    return (d.cluster, d.cores, d.memory_mb, d.gpus, d.nodes)


@dataclass(slots=True)
class _Bucket:
    """The bins of one cluster with one (tier, load), in (pool, rank, id) order, and an upper bound
    of their free capacity (stale only ever high, so it can skip the bucket, never a fit)."""

    keys: list[tuple[str, float, str]] = field(default_factory=list)
    bins: list[_Bin] = field(default_factory=list)
    cores: float = -math.inf
    memory_mb: float = -math.inf
    gpus: float = -math.inf


class _Packer:
    """The bins of one pass, indexed so that first fit costs what it finds, not the whole
    cluster per job: bins sit in buckets by (tier, load) whose order is the placement order
    (tier, the busiest first, pool, id); a bucket whose bound cannot hold the job is skipped.

    Capacity only shrinks during a pass except when a node is bought, so a job shape that
    found no room and could buy nothing (a *wait*) means every job at least as large, in every
    resource and in nodes, waits too until the cluster's next purchase: those are answered
    without packing (10k queued jobs against full pools cost a lookup each)."""

    def __init__(self, states: Sequence[PoolState], bins: list[_Bin], now: float) -> None:
        self.now = now
        self.bins = bins
        self.bought: dict[str, int] = {}
        self.states = {s.pool.name: s for s in states}
        self.cluster_of = {s.pool.name: s.pool.cluster for s in states}
        self._clusters: dict[str, list[PoolState]] = {}
        for s in states:
            self._clusters.setdefault(s.pool.cluster, []).append(s)
        self.live = {s.pool.name: _live(s) for s in states}
        self._recent = {s.pool.name: _recent(s, now) for s in states}
        self._buckets: dict[str, dict[tuple[int, int], _Bucket]] = {}
        self._order: dict[str, list[_Bucket]] = {}
        self._fit: dict[_Shape, list[PoolState]] = {}
        self._by_cost: dict[_Shape, list[PoolState]] = {}
        self._waits: dict[str, list[_Shape]] = {}
        self._known: dict[str, dict[_Shape, str | None]] = {}
        """:meth:`known_wait`'s answers per cluster, until its next wait or purchase."""
        self.found: list[_Bin] = []
        self.probes: set[str] = set()
        """Probing pools a job could not buy enough from: each gets its probe (one node)."""
        self._full_why: dict[str, str] = {}
        """What the last :meth:`first_fit` that failed found, in placement order."""
        groups: dict[tuple[str, int, int], list[_Bin]] = {}
        for b in bins:
            groups.setdefault((self.cluster_of[b.pool], b.tier, b.load), []).append(b)
        for (cluster, tier, load), members in groups.items():
            members.sort(key=lambda b: (b.pool, b.rank, b.id))
            self._buckets.setdefault(cluster, {})[(tier, load)] = _Bucket(
                keys=[(b.pool, b.rank, b.id) for b in members], bins=members,
                cores=max(b.cores for b in members),
                memory_mb=max(b.memory_mb for b in members),
                gpus=max(b.gpus for b in members))
        self._ranks: dict[str, list[tuple[int, int]]] = {}
        """Each cluster's (tier, -load) of its buckets, in ``_order``'s order."""
        for cluster, buckets in self._buckets.items():
            self._ranks[cluster] = sorted((tier, -load) for tier, load in buckets)
            self._order[cluster] = [buckets[(tier, -load)] for tier, load in
                                    self._ranks[cluster]]

    def of_cluster(self, cluster: str) -> list[PoolState]:
        return self._clusters.get(cluster, [])

    def fit(self, d: Demand) -> list[PoolState]:
        key = _shape(d)
        if key not in self._fit:
            self._fit[key] = [s for s in self.of_cluster(d.cluster) if _fits_shape(d, s.pool)]
        return self._fit[key]

    # -- the wait memo ----------------------------------------------------------------------
    def known_wait(self, d: Demand, fit: Sequence[PoolState]) -> str | None:
        """Why ``d`` waits, if a job no larger waited since the cluster's last purchase:
        what :meth:`buy` would say, the refusal of the last pool it tries. Answered once per
        job shape until the cluster's next wait or purchase (10k jobs have a few hundred)."""
        key = _shape(d)
        known = self._known.setdefault(d.cluster, {})
        if key in known:
            return known[key]
        _, cores, memory, gpus, nodes = key
        why = None
        if any(cores >= c and memory >= m and gpus >= g and nodes >= n
               for _, c, m, g, n in self._waits.get(d.cluster, ())):
            last = self._cheapest(d, fit)[-1]
            why = self._blocked(last) or self._full(last.pool)
        known[key] = why
        return why

    def waits(self, d: Demand) -> None:
        self._waits.setdefault(d.cluster, []).append(_shape(d))
        self._known.pop(d.cluster, None)

    # -- the index --------------------------------------------------------------------------
    def _index(self, b: _Bin) -> None:
        cluster = self.cluster_of[b.pool]
        buckets = self._buckets.setdefault(cluster, {})
        bucket = buckets.get((b.tier, b.load))
        if bucket is None:
            bucket = buckets[(b.tier, b.load)] = _Bucket()
            ranks = self._ranks.setdefault(cluster, [])
            at = bisect.bisect_left(ranks, (b.tier, -b.load))
            ranks.insert(at, (b.tier, -b.load))
            self._order.setdefault(cluster, []).insert(at, bucket)
        key = (b.pool, b.rank, b.id)
        at = bisect.bisect_left(bucket.keys, key)
        bucket.keys.insert(at, key)
        bucket.bins.insert(at, b)
        bucket.cores = max(bucket.cores, b.cores)
        bucket.memory_mb = max(bucket.memory_mb, b.memory_mb)
        bucket.gpus = max(bucket.gpus, b.gpus)

    def _take(self, b: _Bin, d: Demand) -> None:
        bucket = self._buckets[self.cluster_of[b.pool]][(b.tier, b.load)]
        at = bisect.bisect_left(bucket.keys, (b.pool, b.rank, b.id))
        del bucket.keys[at]
        del bucket.bins[at]
        b.take(d)
        self._index(b)

    def first_fit(self, d: Demand, fit: Sequence[PoolState]) -> list[_Bin] | None:
        """``d.nodes`` distinct nodes that each fit ``d``, from the first tier on (the busiest
        first within a tier), taken; None (nothing taken) if there are not enough, and the
        fewer ones found are in ``found`` for :meth:`buy`."""
        names = {s.pool.name for s in fit}
        chosen: list[_Bin] = []
        seen: set[str] = set()
        for bucket in self._order.get(d.cluster, ()):
            if bucket.cores < d.cores or bucket.memory_mb < d.memory_mb or bucket.gpus < d.gpus:
                continue
            cores = memory = gpus = -math.inf
            for b in bucket.bins:  # max() by hand: this loop is the pass's hottest
                if b.cores > cores:
                    cores = b.cores
                if b.memory_mb > memory:
                    memory = b.memory_mb
                if b.gpus > gpus:
                    gpus = b.gpus
                if b.pool in names and b.id not in seen and b.fits(d):
                    chosen.append(b)
                    seen.add(b.id)
                    if len(chosen) == d.nodes:
                        for c in chosen:
                            self._take(c, d)
                        return chosen
            bucket.cores, bucket.memory_mb, bucket.gpus = cores, memory, gpus
        self.found = chosen
        return None

    # -- buying -----------------------------------------------------------------------------
    def _cheapest(self, d: Demand, fit: Sequence[PoolState]) -> list[PoolState]:
        key = _shape(d)
        if key not in self._by_cost:
            self._by_cost[key] = sorted(fit, key=lambda s: (_cost_rate(d, s.pool), s.pool.name))
        return self._by_cost[key]

    def _room(self, pool: Pool) -> int:
        bought = self.bought.get(pool.name, 0)
        room = min(pool.max_nodes - self.live[pool.name] - bought,
                   pool.launches_per_minute - self._recent[pool.name] - bought)
        if self.states[pool.name].probing:
            room = min(room, _probe_room(self.states[pool.name]) - bought)
        return room

    def _blocked(self, s: PoolState) -> str | None:
        """Why pool ``s`` can buy nothing now, whatever the job; None if it can."""
        pool = s.pool
        if not pool.elastic:
            return f"pool {pool.name} is static and full"
        if s.quarantined:
            return f"pool {pool.name} is quarantined after failed boots"
        if self.now < s.backoff_until:
            return f"pool {pool.name} is backing off after a failed boot or a capacity shortage"
        return None

    def _full(self, pool: Pool) -> str:
        """Why ``pool`` cannot grow enough: the same until it buys (one string per pool, not
        one per waiting job)."""
        why = self._full_why.get(pool.name)
        if why is None:
            why = self._full_why[pool.name] = (
                f"pool {pool.name} probes after a capacity shortage, one node at a time until "
                f"the provider takes one: fewer than the job needs"
                if self.states[pool.name].probing else
                f"pool {pool.name} can add {max(self._room(pool), 0)} node(s) now (max_nodes "
                f"{pool.max_nodes}, {pool.launches_per_minute} launches a minute): fewer than "
                f"the job needs")
        return why

    def buy(self, d: Demand, fit: Sequence[PoolState]) -> tuple[tuple[str, ...] | None, str]:
        """Place ``d`` on the cheapest pool that can grow to hold it: what that pool has room
        for first (a gang waits for no node it can already have), then new nodes for the
        rest. (None, why) if no pool can."""
        why = "no pool of its cluster can grow now"
        for s in self._cheapest(d, fit):
            blocked = self._blocked(s)
            if blocked is not None:
                why = blocked
                continue
            pool = s.pool
            new = [b for b in self.found if b.pool == pool.name]
            if d.nodes - len(new) > self._room(pool):
                if s.probing and self._room(pool) >= 1:
                    self.probes.add(pool.name)
                why = self._full(pool)
                continue
            for _ in range(d.nodes - len(new)):
                k = self.bought.get(pool.name, 0)
                self.bought[pool.name] = k + 1
                shape = pool.shape
                fresh = _Bin(f"new:{pool.name}:{k}", pool.name, NEW_TIER, shape.cpus,
                             shape.memory_mb, shape.gpus)
                self.bins.append(fresh)
                self._index(fresh)
                new.append(fresh)
            self._waits.pop(pool.cluster, None)  # a purchase: room where there was none
            self._known.pop(pool.cluster, None)
            self._full_why.pop(pool.name, None)
            chosen = new[:d.nodes]
            for b in chosen:
                self._take(b, d)
            return tuple(b.id for b in chosen), ""
        return None, why


def _cost_rate(d: Demand, pool: Pool) -> float:
    """The pool's price for the share of one node the job takes (its dominant resource)."""
    s = pool.shape
    share = max(d.cores / s.cpus, d.memory_mb / s.memory_mb,
                d.gpus / s.gpus if s.gpus else 0.0)
    return pool.price_per_hour * share


def busy_nodes(plan_: Plan, running: Iterable[Running]) -> set[str]:
    """The nodes with a job on them or placed on them by ``plan_``: never released."""
    return ({r.node_id for r in running}
            | {node for nodes in plan_.placements.values() for node in nodes})
