"""Seeded workloads for the autoscaling benchmark (``bench/autoscale.py``) and for tests:
the same seed gives the same jobs, so every policy of one run sees the same trace.

- :func:`spark_gangs`: Spark applications of 100-500 one-core executors (4 GB each), 300 an
  hour on average with a daily swing (fewest at midnight, most at noon). Nodes are 16 cpus /
  64 GB, so an app is a gang of ceil(executors / 16) nodes, all or nothing, each holding
  ceil(executors / nodes) cores: 100 executors are 7 nodes of 15 cores.
- :func:`bursts`: 200 multi-node jobs (2-4 whole nodes) arriving within a minute, four times a
  day (03:00, 09:00, 15:00, 21:00).
- :func:`shortages` and :class:`ShortageCloud`: 10-minute capacity shortages, three a day.
- :func:`planner_load`: one planner pass's input at scale (100 pools, 10k queued jobs).

Runtimes are lognormal; the planner is told each class's mean (Bridgehead's estimate from
history per job name), never the job's own runtime.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from bridgehead.domain.planner import Demand, PoolState, Running
from bridgehead.domain.pools import Node, NodeShape, NodeState, Pool
from bridgehead.pools.sim import CapacityShortage, CloudModel, SimCloud
from bridgehead.pools.simulation import SimJob

DAY_S = 86_400.0
NODE_CPUS = 16
NODE_MEMORY_MB = 64_000
EXECUTOR_MEMORY_MB = 4_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """A lognormal runtime: ``median_s`` and ``sigma``; its mean is what the planner sees."""

    median_s: float
    sigma: float

    @property
    def mean_s(self) -> float:
        return self.median_s * math.exp(self.sigma ** 2 / 2)

    def draw(self, rng: random.Random) -> float:
        return self.median_s * math.exp(rng.gauss(0.0, self.sigma))


SPARK_RUNTIME = Runtime(median_s=150.0, sigma=0.6)
BURST_RUNTIME = Runtime(median_s=480.0, sigma=0.5)
BURST_HOURS = (3.0, 9.0, 15.0, 21.0)


def daily_rate(per_hour: float, swing: float, t: float) -> float:
    """Arrivals per second at ``t`` (seconds since midnight): ``per_hour`` on average, times
    1 - swing at midnight and 1 + swing at noon."""
    return per_hour / 3600.0 * (1.0 - swing * math.cos(2 * math.pi * t / DAY_S))


def spark_gangs(start_s: float, end_s: float, seed: int, *, per_hour: float = 300.0,
                swing: float = 0.6, cluster: str = "spark",
                runtime: Runtime = SPARK_RUNTIME) -> list[SimJob]:
    """Spark apps arriving in [start_s, end_s) (times of day), shifted to start at 0: a
    Poisson process thinned to the daily rate."""
    rng = random.Random(f"spark-{seed}")
    peak = per_hour / 3600.0 * (1.0 + swing)
    jobs: list[SimJob] = []
    t = start_s
    while True:
        t += rng.expovariate(peak)
        if t >= end_s:
            return jobs
        if rng.random() * peak > daily_rate(per_hour, swing, t):
            continue
        executors = rng.randint(100, 500)
        nodes = math.ceil(executors / NODE_CPUS)
        cores = math.ceil(executors / nodes)
        demand = Demand(job_id=f"spark-{len(jobs):05d}", cluster=cluster, cores=cores,
                        memory_mb=cores * EXECUTOR_MEMORY_MB, nodes=nodes,
                        runtime_s=runtime.mean_s)
        jobs.append(SimJob(demand=demand, arrival=round(t - start_s, 3),
                           runtime_s=round(runtime.draw(rng), 3)))


def bursts(start_s: float, end_s: float, seed: int, *, per_burst: int = 200,
           at_hours: tuple[float, ...] = BURST_HOURS, cluster: str = "hpc",
           runtime: Runtime = BURST_RUNTIME) -> list[SimJob]:
    """The bursts that begin in [start_s, end_s), shifted like :func:`spark_gangs`."""
    rng = random.Random(f"bursts-{seed}")
    jobs: list[SimJob] = []
    for hour in at_hours:
        begin = hour * 3600.0
        if not start_s <= begin < end_s:
            continue
        for _ in range(per_burst):
            demand = Demand(job_id=f"burst-{len(jobs):05d}", cluster=cluster,
                            cores=NODE_CPUS, memory_mb=NODE_MEMORY_MB - 4_000,
                            nodes=rng.randint(2, 4), runtime_s=runtime.mean_s)
            jobs.append(SimJob(demand=demand, arrival=round(begin - start_s
                                                            + rng.uniform(0, 60), 3),
                               runtime_s=round(runtime.draw(rng), 3)))
    return jobs


def node_demand(jobs: list[SimJob]) -> list[tuple[float, int]]:
    """Nodes the trace would hold on an infinite cluster with instant boots, as (time, nodes)
    steps: what a static pool is sized from."""
    changes: list[tuple[float, int]] = []
    for j in jobs:
        changes += [(j.arrival, j.demand.nodes), (j.arrival + j.runtime_s, -j.demand.nodes)]
    held, out = 0, []
    for t, delta in sorted(changes):
        held += delta
        out.append((t, held))
    return out


def demand_quantile(jobs: list[SimJob], q: float) -> int:
    """The ``q`` quantile (0..1, time-weighted) of :func:`node_demand`; 1.0 is the peak."""
    steps = node_demand(jobs)
    if not steps:
        return 0
    if q >= 1.0:
        return max(n for _, n in steps)
    spans = sorted((n, t1 - t0) for (t0, n), (t1, _) in pairwise(steps))
    total = sum(w for _, w in spans)
    seen = 0.0
    for n, w in spans:
        seen += w
        if seen >= q * total:
            return n
    return spans[-1][0]


def planner_load(seed: int, *, pools: int = 100, jobs: int = 10_000,
                 clusters: int = 4) -> tuple[list[Demand], list[PoolState]]:
    """One pass's input at scale: ``pools`` pools over ``clusters`` clusters (8-64 cpus, up
    to 20 nodes each: idle, busy with a job ending within 10 minutes, booting, cordoned) and
    ``jobs`` queued jobs (1-16 cores, 1-16 GB, gangs of 1-8 nodes)."""
    rng = random.Random(f"planner-{seed}")
    states = []
    for p in range(pools):
        cpus = rng.choice([8, 16, 32, 64])
        pool = Pool(name=f"p{p:03d}", cluster=f"c{p % clusters}", provider="sim",
                    shape=NodeShape(cpus=cpus, memory_mb=cpus * 4000),
                    price_per_hour=round(rng.uniform(0.2, 3.0), 2), max_nodes=40,
                    launches_per_minute=20, idle_grace_s=120.0)
        nodes, running = [], []
        for k in range(rng.randint(0, 20)):
            node_id = f"{pool.name}-n{k}"
            state = rng.choice([NodeState.IDLE, NodeState.BUSY, NodeState.BUSY,
                                NodeState.BOOTING, NodeState.CORDONED])
            held: frozenset[str] = frozenset()
            if state is NodeState.BUSY:
                c = rng.randint(1, cpus)
                running.append(Running(node_id=node_id, cores=c, memory_mb=c * 2000,
                                       ends_at=rng.uniform(0, 600)))
                held = frozenset({f"r-{node_id}"})
            nodes.append(Node(id=node_id, pool=pool.name, state=state,
                              since=rng.uniform(-600, 0), launched_at=-700.0, jobs=held))
        states.append(PoolState(pool=pool, nodes=tuple(nodes), running=tuple(running),
                                launches=(-10.0,)))
    demand = [Demand(job_id=f"j{i:05d}", cluster=f"c{rng.randrange(clusters)}",
                     cores=rng.choice([1, 2, 4, 8, 16]),
                     memory_mb=rng.choice([1000, 4000, 16000]),
                     nodes=rng.choice([1, 1, 1, 2, 4, 8]), runtime_s=rng.uniform(60, 3600))
              for i in range(jobs)]
    return demand, states


def shortages(start_s: float, end_s: float, seed: int, *, per_day: int = 3,
              length_s: float = 600.0) -> list[tuple[float, float]]:
    """``per_day`` capacity shortages of ``length_s`` at seeded times of day, those that
    overlap [start_s, end_s), shifted like the jobs: (from, to) pairs."""
    rng = random.Random(f"shortages-{seed}")
    out = []
    for _ in range(per_day):
        begin = rng.uniform(0, DAY_S - length_s)
        if begin < end_s and begin + length_s > start_s:
            out.append((max(begin, start_s) - start_s, begin + length_s - start_s))
    return sorted(out)


class ShortageCloud(SimCloud):
    """A :class:`SimCloud` that has no capacity during the given windows: every launch then
    fails with CapacityShortage (counted in ``refused``)."""

    def __init__(self, model: CloudModel, seed: int,
                 windows: Sequence[tuple[float, float]]) -> None:
        super().__init__(model, seed)
        self.windows = tuple(windows)
        self.refused = 0

    def launch(self, pool: str, key: str, now: float) -> str | None:
        if key not in self._by_key and any(a <= now < b for a, b in self.windows):
            self.refused += 1
            raise CapacityShortage(pool)
        return super().launch(pool, key, now)
