"""An agent's report applied (pure): the reconciler following readiness, jobs, spot notices
and adopted nodes, errors, and the commands of the heartbeat's answer."""

from __future__ import annotations

from bridgehead.domain.costs import AttemptRecord, Price, pool_costs, pool_price, window_node_cost
from bridgehead.domain.pool_reconcile import ProviderNode, adopted_id
from bridgehead.domain.pool_report import Command, NodeError, Standing, apply_report
from bridgehead.domain.pools import Node, NodeShape, NodeState, Pool

POOL = Pool(name="p", cluster="c", provider="sim", shape=NodeShape(cpus=4, memory_mb=8192),
            price_per_hour=3.6, backoff_s=10.0, quarantine_after=2)
POOLS = {"p": POOL}


def node(id_: str, state: NodeState, **more: object) -> Node:
    return Node(id=id_, pool="p", state=state, since=0.0, **more)  # type: ignore[arg-type]


def seen(key: str | None, pid: str, **more: object) -> ProviderNode:
    return ProviderNode(provider_id=pid, pool="p", key=key, **more)  # type: ignore[arg-type]


def states(applied: object) -> dict[str, str]:
    return {n.id: n.state.value for n in applied.nodes}  # type: ignore[attr-defined]


def test_readiness_and_jobs_move_nodes_between_booting_idle_and_busy() -> None:
    nodes = [node("a", NodeState.BOOTING, provider_id="pa", launched_at=0.0),
             node("b", NodeState.IDLE, provider_id="pb"),
             node("c", NodeState.BUSY, provider_id="pc"),
             node("d", NodeState.CORDONED, provider_id="pd")]
    r = apply_report(POOLS, nodes, [], [seen("a", "pa", ready=True, jobs=0),
                                         seen("b", "pb", ready=True, jobs=2),
                                         seen("c", "pc", ready=True, jobs=0),
                                         seen("d", "pd", ready=True, jobs=1)],
                     [], {}, 10.0, orphan_grace_s=60)
    assert states(r) == {"a": "idle", "b": "busy", "c": "idle", "d": "busy"}
    assert [n.id for n in r.booted] == ["a"] and r.commands == ()


def test_a_spot_notice_cordons_an_idle_node_never_a_busy_one() -> None:
    nodes = [node("a", NodeState.IDLE, provider_id="pa"),
             node("b", NodeState.BUSY, provider_id="pb")]
    r = apply_report(POOLS, nodes, [], [seen("a", "pa", ready=True, jobs=0, interrupted=True),
                                         seen("b", "pb", ready=True, jobs=1, interrupted=True)],
                     [], {}, 10.0, orphan_grace_s=60)
    assert states(r) == {"a": "cordoned", "b": "busy"}


def test_adopted_nodes_are_tracked_and_orphans_terminated_after_their_grace() -> None:
    listed = [seen(None, "slurm-cn1", ready=True, jobs=1, adopted=True),
              seen(None, "stray")]
    first = apply_report(POOLS, [], [], listed, [], {}, 100.0, orphan_grace_s=60)
    assert states(first) == {adopted_id("p", "slurm-cn1"): "busy"}
    assert first.commands == ()  # the orphan is within its grace
    held = {"p": first.standings["p"]}
    assert dict(held["p"].orphans) == {"stray": 100.0}
    later = apply_report(POOLS, list(first.nodes), [], listed, [], held, 161.0,
                         orphan_grace_s=60)
    assert later.commands == (Command(op="terminate", pool="p", key=None, provider_id="stray"),)
    assert states(later) == {adopted_id("p", "slurm-cn1"): "busy"}


def test_launches_are_sent_until_listed_and_an_ended_node_listed_again_is_stopped() -> None:
    nodes = [node("new", NodeState.REQUESTED), node("going", NodeState.LAUNCHING)]
    ended = [node("dead", NodeState.FAILED_BOOT, ended_at=5.0)]
    r = apply_report(POOLS, nodes, ended, [seen("dead", "pdead")], [], {}, 10.0,
                     orphan_grace_s=0)
    assert r.commands == (  # by node id
        Command(op="terminate", pool="p", key="dead", provider_id="pdead"),
        Command(op="launch", pool="p", key="going"), Command(op="launch", pool="p", key="new"))
    assert states(r)["new"] == "launching"  # asked now: billing may start


def test_a_shortage_backs_off_flat_and_never_quarantines() -> None:
    """A refused batch (one launch call for two nodes) ends both nodes and backs the pool off
    for backoff_s. Refused again and again (quarantine_after is 2), the pool waits backoff_s
    each time, not doubled, and is never quarantined: nothing was made, and a shortage says
    nothing about the pool (it used to quarantine a pool after two refusals, and double the
    wait up to 16x, so a pool asked again up to 160 s after the shortage ended)."""
    nodes = [node("a", NodeState.LAUNCHING, launched_at=0.0),
             node("b", NodeState.LAUNCHING, launched_at=0.0)]
    short = [NodeError(pool="p", keys=("a", "b"), op="launch", error="none", shortage=True)]
    r = apply_report(POOLS, nodes, [], [], short, {}, 10.0, orphan_grace_s=60)
    assert states(r) == {"a": "failed_boot", "b": "failed_boot"}
    s = r.standings["p"]
    assert (s.failures_in_row, s.quarantined) == (0, False)
    assert s.backoff_until == 10.0 + 10.0
    for at in (40.0, 70.0, 100.0):
        nodes = [node(f"c{at}", NodeState.LAUNCHING, launched_at=at - 10)]
        short = [NodeError(pool="p", keys=(f"c{at}",), op="launch", error="none",
                           shortage=True)]
        r = apply_report(POOLS, nodes, [], [], short, {"p": s}, at, orphan_grace_s=60)
        s = r.standings["p"]
        assert (s.failures_in_row, s.quarantined) == (0, False)
        assert s.backoff_until == at + 10.0


def test_a_shortage_lasts_until_the_provider_lists_a_node_launched_since() -> None:
    """short_since is set by the first refusal and kept by the next; a node the provider
    lists that was launched before it says nothing; one launched after it ends it."""
    short = [NodeError(pool="p", keys=("a",), op="launch", error="none", shortage=True)]
    r = apply_report(POOLS, [node("a", NodeState.LAUNCHING, launched_at=5.0)], [], [], short,
                     {}, 10.0, orphan_grace_s=60)
    assert r.standings["p"].short_since == 10.0
    short = [NodeError(pool="p", keys=("b",), op="launch", error="none", shortage=True)]
    r = apply_report(POOLS, [node("b", NodeState.LAUNCHING, launched_at=25.0)], [], [], short,
                     r.standings, 30.0, orphan_grace_s=60)
    assert r.standings["p"].short_since == 10.0  # since the first refusal
    old = node("old", NodeState.BOOTING, provider_id="p-old", launched_at=0.0)
    r = apply_report(POOLS, [old], [], [seen("old", "p-old", ready=False)], [], r.standings,
                     40.0, orphan_grace_s=60)
    assert r.standings["p"].short_since == 10.0  # launched before the shortage
    probe = node("probe", NodeState.LAUNCHING, launched_at=45.0)
    r = apply_report(POOLS, [old, probe], [], [seen("old", "p-old", ready=False),
                                               seen("probe", "p-probe", ready=False)],
                     [], r.standings, 50.0, orphan_grace_s=60)
    assert r.standings["p"].short_since is None


def test_a_shortage_keeps_a_run_of_failed_boots_and_its_longer_backoff() -> None:
    """A pool backing off 40 s after failed boots, then refused: the run of failures and the
    longer backoff stay (a shortage neither forgives nor shortens them)."""
    was = Standing(pool="p", failures_in_row=1, backoff_until=50.0)
    nodes = [node("a", NodeState.LAUNCHING, launched_at=0.0)]
    short = [NodeError(pool="p", keys=("a",), op="launch", error="none", shortage=True)]
    r = apply_report(POOLS, nodes, [], [], short, {"p": was}, 10.0, orphan_grace_s=60)
    s = r.standings["p"]
    assert (s.failures_in_row, s.backoff_until, s.quarantined) == (1, 50.0, False)


def test_other_errors_and_other_pools_change_nothing() -> None:
    nodes = [node("a", NodeState.LAUNCHING, launched_at=0.0)]
    errors = [NodeError(pool="p", keys=("a",), op="launch", error="timed out"),
              NodeError(pool="q", keys=("a",), op="launch", error="none", shortage=True)]
    r = apply_report(POOLS, nodes, [], [ProviderNode(provider_id="x", pool="q", key="a")],
                     errors, {}, 10.0, orphan_grace_s=0)
    assert states(r) == {"a": "launching"} and r.standings["p"].failures_in_row == 0
    assert r.commands == (Command(op="launch", pool="p", key="a"),)


def test_a_booted_node_ends_the_run_of_failures() -> None:
    nodes = [node("a", NodeState.BOOTING, provider_id="pa", launched_at=0.0)]
    r = apply_report(POOLS, nodes, [], [seen("a", "pa", ready=True, jobs=0)], [],
                     {"p": Standing(pool="p", failures_in_row=1, backoff_until=50.0)}, 10.0,
                     orphan_grace_s=60)
    assert r.standings["p"].failures_in_row == 0


def test_node_cost_in_a_window_and_idle_per_pool() -> None:
    assert window_node_cost(POOL, 100.0, 110.0, 0.0, 1000.0) == (60 / 3600, 3.6 * 60 / 3600)
    hours, cost = window_node_cost(POOL, -500.0, 500.0, 0.0, 1000.0)  # began before: exact
    assert (hours, cost) == (500 / 3600, 0.5)
    assert window_node_cost(POOL, 2000.0, 2100.0, 0.0, 1000.0) == (0.0, 0.0)
    price = pool_price([POOL], {})
    assert price == Price(core_hour=0.9)
    [line] = pool_costs([POOL], [("p", 0.0, 3600.0)], [], {"c": price}, since=0.0,
                        until=7200.0)
    assert (line.node_cost, line.attempts, line.idle) == (3.6, 0.0, 3.6)


def test_an_attempt_seen_on_a_pool_node_counts_for_that_pool_only() -> None:
    """Two pools of one cluster, the same node-hours: an attempt seen on pool q's node is
    q's (p is all idle); one never seen on a node is spread by node-hours, as before."""
    q = Pool(name="q", cluster="c", provider="sim", shape=NodeShape(cpus=4, memory_mb=8192),
             price_per_hour=3.6)
    price = Price(core_hour=0.9)
    nodes = [("p", 0.0, 3600.0), ("q", 0.0, 3600.0)]

    def attempt(pools: tuple[str, ...]) -> AttemptRecord:  # 4 cores for 1 h: 3.6
        return AttemptRecord(job_id="j", attempt=1, cluster="c", tenant="t", state="succeeded",
                             cores=4, nodes=1, gpus=0, started_at=0.0, ended_at=3600.0,
                             labels={}, pools=pools)

    lines = pool_costs([POOL, q], nodes, [attempt(("q",))], {"c": price}, since=0.0,
                       until=7200.0)
    assert [(c.pool, c.attempts, c.idle) for c in lines] == [("p", 0.0, 3.6), ("q", 3.6, 0.0)]
    lines = pool_costs([POOL, q], nodes, [attempt(())], {"c": price}, since=0.0, until=7200.0)
    assert [(c.pool, c.attempts) for c in lines] == [("p", 1.8), ("q", 1.8)]
    lines = pool_costs([POOL, q], nodes, [attempt(("p", "q"))], {"c": price}, since=0.0,
                       until=7200.0)  # one attempt on a node of each: shared equally
    assert [(c.pool, c.attempts) for c in lines] == [("p", 1.8), ("q", 1.8)]
