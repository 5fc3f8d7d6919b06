"""The planner packs through an index (buckets by tier and load, a memo of job shapes that
wait) so a pass over 10k queued jobs and 100 pools stays within its budget. This checks it
changes nothing: on random pools, nodes, running jobs and queues (gangs, several clusters,
static, quarantined and backing-off pools, rate limits, failed boots, capacity that frees
soon), its plan equals the one of the simple planner it replaced, copied below, which sorts
every bin for every job."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from bridgehead.domain.capacity import (
    COMING_TIER,
    CORDONED_TIER,
    NEW_TIER,
    READY_TIER,
    _Bin,
    _bins,
    _cancel,
    _failed_boots,
    _forgotten,
    _live,
    _recent,
    _release,
)
from bridgehead.domain.planner import (
    Demand,
    Plan,
    PoolState,
    Running,
    _cost_rate,
    _fits_shape,
    _order,
    _why_unfit,
    plan,
)
from bridgehead.domain.pools import CapacityType, Node, NodeShape, NodeState, Pool
from bridgehead.pools.traces import planner_load


# -- the reference: the planner as it was before the index (commit cadb946), with the rules added
# since: empty nodes idled last first (rank), no release while a pool backing off or probing
# has jobs waiting (starved), one node at a time while probing after a shortage (probes) ---
def reference_plan(demand: Sequence[Demand], pools: Sequence[PoolState], now: float) -> Plan:
    states = sorted(pools, key=lambda s: s.pool.name)
    failed = _failed_boots(states, now)
    forgotten = _forgotten(states, now)
    bins = _bins(states, now, failed | forgotten)
    placements: dict[str, tuple[str, ...]] = {}
    waiting: dict[str, str] = {}
    unplaceable: dict[str, str] = {}
    bought: dict[str, int] = {}
    probes: set[str] = set()
    start: list[str] = []
    for d in sorted(demand, key=_order(states, now)):
        mine = [s for s in states if s.pool.cluster == d.cluster]
        fit = [s for s in mine if _fits_shape(d, s.pool)]
        if not fit:
            unplaceable[d.job_id] = _why_unfit(d, mine)
            continue
        names = {s.pool.name for s in fit}
        chosen = _ref_first_fit(d, [b for b in bins if b.pool in names])
        if chosen is None:
            got, why = _ref_buy(d, fit, bins, bought, now, probes)
            if got is None:
                waiting[d.job_id] = why
                continue
            placements[d.job_id] = got
            continue
        placements[d.job_id] = tuple(b.id for b in chosen)
        if all(b.tier in (READY_TIER, CORDONED_TIER) for b in chosen):
            start.append(d.job_id)
    for name in probes:
        bought[name] = max(bought.get(name, 0), 1)
    spares = _ref_spares(states, bins)
    launch = _ref_floor_and_reserve(states, bins, bought, now, spares)
    starved = {d.cluster for d in demand if d.job_id in waiting}
    cordon, terminate = _release(states, bins, placements, now, starved=starved)
    live = {s.pool.name: _live(s) for s in states}
    cancel = _cancel(states, bins, placements, now, live, spares, starved)
    used = {node for nodes in placements.values() for node in nodes}
    uncordon = tuple(sorted(b.id for b in bins if b.tier == CORDONED_TIER and b.id in used))
    return Plan(launch={p: n for p, n in sorted(launch.items()) if n}, placements=placements,
                start=tuple(start), waiting=waiting, unplaceable=unplaceable,
                uncordon=uncordon, cordon=cordon, terminate=terminate, cancel=cancel,
                failed_boots=tuple(sorted(failed)), forgotten=tuple(sorted(forgotten)))


def _ref_first_fit(d: Demand, bins: Sequence[_Bin]) -> list[_Bin] | None:
    chosen: list[_Bin] = []
    seen: set[str] = set()
    for b in sorted(bins, key=lambda b: (b.tier, -b.load, b.pool, b.rank, b.id)):
        if b.id not in seen and b.fits(d):
            chosen.append(b)
            seen.add(b.id)
            if len(chosen) == d.nodes:
                for c in chosen:
                    c.take(d)
                return chosen
    return None


def _ref_buy(d: Demand, fit: Sequence[PoolState], bins: list[_Bin], bought: dict[str, int],
             now: float, probes: set[str]) -> tuple[tuple[str, ...] | None, str]:
    why = "no pool of its cluster can grow now"
    for s in sorted(fit, key=lambda s: (_cost_rate(d, s.pool), s.pool.name)):
        pool = s.pool
        if not pool.elastic:
            why = f"pool {pool.name} is static and full"
            continue
        if s.quarantined:
            why = f"pool {pool.name} is quarantined after failed boots"
            continue
        if now < s.backoff_until:
            why = f"pool {pool.name} is backing off after a failed boot or a capacity shortage"
            continue
        new: list[_Bin] = []
        for b in sorted(bins, key=lambda b: (b.tier, -b.load, b.pool, b.rank, b.id)):
            if b.pool == pool.name and b.id not in {n.id for n in new} and b.fits(d):
                new.append(b)
        new = new[:d.nodes]
        missing = d.nodes - len(new)
        room = min(pool.max_nodes - _live(s) - bought.get(pool.name, 0),
                   pool.launches_per_minute - _recent(s, now) - bought.get(pool.name, 0))
        if s.probing:
            room = min(room, _ref_probe_room(s) - bought.get(pool.name, 0))
        if missing > room:
            if s.probing and room >= 1:
                probes.add(pool.name)
            why = (f"pool {pool.name} probes after a capacity shortage, one node at a time "
                   f"until the provider takes one: fewer than the job needs" if s.probing else
                   f"pool {pool.name} can add {max(room, 0)} node(s) now (max_nodes "
                   f"{pool.max_nodes}, {pool.launches_per_minute} launches a minute): fewer "
                   f"than the job needs")
            continue
        for _ in range(missing):
            k = bought.get(pool.name, 0)
            bought[pool.name] = k + 1
            shape = pool.shape
            fresh = _Bin(f"new:{pool.name}:{k}", pool.name, NEW_TIER, shape.cpus,
                         shape.memory_mb, shape.gpus)
            bins.append(fresh)
            new.append(fresh)
        chosen = new[:d.nodes]
        for b in chosen:
            b.take(d)
        return tuple(b.id for b in chosen), ""
    return None, why


def _ref_probe_room(s: PoolState) -> int:
    asked = [n for n in s.nodes if n.state in (NodeState.REQUESTED, NodeState.LAUNCHING)]
    return 1 - len(asked)


def _ref_spares(states: Sequence[PoolState], bins: Sequence[_Bin]) -> dict[str, int]:
    """boot_spares x the nodes on their way (or bought now) that a placed job waits on."""
    out = {}
    for s in states:
        awaited = sum(1 for b in bins if b.pool == s.pool.name and b.tier in (
            COMING_TIER, NEW_TIER) and (b.load > 0 or b.cores < s.pool.shape.cpus))
        out[s.pool.name] = math.ceil(s.pool.boot_spares * awaited)
    return out


def _ref_floor_and_reserve(states: Sequence[PoolState], bins: Sequence[_Bin],
                           bought: dict[str, int], now: float,
                           spares: dict[str, int]) -> dict[str, int]:
    launch = dict(bought)
    for s in states:
        pool = s.pool
        if not pool.elastic or s.quarantined or now < s.backoff_until:
            continue
        have = _live(s) + launch.get(pool.name, 0)
        empty = sum(1 for b in bins if b.pool == pool.name and b.tier in (
            READY_TIER, COMING_TIER, NEW_TIER) and b.load == 0 and b.cores == pool.shape.cpus)
        want = max(pool.min_nodes - have, pool.warm_idle + spares[pool.name] - empty, 0)
        room = min(pool.max_nodes - have,
                   pool.launches_per_minute - _recent(s, now) - launch.get(pool.name, 0))
        if s.probing:
            room = min(room, _ref_probe_room(s) - launch.get(pool.name, 0))
        launch[pool.name] = launch.get(pool.name, 0) + max(min(want, room), 0)
    return launch


# -- random inputs ------------------------------------------------------------------------------
STATES = [NodeState.IDLE, NodeState.BUSY, NodeState.BUSY, NodeState.BOOTING, NodeState.LAUNCHING,
          NodeState.REQUESTED, NodeState.CORDONED, NodeState.TERMINATING, NodeState.ORPHAN]


def random_inputs(seed: int, pools: int, jobs: int) -> tuple[list[Demand], list[PoolState]]:
    rng = random.Random(seed)
    clusters = [f"c{i}" for i in range(rng.randint(1, 3))]
    states = []
    for p in range(pools):
        cpus = rng.choice([2, 4, 8, 16])
        static = rng.random() < 0.1
        size = rng.randint(0, 6)
        pool = Pool(name=f"p{p:02d}", cluster=rng.choice(clusters), provider="sim",
                    shape=NodeShape(cpus=cpus, memory_mb=cpus * 1000, gpus=rng.choice([0, 0, 2])),
                    capacity_type=CapacityType.STATIC if static else rng.choice(
                        [CapacityType.ON_DEMAND, CapacityType.SPOT]),
                    price_per_hour=rng.choice([0.5, 1.0, 1.0, 2.5]),
                    min_nodes=size if static else rng.randint(0, 1),
                    max_nodes=size if static else rng.randint(1, 8),
                    warm_idle=rng.choice([0, 0, 1]), launches_per_minute=rng.randint(1, 6),
                    expected_boot_s=rng.choice([0.0, 60.0]), idle_grace_s=rng.choice([0.0, 100.0]),
                    boot_timeout_s=rng.choice([50.0, 600.0]),
                    slow_boot_factor=rng.choice([0.0, 2.0, 10.0]),
                    fifo_after_s=rng.choice([0.0, 120.0, 1000.0]),
                    boot_spares=rng.choice([0.0, 0.0, 0.3, 1.0]))
        nodes, running = [], []
        for k in range(rng.randint(0, 6)):
            nid = f"{pool.name}-n{k}"
            state = rng.choice(STATES)
            jobs_on: frozenset[str] = frozenset()
            if state is NodeState.BUSY:
                for r in range(rng.randint(1, 2)):
                    c = rng.randint(1, cpus)
                    running.append(Running(node_id=nid, cores=c, memory_mb=c * rng.choice(
                        [0, 500, 1000]), ends_at=rng.choice([30.0, 200.0, float("inf")])))
                    jobs_on |= {f"r-{nid}-{r}"}
            since = rng.choice([-500.0, -60.0, 0.0])
            nodes.append(Node(id=nid, pool=pool.name, state=state, since=since,
                              launched_at=since, jobs=jobs_on))
        states.append(PoolState(pool=pool, nodes=tuple(nodes), running=tuple(running),
                                launches=tuple(rng.choice([-90.0, -10.0])
                                               for _ in range(rng.randint(0, 3))),
                                backoff_until=rng.choice([0.0, 0.0, 0.0, 50.0]),
                                quarantined=rng.random() < 0.1,
                                probing=rng.random() < 0.15))
    demand = [Demand(job_id=f"j{i:03d}", cluster=rng.choice([*clusters, "nowhere"]
                                                              if rng.random() < 0.05 else clusters),
                     cores=rng.choice([1, 1, 2, 3, 4, 8, 16]),
                     memory_mb=rng.choice([0, 500, 2000, 8000]), gpus=rng.choice([0, 0, 0, 1]),
                     nodes=rng.choice([1, 1, 1, 2, 3, 5]), runtime_s=600.0,
                     queued_at=rng.choice([None, -600.0, -300.0, -60.0, 0.0]))
              for i in range(jobs)]
    return demand, states


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), pools=st.integers(1, 8), jobs=st.integers(0, 60))
def test_the_indexed_planner_gives_the_reference_plan(seed: int, pools: int, jobs: int) -> None:
    demand, states = random_inputs(seed, pools, jobs)
    assert plan(demand, states, 0.0) == reference_plan(demand, states, 0.0)


def test_the_same_on_a_large_queue() -> None:
    """Hundreds of jobs against full pools: the wait memo answers most of them."""
    for seed in range(3):
        demand, states = random_inputs(seed, 25, 600)
        got = plan(demand, states, 0.0)
        assert got == reference_plan(demand, states, 0.0)
        assert got.waiting and got.placements  # both paths ran


def test_the_same_on_the_benchmarks_load() -> None:
    """bench/autoscale.py's pass (``traces.planner_load``), scaled down: thousands of jobs of
    a few hundred shapes, most answered by the memo of waits per shape."""
    for seed in range(2):
        demand, states = planner_load(seed, pools=20, jobs=1500)
        got = plan(demand, states, 0.0)
        assert got == reference_plan(demand, states, 0.0)
        assert len(got.waiting) > len(got.placements) > 0


def test_a_purchase_ends_what_the_wait_memo_knows() -> None:
    """"a" (a gang of 2) waits; "b" buys a node in y; "c", the same shape as "a", now gets a
    gang across x's last core and y's new node: the memo must not answer for it."""
    shape = NodeShape(cpus=4, memory_mb=4000)
    x = Pool(name="x", cluster="c", provider="sim", shape=shape, max_nodes=2,
             launches_per_minute=1)
    y = Pool(name="y", cluster="c", provider="sim", shape=shape, max_nodes=2,
             launches_per_minute=1)
    busy = Node(id="x1", pool="x", state=NodeState.BUSY, since=0.0, jobs=frozenset({"r"}))
    states = [PoolState(pool=x, nodes=(busy,), running=(Running(node_id="x1", cores=3),),
                        launches=(-1.0,)),
              PoolState(pool=y)]
    demand = [Demand(job_id="a", cluster="c", cores=1, nodes=2),
              Demand(job_id="b", cluster="c", cores=2, nodes=1),
              Demand(job_id="c", cluster="c", cores=1, nodes=2)]
    got = plan(demand, states, 0.0)
    assert got == reference_plan(demand, states, 0.0)
    assert "a" in got.waiting and got.placements == {"b": ("new:y:0",),
                                                     "c": ("x1", "new:y:0")}


def test_a_job_past_its_estimate_is_not_counted_on_to_free_soon() -> None:
    shape = NodeShape(cpus=4, memory_mb=4000)
    p = Pool(name="p", cluster="c", provider="sim", shape=shape, expected_boot_s=60.0)
    busy = Node(id="n", pool="p", state=NodeState.BUSY, since=0.0, jobs=frozenset({"r"}))
    demand = [Demand(job_id="j", cluster="c", cores=4)]

    def at(now: float) -> Plan:
        state = PoolState(pool=p, nodes=(busy,), running=(Running(node_id="n", cores=4,
                                                                  ends_at=100.0),))
        return plan(demand, [state], now)

    assert at(70.0).placements == {"j": ("n",)} and at(70.0).launch == {}  # ends in 30 s
    assert at(100.0).placements == {"j": ("n",)}  # due now
    assert at(130.0).placements == {"j": ("new:p:0",)} and at(130.0).launch == {"p": 1}
