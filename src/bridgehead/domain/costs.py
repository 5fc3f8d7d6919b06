"""Cost: what each node costs, what share of it each job attempt used, and the idle rest.

A node is billed from launch to its end, rounded up to its pool's billing granularity, at
least its billing minimum. An attempt's cost is its **allocation share** of its node times the
node's price over the attempt's exact start and end (never sampled: at a one-minute sample a
30 s job is off by -100% to +200%, opencost #719). The share weighs cpu, memory and gpus as
Slurm's ``TRESBillingWeights`` do, a whole node being 1: the weighted sum of what the attempt
holds over the same sum for the node (or the largest of the ratios, ``PriorityFlags=MAX_TRES``).
A node's **idle cost** is its cost minus its attempts' costs, so attempts + idle = the node,
exactly; roll-ups (job, workflow run, DAG, tenant, pool, day) are sums of attempts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bridgehead.domain.pools import NodeShape, Pool, amount


@dataclass(frozen=True, slots=True, kw_only=True)
class BillingWeights:
    """Weights of cpu, memory (per MB) and gpus; ``max`` takes the largest weighted ratio."""

    cpu: float = 1.0
    memory: float = 0.0
    gpu: float = 0.0
    max: bool = False


DEFAULT_WEIGHTS = BillingWeights()
"""Cores only: a job's share is its cores over the node's (Slurm's default billing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """What one attempt held on one node, and when (exact start and end)."""

    job_id: str
    attempt: int
    node_id: str
    cores: int
    memory_mb: int = 0
    gpus: int = 0
    start: float
    end: float


def share(a: Allocation, shape: NodeShape, w: BillingWeights = DEFAULT_WEIGHTS) -> float:
    """The share of the node ``a`` held (0..1): weighted like TRESBillingWeights."""
    parts = [(w.cpu, a.cores, shape.cpus), (w.memory, a.memory_mb, shape.memory_mb),
             (w.gpu, a.gpus, shape.gpus)]
    parts = [(weight, used, whole) for weight, used, whole in parts if weight and whole]
    if not parts:
        return 0.0
    if w.max:
        return min(1.0, max(used / whole for _, used, whole in parts))
    total = sum(weight * whole for weight, _, whole in parts)
    return min(1.0, sum(weight * used for weight, used, _ in parts) / total)


def billed_seconds(pool: Pool, launched_at: float, ended_at: float) -> float:
    """The seconds a node is billed for: rounded up to the granularity, at least the
    minimum."""
    lasted = max(0.0, ended_at - launched_at)
    rounded = math.ceil(lasted / pool.billing_granularity_s - 1e-9) * pool.billing_granularity_s
    return max(rounded, pool.billing_minimum_s)


def node_cost(pool: Pool, launched_at: float, ended_at: float) -> float:
    return billed_seconds(pool, launched_at, ended_at) * pool.price_per_hour / 3600.0


def attempt_cost(a: Allocation, pool: Pool, w: BillingWeights = DEFAULT_WEIGHTS) -> float:
    return share(a, pool.shape, w) * max(0.0, a.end - a.start) * pool.price_per_hour / 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeBill:
    node_id: str
    cost: float
    attempts: float
    """The attempts' costs on it, summed."""

    @property
    def idle(self) -> float:
        return self.cost - self.attempts


def bill_node(pool: Pool, node_id: str, launched_at: float, ended_at: float,
              allocations: Iterable[Allocation], w: BillingWeights = DEFAULT_WEIGHTS
              ) -> NodeBill:
    """The node's cost split into its attempts' and the idle rest."""
    used = sum(attempt_cost(a, pool, w) for a in allocations if a.node_id == node_id)
    return NodeBill(node_id=node_id, cost=node_cost(pool, launched_at, ended_at),
                    attempts=used)


# -- what static clusters cost, and the roll-ups --------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """A cluster's price from config (``[server.prices.<cluster>]``): per core-hour, per
    node-hour (a whole node), per gpu-hour, and per normalized instance-hour for backends that
    report them (EMR). An attempt pays each for what it held over its exact run time."""

    core_hour: float = 0.0
    node_hour: float = 0.0
    gpu_hour: float = 0.0
    instance_hour: float = 0.0

    def __post_init__(self) -> None:
        for name in ("core_hour", "node_hour", "gpu_hour", "instance_hour"):
            amount(getattr(self, name), (name,))


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One row of the cost ledger, with its job's labels (for the roll-ups)."""

    job_id: str
    attempt: int
    cluster: str
    tenant: str
    state: str
    cores: int
    nodes: int
    gpus: int
    started_at: float
    ended_at: float
    labels: Mapping[str, str]
    instance_hours: float | None = None
    elapsed_s: float | None = None
    """How long it ran by the scheduler's own accounting (sacct's Elapsed: End - Start), when
    the backend measured it: exact, where ``started_at``/``ended_at`` are when the agent saw
    the start and the end (up to a poll interval late)."""
    pools: tuple[str, ...] = ()
    """The pool of each pool node it was seen on (empty: a static node, or not seen on one)."""

    @property
    def hours(self) -> float:
        if self.elapsed_s is not None:
            return self.elapsed_s / 3600.0
        return max(0.0, self.ended_at - self.started_at) / 3600.0


def attempt_price(a: AttemptRecord, price: Price) -> float:
    """What the attempt cost on a cluster priced ``price``."""
    held = price.core_hour * a.cores + price.node_hour * a.nodes + price.gpu_hour * a.gpus
    return a.hours * held + price.instance_hour * (a.instance_hours or 0.0)


GROUPS: dict[str, Callable[[AttemptRecord], str]] = {
    "job": lambda a: a.job_id,
    "run": lambda a: a.labels.get("run", "-"),
    "workflow": lambda a: a.labels.get("workflow", "-"),
    "dag": lambda a: a.labels.get("airflow.dag_id") or a.labels.get("workflow", "-"),
    "tenant": lambda a: a.tenant,
    "cluster": lambda a: a.cluster,
    "total": lambda a: "total",
}
"""What costs roll up by. A DAG is an Airflow dag_id, or a native workflow's name."""
BUCKETS = {"day": 86400, "hour": 3600, "none": 0}
WASTE_STATES = frozenset({"lost", "failed", "timed_out"})
"""Attempts whose cost bought nothing: lost to the infrastructure, failed, timed out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CostRow:
    group: str
    bucket: float | None
    """The bucket's start (UNIX seconds, UTC), by when each attempt ended; None: no buckets."""
    cost: float
    waste: float
    attempts: int
    core_hours: float


def rollup(records: Iterable[AttemptRecord], prices: Mapping[str, Price], *, by: str,
           bucket: str = "none") -> tuple[list[CostRow], list[str]]:
    """Costs summed by ``by`` (:data:`GROUPS`) and ``bucket`` (:data:`BUCKETS`), the most
    costly first within a bucket; and the clusters with no price (their attempts cost 0 and
    are counted, so a missing price is said, never hidden). Every row is a sum of attempts,
    so the rows of any grouping add up to the same total."""
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}, not {by!r}")
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    width = BUCKETS[bucket]
    sums: dict[tuple[str, float | None], list[float]] = {}
    unpriced: set[str] = set()
    for a in records:
        price = prices.get(a.cluster)
        if price is None:
            unpriced.add(a.cluster)
        cost = attempt_price(a, price) if price is not None else 0.0
        key = (GROUPS[by](a), a.ended_at // width * width if width else None)
        row = sums.setdefault(key, [0.0, 0.0, 0.0, 0.0])
        row[0] += cost
        row[1] += cost if a.state in WASTE_STATES else 0.0
        row[2] += 1
        row[3] += a.hours * a.cores
    rows = [CostRow(group=g, bucket=b, cost=v[0], waste=v[1], attempts=int(v[2]),
                    core_hours=v[3]) for (g, b), v in sums.items()]
    rows.sort(key=lambda r: (r.bucket or 0.0, -r.cost, r.group))
    return rows, sorted(unpriced)


# -- anomalies ---------------------------------------------------------------------------------
ANOMALY_RATIO = 1.5
"""A run is an anomaly when it costs more than this times its workflow's trailing p90."""
ANOMALY_MIN_RUNS = 5
"""Fewer earlier runs than this say nothing about what a run usually costs."""


def p90(values: Sequence[float]) -> float:
    """The 90th percentile by nearest rank (one of the values, never interpolated)."""
    if not values:
        raise ValueError("p90 of no values")
    ranked = sorted(values)
    return ranked[max(0, math.ceil(0.9 * len(ranked)) - 1)]


def anomaly(cost: float, trailing: Sequence[float], *, ratio: float = ANOMALY_RATIO,
            min_runs: int = ANOMALY_MIN_RUNS) -> float | None:
    """The trailing p90 that ``cost`` exceeds more than ``ratio`` times, or None (not an
    anomaly, or too few earlier runs to tell, or they cost nothing)."""
    if len(trailing) < min_runs:
        return None
    usual = p90(trailing)
    return usual if usual > 0 and cost > ratio * usual else None


# -- elastic pools: node cost, and the idle rest -------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class PoolCost:
    """One pool over a window: what its nodes cost (the node ledger), what the attempts on it
    cost, and the idle rest."""

    pool: str
    cluster: str
    node_hours: float
    node_cost: float
    attempts: float

    @property
    def idle(self) -> float:
        """Node cost not used by attempts (never below 0: a cluster that also has static
        nodes may run more than its pools bill)."""
        return max(0.0, self.node_cost - self.attempts)


def window_node_cost(pool: Pool, launched_at: float, ended_at: float, since: float,
                     until: float) -> tuple[float, float]:
    """(hours, cost) of one node within [since, until): billed as a whole (granularity,
    minimum) when its life lies inside the window, else its exact time in the window."""
    if since <= launched_at and ended_at <= until:
        seconds = billed_seconds(pool, launched_at, ended_at)
    else:
        seconds = max(0.0, min(ended_at, until) - max(launched_at, since))
    return seconds / 3600.0, seconds * pool.price_per_hour / 3600.0


def pool_price(pools: Sequence[Pool], node_hours: Mapping[str, float]) -> Price:
    """A cluster's price from its pools (when ``[server.prices]`` has none): per core-hour,
    each pool's price per cpu weighted by its node-hours in the window (equally with none)."""
    weights = {p.name: node_hours.get(p.name, 0.0) for p in pools}
    total = sum(weights.values())
    per_core = sum((weights[p.name] / total if total else 1 / len(pools))
                   * p.price_per_hour / p.shape.cpus for p in pools)
    return Price(core_hour=per_core)


def pool_costs(pools: Sequence[Pool], nodes: Iterable[tuple[str, float, float | None]],
               records: Iterable[AttemptRecord], prices: Mapping[str, Price], *,
               since: float, until: float) -> list[PoolCost]:
    """Each pool's line: ``nodes`` are (pool, launched_at, ended_at or None: still up) from
    the node ledger. An attempt seen on pool nodes counts for their pools (shared equally
    among its nodes); the rest of a cluster's attempts (never seen on a node: reports lag
    a short job) are spread over its pools by node-hours."""
    by_name = {p.name: p for p in pools}
    hours: dict[str, float] = {p.name: 0.0 for p in pools}
    cost: dict[str, float] = {p.name: 0.0 for p in pools}
    for name, launched_at, ended_at in nodes:
        pool = by_name.get(name)
        if pool is None:
            continue
        h, c = window_node_cost(pool, launched_at, ended_at if ended_at is not None else until,
                                since, until)
        hours[name] += h
        cost[name] += c
    used: dict[str, float] = {}  # by cluster: attempts on no known pool node
    on_pool: dict[str, float] = {}
    for a in records:
        price = prices.get(a.cluster)
        if price is None:
            continue
        known = [name for name in a.pools if name in by_name]
        if known:
            for name in known:
                on_pool[name] = on_pool.get(name, 0.0) + attempt_price(a, price) / len(known)
        else:
            used[a.cluster] = used.get(a.cluster, 0.0) + attempt_price(a, price)
    out = []
    for p in pools:
        mates = [q.name for q in pools if q.cluster == p.cluster]
        total = sum(hours[m] for m in mates)
        part = hours[p.name] / total if total else 1 / len(mates)
        out.append(PoolCost(pool=p.name, cluster=p.cluster, node_hours=hours[p.name],
                            node_cost=cost[p.name],
                            attempts=on_pool.get(p.name, 0.0) + used.get(p.cluster, 0.0) * part))
    return out
