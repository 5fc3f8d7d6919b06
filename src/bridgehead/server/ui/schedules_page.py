"""The Workflows page's schedules (each with its next runs and last tick) and its pause and
resume buttons. They go through the API's own functions (:mod:`bridgehead.server.schedules`):
the same tenant scoping, and for a session cookie the same Origin and CSRF checks as every
UI write (``ClientOrAdmin``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from bridgehead.domain.clusters import Principal
from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.schedules import (
    ScheduleOut,
    schedule_out,
    set_paused,
    visible_schedules,
)

router = APIRouter(prefix="/ui", include_in_schema=False)
NEXT_RUNS = 3
"""Next run times shown per schedule."""


async def schedules_of(request: Request, p: Principal) -> list[ScheduleOut]:
    """The schedules ``p`` may see, as the Workflows page shows them."""
    return [await schedule_out(request, s, NEXT_RUNS)
            for s in await visible_schedules(request, p)]


@router.post("/schedules/{workflow}/pause")
async def pause(request: Request, workflow: str, p: ClientOrAdmin) -> Response:
    await set_paused(request, p, workflow, True)
    return RedirectResponse("/ui/workflows#schedules", 303)


@router.post("/schedules/{workflow}/resume")
async def resume(request: Request, workflow: str, p: ClientOrAdmin) -> Response:
    await set_paused(request, p, workflow, False)
    return RedirectResponse("/ui/workflows#schedules", 303)
