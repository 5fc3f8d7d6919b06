"""Elastic pools and their nodes: what a site configures, and the lifecycle of each node.

A **pool** is a set of identical nodes a provider can start and stop for one cluster (Slurm
CLOUD nodes powered up by Slurm's power saving, Spark workers, EMR instance groups, a
simulated cloud): their shape, how they are billed, and the bounds the scaler keeps.

A **node**'s lifecycle (every change is one of ``NODE_TRANSITIONS``; its events are the cost
ledger)::

    requested -> launching -> booting -> idle <-> busy
        |            |           |        |        |
        |            |           +-> failed_boot   +-> lost (the provider lost it: jobs re-queued)
        +------------+---------------------------> terminated (cancelled before it booted)
    idle -> cordoned -> terminating -> terminated     (scale-down: only a node with no job)
    cordoned -> idle                                  (work came back before it went)
    orphan -> terminating                             (the provider has it, Bridgehead did not)

A node with a job on it is never cordoned or terminated: ``busy`` has no way to ``cordoned``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from bridgehead.errors import InvalidAt

PROVIDERS = ("slurm_powersave", "spark_standalone", "emr", "local", "sim")
"""The providers Bridgehead ships (``bridgehead.pools.providers``)."""


class InvalidPool(InvalidAt):
    """The pool's configuration is not valid (at ``loc``: ``("pools", "gpu", "max_nodes")``)."""


class CapacityType(StrEnum):
    ON_DEMAND = "on_demand"
    """Bought by the hour; the provider does not take it back."""
    SPOT = "spot"
    """Cheaper, and the provider may take it back (an eviction, with or without notice)."""
    STATIC = "static"
    """Always there (a site's own nodes): priced from config, never launched or terminated."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeShape:
    """What one node of the pool offers to jobs."""

    cpus: int
    memory_mb: int
    gpus: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    """One pool's configuration (``[[pools]]`` in the server's config, or the API)."""

    name: str
    cluster: str
    provider: str
    shape: NodeShape
    capacity_type: CapacityType = CapacityType.ON_DEMAND
    price_per_hour: float = 0.0
    """What one node costs per hour (a static pool: its price from config)."""
    billing_granularity_s: float = 1.0
    """Billing rounds a node's time up to a multiple of this (AWS: 1 s, some clouds: 60 s)."""
    billing_minimum_s: float = 60.0
    """The least a node is billed for once launched (AWS: 60 s)."""
    min_nodes: int = 0
    max_nodes: int = 10
    warm_idle: int = 0
    """Idle nodes kept ready beyond what the queue needs (within max_nodes)."""
    boot_timeout_s: float = 600.0
    """A node not ready after this is a failed boot: replaced, and the pool backs off."""
    expected_boot_s: float = 60.0
    """What a boot usually takes: capacity that frees sooner is waited for, not bought."""
    slow_boot_factor: float = 2.0
    """A node still booting after this many times ``expected_boot_s`` is not counted on: the
    jobs planned on it get a replacement bought (a hedge, as boot times have a long tail and
    some never finish); it keeps booting until ``boot_timeout_s`` and, if it comes, is one
    more idle node. 0: never wait for a boot."""
    boot_spares: float = 0.0
    """Spare nodes kept on their way per node that placed jobs wait on to boot (0.2: one per
    five). A gang waits for the slowest of its boots and boot times have a long tail; the plan
    is made again each pass and a pool's nodes are alike, so a spare that boots first takes a
    slow one's place, and once the jobs started it is one more idle node for the next job
    (released after ``idle_grace_s``). 0: buy only what the placements need."""
    fifo_after_s: float = 120.0
    """A job queued longer than this (the least of its cluster's pools) is planned before the
    younger ones, oldest first; the others largest first, which packs best but lets a stream
    of large jobs pass a small one for as long as capacity is short."""
    idle_grace_s: float = 300.0
    """A node with no job for this long may be released (cordoned, then terminated)."""
    launches_per_minute: int = 10
    """The launch rate limit (requests to the provider)."""
    backoff_s: float = 60.0
    """After a failed boot, the pool buys nothing for this long (doubling, up to 16x)."""
    quarantine_after: int = 5
    """This many failed boots in a row quarantine the pool (an event; an admin lifts it)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    """Provider-specific settings (slurm_powersave: ``partition``, ``nodes``; sim: ``boot_s``):
    each provider checks its own (``make(pool)`` raises InvalidPool at ``("options", name)``)."""

    def __post_init__(self) -> None:
        for name, low in (("min_nodes", 0), ("max_nodes", 0), ("warm_idle", 0),
                          ("launches_per_minute", 1), ("quarantine_after", 1)):
            whole_number(getattr(self, name), low, (name,))
        if self.min_nodes > self.max_nodes:
            raise InvalidPool(f"min_nodes ({self.min_nodes}) is more than max_nodes "
                              f"({self.max_nodes})", ("min_nodes",))
        for name in ("price_per_hour", "billing_granularity_s", "billing_minimum_s",
                     "boot_timeout_s", "expected_boot_s", "slow_boot_factor", "boot_spares",
                     "fifo_after_s",
                     "idle_grace_s", "backoff_s"):
            amount(getattr(self, name), (name,))
        if self.billing_granularity_s <= 0:
            raise InvalidPool("must be more than 0", ("billing_granularity_s",))
        if self.provider not in PROVIDERS:
            raise InvalidPool(f"unknown provider {self.provider!r} (known: "
                              f"{', '.join(PROVIDERS)})", ("provider",))
        for name in ("cpus", "memory_mb", "gpus"):
            whole_number(getattr(self.shape, name), 0 if name == "gpus" else 1, ("shape", name))
        for key, value in self.options.items():
            if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
                raise InvalidPool("must be a string, number or boolean", ("options", str(key)))
        if self.capacity_type is CapacityType.STATIC and self.min_nodes != self.max_nodes:
            raise InvalidPool("a static pool has a fixed size: set min_nodes = max_nodes",
                              ("min_nodes",))

    @property
    def elastic(self) -> bool:
        return self.capacity_type is not CapacityType.STATIC


_POOL_FIELDS = {f.name for f in fields(Pool)}


def whole_number(value: object, low: int, loc: tuple[str | int, ...]) -> None:
    """InvalidPool at ``loc`` unless ``value`` is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidPool(f"must be an integer >= {low}", loc)


def amount(value: object, loc: tuple[str | int, ...]) -> None:
    """InvalidPool at ``loc`` unless ``value`` is a finite number >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise InvalidPool("must be a number >= 0", loc)


def pool_from_dict(data: Mapping[str, Any], loc: tuple[str | int, ...] = ()) -> Pool:
    """A pool from its config table; InvalidPool naming the field (inside ``loc``)."""
    if not isinstance(data, Mapping):
        raise InvalidPool("must be a table", loc)
    for key in data:
        if key not in _POOL_FIELDS:
            raise InvalidPool(f"unknown field {key!r}", (*loc, key))
    for key in ("name", "cluster", "provider", "shape"):
        if key not in data:
            raise InvalidPool("is required", (*loc, key))
    values = dict(data)
    for key in ("labels", "options"):
        if not isinstance(values.get(key, {}), Mapping):
            raise InvalidPool("must be a table", (*loc, key))
    shape = values["shape"]
    if not isinstance(shape, Mapping) or set(shape) - {"cpus", "memory_mb", "gpus"}:
        raise InvalidPool("must be a table of cpus, memory_mb and gpus", (*loc, "shape"))
    try:
        values["shape"] = NodeShape(**shape)
        values["capacity_type"] = CapacityType(values.get("capacity_type", "on_demand"))
    except TypeError as exc:
        raise InvalidPool(f"{exc}", (*loc, "shape")) from exc
    except ValueError as exc:
        raise InvalidPool(f"must be one of {', '.join(CapacityType)}",
                          (*loc, "capacity_type")) from exc
    return InvalidPool.located(loc, lambda: Pool(**values))


def pool_to_dict(pool: Pool) -> dict[str, Any]:
    """The pool as its config table (what :func:`pool_from_dict` reads back): the agent
    builds its providers from these, sent in the heartbeat's answer."""
    out: dict[str, Any] = {f.name: getattr(pool, f.name) for f in fields(Pool)}
    out["shape"] = {"cpus": pool.shape.cpus, "memory_mb": pool.shape.memory_mb,
                    "gpus": pool.shape.gpus}
    out["capacity_type"] = pool.capacity_type.value
    out["labels"] = dict(pool.labels)
    out["options"] = dict(pool.options)
    return out


def backoff_until(pool: Pool, failures_in_row: int, now: float) -> float:
    """When a pool that just had its ``failures_in_row``-th failed boot in a row may buy
    again: its ``backoff_s``, doubling with each failure, up to 16x."""
    return now + pool.backoff_s * 2 ** min(max(failures_in_row, 1) - 1, 4)


class NodeState(StrEnum):
    REQUESTED = "requested"
    """The scaler decided to buy it; the provider has not been asked yet."""
    LAUNCHING = "launching"
    """The provider was asked (with the node's idempotency key)."""
    BOOTING = "booting"
    """The provider has it; it is not ready for jobs yet."""
    IDLE = "idle"
    """Ready, with no job."""
    BUSY = "busy"
    """Ready, with at least one job."""
    CORDONED = "cordoned"
    """Being released: nothing new is placed on it; it goes once re-checked empty."""
    TERMINATING = "terminating"
    """The provider was asked to stop it."""
    TERMINATED = "terminated"
    """Gone; billing ended."""
    FAILED_BOOT = "failed_boot"
    """Not ready within the pool's boot timeout: terminated and replaced."""
    LOST = "lost"
    """The provider lost it (an eviction, a dead VM): its jobs' attempts are lost."""
    ORPHAN = "orphan"
    """The provider has it and Bridgehead never asked for it (or forgot): it is terminated."""


NODE_TERMINAL = frozenset({NodeState.TERMINATED, NodeState.FAILED_BOOT, NodeState.LOST})
NODE_READY = frozenset({NodeState.IDLE, NodeState.BUSY})
NODE_COMING = frozenset({NodeState.REQUESTED, NodeState.LAUNCHING, NodeState.BOOTING})
NODE_BILLED = frozenset({NodeState.LAUNCHING, NodeState.BOOTING, NodeState.IDLE, NodeState.BUSY,
                         NodeState.CORDONED, NodeState.TERMINATING, NodeState.ORPHAN})
"""States in which the provider may be charging for the node."""

NODE_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.REQUESTED: frozenset({NodeState.LAUNCHING, NodeState.TERMINATED}),
    NodeState.LAUNCHING: frozenset({NodeState.BOOTING, NodeState.IDLE, NodeState.FAILED_BOOT,
                                    NodeState.TERMINATING}),
    NodeState.BOOTING: frozenset({NodeState.IDLE, NodeState.FAILED_BOOT, NodeState.LOST,
                                  NodeState.TERMINATING}),
    NodeState.IDLE: frozenset({NodeState.BUSY, NodeState.CORDONED, NodeState.LOST}),
    NodeState.BUSY: frozenset({NodeState.IDLE, NodeState.LOST}),
    NodeState.CORDONED: frozenset({NodeState.IDLE, NodeState.TERMINATING, NodeState.LOST}),
    NodeState.TERMINATING: frozenset({NodeState.TERMINATED, NodeState.LOST}),
    NodeState.ORPHAN: frozenset({NodeState.TERMINATING}),
    **{s: frozenset() for s in NODE_TERMINAL},
}


class NodeTransitionError(ValueError):
    """A node change that the lifecycle does not allow (a bug, never user input)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One node of a pool, as the scaler knows it. ``since`` is when it entered ``state``."""

    id: str
    pool: str
    state: NodeState
    since: float
    launched_at: float | None = None
    """When the provider was asked for it (billing starts)."""
    ready_at: float | None = None
    ended_at: float | None = None
    """When billing ended (terminated, failed boot, lost)."""
    provider_id: str | None = None
    jobs: frozenset[str] = frozenset()
    """The jobs placed on it now."""

    def to(self, state: NodeState, at: float, **changes: Any) -> Node:
        """This node moved to ``state`` at ``at`` (NodeTransitionError if not allowed)."""
        if state not in NODE_TRANSITIONS[self.state]:
            raise NodeTransitionError(f"node {self.id}: {self.state} -> {state} is not allowed")
        if state in (NodeState.CORDONED, NodeState.TERMINATING) and self.jobs:
            raise NodeTransitionError(f"node {self.id} has jobs {sorted(self.jobs)}: it is "
                                      f"never {state.value}")
        stamps: dict[str, Any] = {}
        if state is NodeState.LAUNCHING:
            stamps["launched_at"] = at
        if state is NodeState.IDLE and self.ready_at is None:
            stamps["ready_at"] = at
        if state in NODE_TERMINAL:
            stamps["ended_at"] = at
        return replace(self, state=state, since=at, **{**stamps, **changes})
