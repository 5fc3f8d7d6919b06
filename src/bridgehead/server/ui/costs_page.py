"""The Costs page: ``GET /v1/costs`` (the same route function, so the same tenant scoping)
as a table, and the same rows as CSV. Without ``[server.prices]`` it says costs are not
configured and still shows attempts and core-hours."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from bridgehead.errors import InvalidSpec
from bridgehead.server import costs as api
from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.ui.views import render

router = APIRouter(prefix="/ui", include_in_schema=False)
BY = ("dag", "workflow", "run", "job", "tenant", "cluster", "total")
BUCKETS = ("day", "hour", "none")


def _query(by: str, bucket: str, days: str) -> dict[str, Any]:
    if by not in BY:
        raise InvalidSpec(f"by: {by!r} is not one of {', '.join(BY)}")
    if bucket not in BUCKETS:
        raise InvalidSpec(f"bucket: {bucket!r} is not one of {', '.join(BUCKETS)}")
    try:
        span = float(days)
    except ValueError as exc:
        raise InvalidSpec(f"days: {days!r} is not a number") from exc
    if not 0 < span <= 366:
        raise InvalidSpec(f"days: {days!r} is not between 0 and 366")
    now = time.time()
    return {"by": by, "bucket": bucket, "since": now - span * 86400, "until": now}


@router.get("/costs", response_class=HTMLResponse)
async def costs(request: Request, p: ClientOrAdmin, by: str = "dag", bucket: str = "day",
                days: str = "7") -> HTMLResponse:
    found = await api.costs(request, p, **_query(by, bucket, days))
    return render(request, "costs.html", title="Costs", costs=found,
                  priced=bool(request.app.state.settings.prices), by_options=BY,
                  buckets=BUCKETS, f={"by": by, "bucket": bucket, "days": days})


@router.get("/costs.csv")
async def costs_csv(request: Request, p: ClientOrAdmin, by: str = "dag", bucket: str = "day",
                    days: str = "7") -> Response:
    """The rows of the page's table, as CSV (bucket as ISO 8601, UTC)."""
    found = await api.costs(request, p, **_query(by, bucket, days))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([by, "bucket", "cost", "waste", "attempts", "core_hours"])
    for row in found.rows:
        writer.writerow([row.group, row.bucket.isoformat() if row.bucket else "",
                         f"{row.cost:.4f}", f"{row.waste:.4f}", row.attempts,
                         f"{row.core_hours:.4f}"])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="costs-by-{by}.csv"'})
