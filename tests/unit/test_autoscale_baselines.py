"""The baselines of ``bench/autoscale.py`` do what their users complain about, through the
same simulation that runs Bridgehead's planner: without the re-check, the jobs on a node they
terminate are killed (their work lost, the job queued again and run anew), while the planner
on the same trace kills nothing. Also: the traces are seeded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridgehead.domain.planner import Demand, plan
from bridgehead.domain.pools import NodeShape, Pool
from bridgehead.pools.baselines import ClusterAutoscaler, Karpenter, ParslSimple
from bridgehead.pools.sim import CloudModel, SimCloud
from bridgehead.pools.simulation import Policy, SimJob, Simulation
from bridgehead.pools.traces import bursts, demand_quantile, spark_gangs

CALM = CloudModel(failed_boot_p=0.0, evictions_per_node_hour=0.0)
POOL = Pool(name="p", cluster="c", provider="sim", shape=NodeShape(cpus=16, memory_mb=64_000),
            max_nodes=8, idle_grace_s=60.0, price_per_hour=1.0)


def job(job_id: str, cores: int, runtime: float, arrival: float = 0.0) -> SimJob:
    return SimJob(demand=Demand(job_id=job_id, cluster="c", cores=cores, runtime_s=runtime),
                  arrival=arrival, runtime_s=runtime)


def run(policy: Policy, jobs: list[SimJob], recheck: bool, until: float) -> Simulation:
    sim = Simulation([POOL], jobs, SimCloud(CALM, seed=3), step_s=5.0, policy=policy,
                     recheck=recheck)
    sim.run(until=until)
    return sim


def long_and_short() -> list[SimJob]:
    """One long whole-node job and three short ones: four nodes, then one busy."""
    return [job("long", 16, 3000.0), *(job(f"short{i}", 16, 60.0) for i in range(3))]


def karpenter_trace() -> list[SimJob]:
    """Two 12-core jobs on two nodes; "a" ends (at 225 s with this seed) and a 4-core job
    takes its node (the least used) before it was empty for 30 s: the two jobs left fit on one
    node, so consolidation takes the other, killing "c"."""
    return [job("a", 12, 200.0), job("b", 12, 3000.0), job("c", 4, 3000.0, arrival=235.0)]


def ca_trace() -> list[SimJob]:
    """Two nodes; after 20 minutes one holds a 4-core job (under 50% used) that fits on the
    other: unneeded for 10 minutes, it is scaled down."""
    return [job("a", 12, 1200.0), job("b", 12, 4000.0), job("c", 4, 4000.0, arrival=1300.0)]


@pytest.mark.parametrize(("make", "trace"), [
    (ParslSimple, long_and_short), (Karpenter, karpenter_trace),
    (ClusterAutoscaler, ca_trace)])
def test_a_baseline_kills_running_jobs_and_the_planner_does_not(
        make: Callable[[], Policy], trace: Callable[[], list[SimJob]]) -> None:
    until = 5.0 * 3600
    base = run(make(), trace(), recheck=False, until=until)
    assert base.killed and base.killed_core_s > 0, base.events
    for job_id in set(base.killed):
        again = base.jobs[job_id]
        assert again.killed >= 1 and again.attempts == again.killed + 1
        assert again.finished_at is not None  # queued again, run anew
    assert base.terminated > 0
    ours = run(plan, trace(), recheck=True, until=until)
    assert ours.killed == [] and ours.killed_core_s == 0
    assert all(j.finished_at is not None and j.attempts == 1 for j in ours.jobs.values())
    assert ours.terminated > 0  # it released nodes too


def test_traces_are_seeded_and_sized() -> None:
    a, b = spark_gangs(0, 3600, seed=5), spark_gangs(0, 3600, seed=5)
    assert [(j.arrival, j.demand, j.runtime_s) for j in a] == [
        (j.arrival, j.demand, j.runtime_s) for j in b]
    assert a != spark_gangs(0, 3600, seed=6)
    assert all(7 <= j.demand.nodes <= 32 and j.demand.cores * j.demand.nodes >= 100
               and j.demand.cores <= 16 for j in a)
    burst = bursts(0, 86_400, seed=5)
    assert len(burst) == 800 and {j.demand.nodes for j in burst} == {2, 3, 4}
    assert demand_quantile(burst, 1.0) >= demand_quantile(burst, 0.95) > 0
