"""Pools, nodes, the planner, the reconciler and cost: the pure domain, case by case."""

from __future__ import annotations

import pytest

from bridgehead.domain.costs import Allocation, BillingWeights, bill_node, billed_seconds, share
from bridgehead.domain.planner import Demand, PoolState, Running, plan
from bridgehead.domain.pool_reconcile import ProviderNode, reconcile
from bridgehead.domain.pools import (
    InvalidPool,
    Node,
    NodeShape,
    NodeState,
    NodeTransitionError,
    Pool,
    pool_from_dict,
)

SMALL = {"name": "small", "cluster": "c", "provider": "sim", "price_per_hour": 1.0,
         "shape": {"cpus": 4, "memory_mb": 8000}, "max_nodes": 4, "idle_grace_s": 60.0,
         "expected_boot_s": 40.0, "boot_timeout_s": 300.0}


def pool(**over: object) -> Pool:
    return pool_from_dict({**SMALL, **over})


def node(node_id: str, state: NodeState, since: float = 0.0, **kw: object) -> Node:
    return Node(id=node_id, pool=str(kw.pop("pool", "small")), state=state, since=since,
                launched_at=kw.pop("launched_at", since), **kw)  # type: ignore[arg-type]


def job(job_id: str, cores: int = 1, nodes: int = 1, **kw: object) -> Demand:
    return Demand(job_id=job_id, cluster="c", cores=cores, nodes=nodes, **kw)  # type: ignore[arg-type]


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(("over", "message"), [
    ({"min_nodes": 5}, "min_nodes: min_nodes (5) is more than max_nodes (4)"),
    ({"price_per_hour": -1}, "price_per_hour: must be a number >= 0"),
    ({"price_per_hour": float("nan")}, "price_per_hour: must be a number >= 0"),
    ({"slow_boot_factor": -1}, "slow_boot_factor: must be a number >= 0"),
    ({"fifo_after_s": "2m"}, "fifo_after_s: must be a number >= 0"),
    ({"boot_spares": -0.1}, "boot_spares: must be a number >= 0"),
    ({"provider": "ec3"}, "provider: unknown provider 'ec3' (known: slurm_powersave, "),
    ({"max_nodes": "4"}, "max_nodes: must be an integer >= 0"),
    ({"max_nodes": True}, "max_nodes: must be an integer >= 0"),
    ({"shape": {"cpus": 0, "memory_mb": 1}}, "shape.cpus: must be an integer >= 1"),
    ({"shape": {"cpus": 1, "memory_mb": 1, "disk": 9}}, "shape: must be a table of cpus, "),
    ({"capacity_type": "reserved"}, "capacity_type: must be one of on_demand, spot, static"),
    ({"capacity_type": "static"}, "min_nodes: a static pool has a fixed size"),
    ({"billing_granularity_s": 0}, "billing_granularity_s: must be more than 0"),
    ({"colour": "red"}, "colour: unknown field 'colour'"),
])
def test_a_bad_pool_is_refused_naming_its_field(over: dict, message: str) -> None:
    with pytest.raises(InvalidPool) as caught:
        pool_from_dict({**SMALL, **over}, ("pools", 0))
    assert caught.value.message.startswith(f"pools[0].{message}"), caught.value.message


def test_a_missing_field_is_named() -> None:
    with pytest.raises(InvalidPool, match=r"^provider: is required$"):
        pool_from_dict({k: v for k, v in SMALL.items() if k != "provider"})


# -- the node lifecycle ------------------------------------------------------------------------
def test_a_node_with_a_job_is_never_cordoned_or_terminated() -> None:
    busy = node("n1", NodeState.BUSY, jobs=frozenset({"j1"}))
    with pytest.raises(NodeTransitionError):
        busy.to(NodeState.CORDONED, 1.0)
    idle_with_job = node("n2", NodeState.IDLE, jobs=frozenset({"j1"}))
    with pytest.raises(NodeTransitionError, match="has jobs"):
        idle_with_job.to(NodeState.CORDONED, 1.0)
    cordoned = node("n3", NodeState.IDLE).to(NodeState.CORDONED, 1.0)
    assert cordoned.to(NodeState.TERMINATING, 2.0).to(NodeState.TERMINATED, 3.0).ended_at == 3.0


def test_stamps_follow_the_lifecycle() -> None:
    n = Node(id="n", pool="small", state=NodeState.REQUESTED, since=0.0)
    n = n.to(NodeState.LAUNCHING, 1.0).to(NodeState.BOOTING, 2.0).to(NodeState.IDLE, 30.0)
    assert (n.launched_at, n.ready_at, n.ended_at) == (1.0, 30.0, None)
    with pytest.raises(NodeTransitionError):
        n.to(NodeState.BOOTING, 31.0)


# -- the planner --------------------------------------------------------------------------------
def test_packs_into_the_busiest_node_first_and_buys_only_the_rest() -> None:
    nodes = (node("a", NodeState.BUSY, jobs=frozenset({"r1"})), node("b", NodeState.IDLE))
    running = (Running(node_id="a", cores=2, ends_at=10_000.0),)
    p = plan([job("j1", 2), job("j2", 4), job("j3", 4)],
             [PoolState(pool=pool(), nodes=nodes, running=running)], now=0.0)
    assert p.placements == {"j2": ("b",), "j3": ("new:small:0",), "j1": ("a",)}
    assert p.launch == {"small": 1} and p.cordon == () and p.terminate == ()
    assert p.start == ("j2", "j1")  # j3 waits for its node to boot


def test_waits_for_capacity_that_frees_before_a_boot_instead_of_buying() -> None:
    nodes = (node("a", NodeState.BUSY, jobs=frozenset({"r1"})),)
    soon = PoolState(pool=pool(), nodes=nodes, running=(Running(node_id="a", cores=4,
                                                                ends_at=30.0),))
    waits = plan([job("j1", 4)], [soon], now=0.0)
    assert waits.launch == {} and waits.placements == {"j1": ("a",)} and waits.start == ()
    later = PoolState(pool=pool(), nodes=nodes, running=(Running(node_id="a", cores=4,
                                                                 ends_at=100.0),))
    assert plan([job("j1", 4)], [later], now=0.0).launch == {"small": 1}


def test_a_gang_is_all_or_nothing_and_takes_the_cheapest_pool() -> None:
    spot = pool(name="spot", price_per_hour=0.3, max_nodes=2)
    dear = pool(name="dear", price_per_hour=1.0, max_nodes=8)
    p = plan([job("g", 4, nodes=3), job("s", 1)], [PoolState(pool=spot), PoolState(pool=dear)],
             now=0.0)
    assert p.placements["g"] == ("new:dear:0", "new:dear:1", "new:dear:2")  # spot holds 2
    assert p.placements["s"] == ("new:spot:0",)  # the cheapest per packed job-second
    assert p.launch == {"dear": 3, "spot": 1}
    assert "larger than any pool" in plan([job("g", 4, nodes=3)], [PoolState(pool=spot)],
                                          now=0.0).unplaceable["g"]
    taken = tuple(node(f"b{i}", NodeState.BUSY, jobs=frozenset({f"r{i}"})) for i in range(3))
    held = tuple(Running(node_id=n.id, cores=4) for n in taken)
    full = plan([job("g", 4, nodes=3)], [PoolState(pool=pool(), nodes=taken, running=held)],
                now=0.0)  # max_nodes 4, 3 taken: it buys none of the 3 it needs
    assert full.launch == {} and full.placements == {}
    assert "can add 1 node(s)" in full.waiting["g"]


def test_a_job_no_pool_can_hold_is_unplaceable_with_the_shapes() -> None:
    p = plan([job("huge", 64)], [PoolState(pool=pool())], now=0.0)
    assert p.unplaceable["huge"].startswith("asks for 1 node(s) of 64 cores")
    assert "small: 4 cpus" in p.unplaceable["huge"] and p.launch == {}


def test_bounds_rate_limit_backoff_and_quarantine() -> None:
    demand = [job(f"j{i}", 4) for i in range(10)]
    assert plan(demand, [PoolState(pool=pool())], 0.0).launch == {"small": 4}  # max_nodes
    limited = pool(launches_per_minute=2)
    recent = PoolState(pool=limited, launches=(-30.0,))
    assert plan(demand, [recent], 0.0).launch == {"small": 1}
    assert plan(demand, [PoolState(pool=pool(), backoff_until=10.0)], 0.0).launch == {}
    other = pool(name="other", price_per_hour=5.0)
    p = plan(demand[:1], [PoolState(pool=pool(), quarantined=True), PoolState(pool=other)], 0.0)
    assert p.launch == {"other": 1}  # the plan moves to the next pool


def test_releases_only_empty_nodes_past_their_grace_beyond_floor_and_reserve() -> None:
    p0 = pool(min_nodes=1, warm_idle=1)
    nodes = (node("a", NodeState.IDLE, since=0.0), node("b", NodeState.IDLE, since=0.0),
             node("c", NodeState.IDLE, since=50.0), node("d", NodeState.IDLE, since=0.0),
             node("e", NodeState.CORDONED, since=0.0))
    p = plan([], [PoolState(pool=p0, nodes=nodes)], now=100.0)
    # c, within its grace, is the one kept idle (for min_nodes and warm_idle alike)
    assert p.cordon == ("a", "b", "d") and p.terminate == ("e",)
    grace = plan([], [PoolState(pool=p0, nodes=nodes[:2])], now=50.0)
    assert grace.cordon == ()  # not idle for 60 s yet
    wanted = plan([job("j", 4)], [PoolState(pool=p0, nodes=(node("e", NodeState.CORDONED),))],
                  now=100.0)
    assert wanted.placements == {"j": ("e",)} and wanted.uncordon == ("e",)
    assert wanted.terminate == () and wanted.launch == {"small": 1}  # warm_idle


def test_an_empty_node_idled_last_is_filled_first_so_the_longest_idle_reach_grace() -> None:
    """Of the empty ready nodes, a job takes the one whose state changed last: "a" (idle
    since 0) is left alone and released at its grace, instead of each arrival keeping a
    different node warm (placing by id did: "a" first)."""
    nodes = (node("a", NodeState.IDLE, since=0.0), node("b", NodeState.IDLE, since=30.0))
    p = plan([job("j", 4)], [PoolState(pool=pool(), nodes=nodes)], now=60.0)
    assert p.placements == {"j": ("b",)} and p.cordon == ("a",)
    busy = (node("a", NodeState.BUSY, since=0.0), node("b", NodeState.IDLE, since=30.0))
    running = (Running(node_id="a", cores=2),)  # the busiest first still comes before
    p = plan([job("j", 2)], [PoolState(pool=pool(), nodes=busy, running=running)], now=60.0)
    assert p.placements == {"j": ("a",)}


def test_a_pool_backing_off_keeps_its_idle_nodes_while_jobs_wait() -> None:
    """A pool backing off (a failed boot, a capacity shortage) with a job waiting keeps its
    idle nodes past their grace: what it gives back it cannot get back now, and running jobs
    ending may add up to the gang. With nothing waiting, able to buy, or quarantined (which
    only an admin ends), it releases them."""
    nodes = (node("a", NodeState.IDLE, since=0.0), node("b", NodeState.IDLE, since=0.0))
    gang = [job("g", 4, nodes=3)]
    backing = PoolState(pool=pool(), nodes=nodes, backoff_until=200.0)
    p = plan(gang, [backing], now=100.0)
    assert "g" in p.waiting and p.cordon == ()
    assert plan([], [backing], now=100.0).cordon == ("a", "b")
    quarantined = PoolState(pool=pool(), nodes=nodes, quarantined=True)
    assert plan(gang, [quarantined], now=100.0).cordon == ("a", "b")
    probing = plan([job("g", 4, nodes=4)], [PoolState(pool=pool(), nodes=nodes, probing=True)],
                   now=100.0)  # past its backoff, one node at a time: releases as usual
    assert "g" in probing.waiting and probing.cordon == ("a", "b")
    buying = plan(gang, [PoolState(pool=pool(), nodes=nodes)], now=100.0)
    assert buying.placements["g"][:2] == ("a", "b") and buying.launch == {"small": 1}


def test_a_probing_pool_buys_one_node_at_a_time() -> None:
    """After a shortage (probing), a gang of 3 buys nothing and waits, saying why, and the
    pool buys one bare node to learn whether the shortage is over; a one-node job takes that
    node, and a second one waits. Within max_nodes: a full pool probes with nothing."""
    probing = PoolState(pool=pool(), probing=True)
    p = plan([job("g", 4, nodes=3)], [probing], now=0.0)
    assert p.launch == {"small": 1} and p.placements == {}
    assert "one node at a time" in p.waiting["g"]
    p = plan([job("a", 4), job("b", 4)], [probing], now=0.0)
    assert p.launch == {"small": 1} and p.placements == {"a": ("new:small:0",)}
    assert set(p.waiting) == {"b"}
    full = PoolState(pool=pool(max_nodes=1), probing=True,
                     nodes=(node("x", NodeState.BUSY),), running=(Running(node_id="x", cores=4),))
    assert plan([job("g", 4, nodes=3)], [full], now=0.0).launch == {}
    asked = PoolState(pool=pool(), probing=True, nodes=(node("p", NodeState.LAUNCHING),))
    assert plan([job("g", 4, nodes=3)], [asked], now=0.0).launch == {}  # one at a time


def test_a_boot_nothing_wants_is_cancelled_after_its_grace_beyond_what_the_pool_keeps() -> None:
    """A node still booting with nothing placed on it is terminated once launched longer ago
    than the pool's idle grace (60 s) and billing minimum (60 s), the longest booting first,
    beyond min_nodes and the reserve of empty nodes; never one a job is placed on, nor a slow
    boot (past 2 x 40 s: it keeps booting against its hedge), nor while the pool backs off
    with jobs waiting."""
    old = node("old", NodeState.BOOTING, since=0.0)
    mid = node("mid", NodeState.BOOTING, since=5.0)
    new = node("new", NodeState.BOOTING, since=50.0)
    assert plan([], [PoolState(pool=pool(), nodes=(old, new))], now=70.0).cancel == ("old",)
    assert plan([], [PoolState(pool=pool(), nodes=(old, new))], now=50.0).cancel == ()
    p = plan([], [PoolState(pool=pool(idle_grace_s=200.0), nodes=(old, new))], now=70.0)
    assert p.cancel == ()  # within a longer grace
    assert plan([], [PoolState(pool=pool(), nodes=(old, mid))], now=70.0).cancel == (
        "mid", "old")
    assert plan([], [PoolState(pool=pool(), nodes=(old,))], now=100.0).cancel == ()  # slow
    wanted = plan([job("j", 4)], [PoolState(pool=pool(), nodes=(old,))], now=70.0)
    assert wanted.placements == {"j": ("old",)} and wanted.cancel == ()
    assert plan([], [PoolState(pool=pool(min_nodes=1), nodes=(old,))], now=70.0).cancel == ()
    assert plan([], [PoolState(pool=pool(warm_idle=1), nodes=(old, mid))], now=70.0).cancel == (
        "old",)  # the longest booting goes, one stays for warm_idle
    backing = PoolState(pool=pool(), nodes=(old,), backoff_until=200.0)
    assert plan([job("g", 4, nodes=3)], [backing], now=70.0).cancel == ()


def test_a_boot_past_its_timeout_is_failed_and_its_job_replanned() -> None:
    slow = node("a", NodeState.BOOTING, since=0.0, launched_at=0.0)
    p = plan([job("j", 4)], [PoolState(pool=pool(), nodes=(slow,))], now=301.0)
    assert p.failed_boots == ("a",) and p.placements == {"j": ("new:small:0",)}


def test_a_slow_boot_is_hedged_with_a_replacement_it_keeps_booting() -> None:
    """expected_boot_s 40 x slow_boot_factor 2: after 80 s a booting node is not counted on."""
    booting = node("a", NodeState.BOOTING, since=0.0, launched_at=0.0)
    state = PoolState(pool=pool(), nodes=(booting,))
    assert plan([job("j", 4)], [state], now=80.0).placements == {"j": ("a",)}
    hedged = plan([job("j", 4)], [state], now=81.0)
    assert hedged.placements == {"j": ("new:small:0",)} and hedged.launch == {"small": 1}
    assert hedged.failed_boots == () and hedged.terminate == ()  # it may still come
    never = PoolState(pool=pool(slow_boot_factor=0), nodes=(booting,))
    assert plan([job("j", 4)], [never], now=1.0).launch == {"small": 1}


def test_boot_spares_hedge_the_boots_a_gang_waits_for() -> None:
    """boot_spares 0.5: a gang of 3 on new nodes buys 2 spares (3 x 0.5, rounded up); spares
    on their way count as bought; the first node to boot takes a slow one's place."""
    spares = pool(boot_spares=0.5, max_nodes=10)
    gang = [job("g", 4, nodes=3)]
    first = plan(gang, [PoolState(pool=spares)], now=0.0)
    assert first.placements == {"g": ("new:small:0", "new:small:1", "new:small:2")}
    assert first.launch == {"small": 5}
    assert plan(gang, [PoolState(pool=pool(max_nodes=10))], now=0.0).launch == {"small": 3}
    booting = tuple(node(f"b{i}", NodeState.BOOTING) for i in range(5))
    again = plan(gang, [PoolState(pool=spares, nodes=booting)], now=10.0)
    assert again.placements == {"g": ("b0", "b1", "b2")} and again.launch == {}
    spare_first = (*booting[:3], node("b3", NodeState.IDLE, since=30.0), booting[4])
    later = plan(gang, [PoolState(pool=spares, nodes=spare_first)], now=30.0)
    assert later.placements == {"g": ("b3", "b0", "b1")} and later.launch == {}  # 1 spare due
    assert plan(gang, [PoolState(pool=spares, nodes=(*spare_first[:3],))], now=30.0).launch == {
        "small": 2}  # 3 awaited -> 2 spares, none on the way


def test_a_node_requested_past_its_boot_timeout_is_forgotten() -> None:
    """No agent asked a provider for it: after boot_timeout_s (300) it is ended, not as a
    failed boot (the pool did nothing wrong), and no job is planned on it."""
    asked = node("r", NodeState.REQUESTED, launched_at=None)
    state = PoolState(pool=pool(), nodes=(asked,))
    assert plan([job("j", 4)], [state], now=300.0).forgotten == ()
    late = plan([job("j", 4)], [state], now=301.0)
    assert late.forgotten == ("r",) and late.failed_boots == ()
    assert late.placements == {"j": ("new:small:0",)}
    launching = PoolState(pool=pool(), nodes=(node("l", NodeState.LAUNCHING, since=0.0),))
    assert plan([], [launching], now=301.0).forgotten == ()  # a failed boot's business


def test_a_job_queued_past_fifo_after_goes_before_younger_larger_ones() -> None:
    """One free node: largest first gives it to the young large job, unless the small one
    has waited past fifo_after_s (120 s by default)."""
    state = PoolState(pool=pool(), nodes=(node("a", NodeState.IDLE),), backoff_until=1e9)
    young, old = job("big", 4, queued_at=990.0), job("small", 2, queued_at=900.0)
    assert plan([old, young], [state], now=1000.0).start == ("big",)
    assert plan([old, young], [state], now=1021.0).start == ("small",)
    assert plan([old, job("small2", 2)], [state], now=1021.0).start == ("small", "small2")


def test_a_gang_takes_the_free_nodes_and_buys_only_the_rest() -> None:
    free = (node("a", NodeState.IDLE), node("b", NodeState.IDLE))
    p = plan([job("g", 4, nodes=3)], [PoolState(pool=pool(), nodes=free)], now=0.0)
    assert p.placements == {"g": ("a", "b", "new:small:0")} and p.launch == {"small": 1}
    assert p.start == ()  # it starts when its third node is ready


def test_the_plan_is_deterministic() -> None:
    states = [PoolState(pool=pool(name=n, price_per_hour=1.0)) for n in ("x", "y")]
    demand = [job(f"j{i}", 1 + i % 4) for i in range(40)]
    assert plan(demand, states, 0.0) == plan(list(reversed(demand)), list(reversed(states)), 0.0)


# -- the reconciler -----------------------------------------------------------------------------
def test_reconcile_adopts_loses_and_ends_orphans_after_their_grace() -> None:
    ours = (node("n1", NodeState.LAUNCHING), node("n2", NodeState.BUSY, provider_id="vm-2",
                                                  jobs=frozenset({"j"})),
            node("n3", NodeState.TERMINATING, provider_id="vm-3"))
    listed = [ProviderNode(provider_id="vm-1", pool="small", key="n1"),
              ProviderNode(provider_id="vm-9", pool="small", key="ghost")]
    r = reconcile(ours, listed, 10.0, orphans_seen={}, orphan_grace_s=30.0)
    states = {n.id: (n.state, n.provider_id) for n in r.nodes}
    assert states == {"n1": (NodeState.BOOTING, "vm-1"), "n2": (NodeState.LOST, "vm-2"),
                      "n3": (NodeState.TERMINATED, "vm-3")}
    assert [n.id for n in r.lost] == ["n2"] and r.terminate == ()
    assert r.orphans_seen == {"vm-9": 10.0}
    later = reconcile(r.nodes, listed, 40.0, orphans_seen=r.orphans_seen, orphan_grace_s=30.0)
    assert later.terminate == ("vm-9",)


# -- cost ---------------------------------------------------------------------------------------
def test_billing_rounds_up_with_a_minimum_and_shares_weigh_like_tres() -> None:
    p = pool(billing_granularity_s=60.0, billing_minimum_s=120.0, price_per_hour=3.6)
    assert billed_seconds(p, 0.0, 30.0) == 120.0 and billed_seconds(p, 0.0, 121.0) == 180.0
    a = Allocation(job_id="j", attempt=1, node_id="n", cores=2, memory_mb=6000, start=0.0,
                   end=100.0)
    shape = NodeShape(cpus=4, memory_mb=8000)
    assert share(a, shape) == 0.5
    assert share(a, shape, BillingWeights(cpu=1.0, memory=1 / 2000)) == pytest.approx(5 / 8)
    assert share(a, shape, BillingWeights(cpu=1.0, memory=1 / 2000, max=True)) == 0.75
    bill = bill_node(p, "n", 0.0, 150.0, [a])
    assert bill.cost == pytest.approx(0.18) and bill.attempts == pytest.approx(0.05)
    assert bill.idle == pytest.approx(0.13)
