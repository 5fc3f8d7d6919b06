"""``GET /v1/costs``: what jobs cost, rolled up by job, run, workflow, DAG, tenant or cluster,
per day or hour, from the attempts ledger and each cluster's price (``[server.prices]``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from bridgehead.domain.clusters import Role
from bridgehead.domain.costs import AttemptRecord, Price, pool_costs, pool_price, rollup
from bridgehead.domain.pools import Pool
from bridgehead.errors import InvalidSpec
from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.deps import store_of
from bridgehead.server.guard import plain
from bridgehead.store.pools_sql import PoolStore

router = APIRouter(prefix="/v1", tags=["costs"])
MAX_SPAN_S = 366 * 86400


class CostRowOut(BaseModel):
    group: str
    bucket: datetime | None = Field(description="the bucket's start (UTC); null: no buckets")
    cost: float
    waste: float = Field(description="the cost of attempts lost, failed or timed out")
    attempts: int
    core_hours: float


class PoolCostOut(BaseModel):
    pool: str
    cluster: str
    node_hours: float
    node_cost: float
    attempts: float
    idle: float


class CostsOut(BaseModel):
    by: str
    bucket: str
    since: datetime
    until: datetime
    total: float
    waste: float
    rows: list[CostRowOut]
    unpriced: list[str] = Field(description=(
        "clusters that ran attempts in the window but have no [server.prices] entry: their "
        "attempts are counted at cost 0"))
    idle: float = Field(0.0, description="the pools' idle cost: node cost not used by attempts")
    pools: list[PoolCostOut] = Field(default_factory=list, description=(
        "each elastic pool's node cost (the node ledger), its attempts' share and the idle "
        "rest, apart from the rows (for admins and clients of every tenant)"))


@router.get("/costs", response_model=CostsOut)
async def costs(
    request: Request,
    p: ClientOrAdmin,
    by: Annotated[Literal["job", "run", "workflow", "dag", "tenant", "cluster", "total"],
                  Query(description="what to roll up by (dag: an Airflow dag_id, else a "
                                    "native workflow's name)")] = "dag",
    bucket: Literal["day", "hour", "none"] = "day",
    since: Annotated[float | None, Query(ge=0, description="UNIX seconds; default: 7 days "
                                                           "ago")] = None,
    until: Annotated[float | None, Query(ge=0, description="UNIX seconds; default: now")] = None,
) -> CostsOut:
    """Costs of the attempts that ended in [since, until). A client token of one tenant sees
    its tenant's only."""
    end = until if until is not None else time.time()
    start = since if since is not None else end - 7 * 86400
    if start >= end:
        raise InvalidSpec("since must be before until")
    if end - start > MAX_SPAN_S:
        raise InvalidSpec("a cost query spans at most 366 days")
    tenant = None if p.role is Role.ADMIN else p.tenant
    records = await store_of(request).attempts(since=start, until=end, tenant=tenant)
    prices = {name: Price(**table.model_dump())
              for name, table in request.app.state.settings.prices.items()}
    pools = await _pools(request, prices, start, end,
                         records=records if tenant is None else None)
    rows, unpriced = rollup(records, prices, by=by, bucket=bucket)
    return CostsOut(
        by=by, bucket=bucket, since=_ts(start), until=_ts(end), pools=pools,
        idle=sum(p.idle for p in pools),
        total=sum(r.cost for r in rows), waste=sum(r.waste for r in rows), unpriced=unpriced,
        rows=[CostRowOut(group=plain(r.group),  # a label: a row stored before the checks
                         bucket=_ts(r.bucket) if r.bucket is not None else None,
                         cost=r.cost, waste=r.waste, attempts=r.attempts,
                         core_hours=r.core_hours) for r in rows])


async def _pools(request: Request, prices: dict[str, Price], since: float, until: float, *,
                 records: list[AttemptRecord] | None) -> list[PoolCostOut]:
    """The pools' lines, from every tenant's attempts in the window (``records``; None: the
    lines are not shown to this caller, a tenant's client). A cluster with pools and no
    ``[server.prices]`` entry is priced from its pools (``prices`` gains it), so its attempts
    and its idle rest add up to its nodes."""
    pools: list[Pool] = request.app.state.pools
    if not pools:
        return []
    nodes = [(s.node.pool, s.node.launched_at or 0.0, s.node.ended_at) for s in
             await cast(PoolStore, store_of(request)).billed_nodes(since=since, until=until)]
    hours = {p.pool: p.node_hours for p in pool_costs(pools, nodes, [], {}, since=since,
                                                      until=until)}
    for cluster in {p.cluster for p in pools} - set(prices):
        prices[cluster] = pool_price([p for p in pools if p.cluster == cluster], hours)
    if records is None:
        return []
    return [PoolCostOut(pool=c.pool, cluster=c.cluster, node_hours=c.node_hours,
                        node_cost=c.node_cost, attempts=c.attempts, idle=c.idle)
            for c in pool_costs(pools, nodes, records, prices, since=since, until=until)]


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)
