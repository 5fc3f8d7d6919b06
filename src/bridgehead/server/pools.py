"""Elastic pools over HTTP: the heartbeat's node report and scale commands (the wire of
``docs/pools.md``), and ``GET /v1/pools``.

An agent that runs providers lists its cluster's pools' nodes in each heartbeat (``nodes``),
with the errors of the commands it ran (``node_errors``); the answer carries the cluster's
pools (the agent builds its providers from them: it has no pool config of its own) and the
commands to run now (``scale``). Only the pools of the token's cluster are read or changed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal, cast

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bridgehead.domain.clusters import Role
from bridgehead.domain.pool_reconcile import ProviderNode
from bridgehead.domain.pool_report import NodeError
from bridgehead.domain.pools import NODE_READY, NodeState, Pool, pool_to_dict
from bridgehead.errors import NotFound
from bridgehead.server.auth import Admin, Authed
from bridgehead.store.pools_sql import PoolStore, StoredNode

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["pools"])
_Id = Field(min_length=1, max_length=256)


class NodeIn(BaseModel):
    """One node as the agent's provider lists it (the fields of ``Listed``)."""

    model_config = ConfigDict(extra="forbid")
    provider_id: str = _Id
    pool: str = _Id
    key: str | None = Field(None, max_length=256)
    ready: bool = Field(False, strict=True)
    jobs: int = Field(0, ge=0, le=1_000_000, strict=True)
    interrupted: bool = Field(False, strict=True)
    adopted: bool = Field(False, strict=True)
    job_ids: list[str] = Field(default_factory=list, max_length=10_000, description=(
        "the Bridgehead jobs on the node, when the agent can tell: a lost node's attempts "
        "are then lost to the infrastructure (one new attempt each)"))

    def to_domain(self) -> ProviderNode:
        return ProviderNode(provider_id=self.provider_id, pool=self.pool, key=self.key,
                            ready=self.ready, jobs=self.jobs, job_ids=frozenset(self.job_ids),
                            interrupted=self.interrupted, adopted=self.adopted)


class NodeErrorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: str = _Id
    keys: list[str] = Field(default_factory=list, max_length=10_000)
    op: Literal["launch", "terminate"]
    error: str = Field(max_length=4096)
    shortage: bool = Field(False, strict=True)

    def to_domain(self) -> NodeError:
        return NodeError(pool=self.pool, keys=tuple(self.keys), op=self.op, error=self.error,
                         shortage=self.shortage)


def cluster_pools(request: Request, cluster: str) -> dict[str, Pool]:
    return {p.name: p for p in request.app.state.pools if p.cluster == cluster}


async def heartbeat_pools(request: Request, cluster: str, nodes: list[NodeIn] | None,
                          errors: list[NodeErrorIn]) -> dict[str, Any]:
    """The heartbeat answer's ``pools`` and ``scale``, the report applied first."""
    pools = cluster_pools(request, cluster)
    out: dict[str, Any] = {"pools": [pool_to_dict(p) for p in pools.values()], "scale": []}
    if nodes is None or not pools:
        return out
    state = request.app.state
    for e in errors:
        logger.warning("cluster %s: pool %s: %s of %s failed%s: %s", cluster, e.pool, e.op,
                       ", ".join(e.keys) or "-", " (capacity shortage)" if e.shortage else "",
                       e.error)
    applied = await cast(PoolStore, state.store).report_nodes(
        cluster, pools, [n.to_domain() for n in nodes], [e.to_domain() for e in errors],
        orphan_grace_s=state.settings.orphan_grace_s,
        max_lost_attempts=state.settings.max_lost_attempts)
    for n in applied.booted:
        if n.ready_at is not None and n.launched_at is not None:
            state.metrics.booted(n.pool, n.ready_at - n.launched_at)
    out["scale"] = [{"op": c.op, "pool": c.pool, "key": c.key, "provider_id": c.provider_id}
                    for c in applied.commands]
    return out


class NodeOut(BaseModel):
    id: str
    state: str
    since: datetime
    provider_id: str | None
    jobs: int
    adopted: bool


class PoolOut(BaseModel):
    name: str
    cluster: str
    provider: str
    capacity_type: str
    cpus: int
    memory_mb: int
    gpus: int
    min_nodes: int
    max_nodes: int
    price_per_hour: float
    states: dict[str, int] = Field(description="live nodes by state")
    nodes: list[NodeOut]
    backoff_until: datetime | None
    failures_in_row: int
    quarantined: bool
    shortage_since: datetime | None = Field(
        None, description="when the provider began refusing the pool's launches for a capacity "
        "shortage, none taken since: the pool buys one node at a time until one is taken")


@router.get("/pools", response_model=list[PoolOut])
async def pools(request: Request, p: Authed) -> list[PoolOut]:
    """The elastic pools with their live nodes; an agent token sees its cluster's only."""
    store = cast(PoolStore, request.app.state.store)
    nodes = await store.pool_nodes()
    standings = await store.pool_standings()
    now = time.time()
    out = []
    for pool in request.app.state.pools:
        if p.role is Role.AGENT and p.cluster != pool.cluster:
            continue
        mine = [s for s in nodes if s.node.pool == pool.name]
        s = standings.get(pool.name)
        back = s.backoff_until if s is not None and s.backoff_until > now else None
        out.append(PoolOut(
            name=pool.name, cluster=pool.cluster, provider=pool.provider,
            capacity_type=pool.capacity_type.value, cpus=pool.shape.cpus,
            memory_mb=pool.shape.memory_mb, gpus=pool.shape.gpus, min_nodes=pool.min_nodes,
            max_nodes=pool.max_nodes, price_per_hour=pool.price_per_hour,
            states=dict(sorted(Counter(n.node.state.value for n in mine).items())),
            nodes=[_node_out(n) for n in mine],
            backoff_until=datetime.fromtimestamp(back, UTC) if back is not None else None,
            failures_in_row=s.failures_in_row if s else 0,
            quarantined=s.quarantined if s else False,
            shortage_since=datetime.fromtimestamp(s.short_since, UTC)
            if s is not None and s.short_since is not None else None))
    return out


@router.post("/pools/{name}/lift", response_model=PoolOut)
async def lift(name: str, request: Request, p: Admin) -> PoolOut:
    """End a pool's quarantine (and its backoff): the scaler buys from it again. Admins
    only; logs ``bridgehead.pool.lifted``."""
    if name not in {pool.name for pool in request.app.state.pools}:
        raise NotFound(f"no pool {name!r} (see GET /v1/pools)")
    await cast(PoolStore, request.app.state.store).lift_quarantine(name)
    [out] = [o for o in await pools(request, p) if o.name == name]
    return out


def _node_out(s: StoredNode) -> NodeOut:
    return NodeOut(id=s.node.id, state=s.node.state.value,
                   since=datetime.fromtimestamp(s.node.since, UTC),
                   provider_id=s.node.provider_id, jobs=max(s.jobs, len(s.node.jobs)),
                   adopted=s.adopted)


async def pool_gauges(state: Any) -> None:
    """Set the pool metrics (nodes by state, idle share) before a scrape (``state``: the
    app's)."""
    if not state.pools:
        return
    nodes = await cast(PoolStore, state.store).pool_nodes()
    counts = {(p.name, s.value): 0 for p in state.pools for s in NodeState}
    ready: Counter[str] = Counter()
    idle: Counter[str] = Counter()
    for s in nodes:
        key = (s.node.pool, s.node.state.value)
        if key in counts:
            counts[key] += 1
        if s.node.state in NODE_READY:
            ready[s.node.pool] += 1
            idle[s.node.pool] += s.node.state is NodeState.IDLE
    state.metrics.pools(counts, {p.name: idle[p.name] / ready[p.name] if ready[p.name] else 0.0
                                 for p in state.pools})
