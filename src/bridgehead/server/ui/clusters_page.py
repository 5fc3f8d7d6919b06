"""The Clusters page: each cluster's agent, heartbeat, labels and active jobs by state (the
exact counts the store keeps, never a count of the jobs table), its queue and running jobs
per hour over the last day (sampled by the tally: :mod:`bridgehead.controllers.tally`), and
the elastic pools with their nodes when any are configured (``GET /v1/pools``'s own
function, so an agent token would see its cluster's only, as there)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.pools import pools as pools_of
from bridgehead.server.sessions import ui_store
from bridgehead.server.ui.views import render
from bridgehead.store.ui_sql import HOUR_S, HourSample

router = APIRouter(prefix="/ui", include_in_schema=False)
HOURS = 24
BAR_W, CHART_H = 12, 40
"""An hour's bar pair's width and the chart's height, in SVG units."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hour:
    """One hour of a cluster's chart: its start and its samples (None: not sampled, no
    server was tallying then)."""

    start: float
    sample: HourSample | None


@router.get("/clusters", response_class=HTMLResponse)
async def clusters(request: Request, p: ClientOrAdmin) -> HTMLResponse:
    store, now = ui_store(request), time.time()
    ttl = request.app.state.settings.cluster_ttl_s
    found = [(s, bool(s.cluster.online(now, ttl))) for s in await store.clusters()]
    first = (now // HOUR_S - (HOURS - 1)) * HOUR_S
    history = await store.cluster_history(since=first)
    charts = {s.cluster.name: _chart(history.get(s.cluster.name, []), first)
              for s, _ in found}
    pools = await pools_of(request, p) if request.app.state.pools else []
    return render(request, "clusters.html", title="Clusters", clusters=found, now=now,
                  charts=charts, pools=pools)


def _chart(samples: list[HourSample], first: float) -> dict[str, Any]:
    """The last HOURS hours of one cluster, oldest first, and its bars in SVG units (each
    hour: its queue's peak, then its running jobs' peak, scaled to the day's highest)."""
    by_hour = {s.hour: s for s in samples}
    hours = [Hour(start=first + i * HOUR_S, sample=by_hour.get(first + i * HOUR_S))
             for i in range(HOURS)]
    top = max([1] + [max(s.queued_max, s.running_max) for s in samples])
    bars = []
    for i, h in enumerate(hours):
        if h.sample is None:
            continue
        for j, value in enumerate((h.sample.queued_max, h.sample.running_max)):
            height = round(CHART_H * value / top, 1)
            bars.append({"x": i * BAR_W + j * (BAR_W // 2), "y": CHART_H - height,
                         "h": height, "kind": ("queued", "running")[j]})
    return {"hours": hours, "bars": bars, "top": top, "width": HOURS * BAR_W,
            "height": CHART_H, "bar": BAR_W // 2 - 1,
            "queued_peak": max((s.queued_max for s in samples), default=0),
            "running_peak": max((s.running_max for s in samples), default=0),
            "sampled": len(samples)}
