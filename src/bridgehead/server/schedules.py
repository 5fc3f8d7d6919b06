"""Workflow schedules: list them with their next run times and recent ticks; pause, resume.

The schedules are the ``schedule:`` blocks of the server's workflow files (``[server]
workflows_dir``), kept in the store by the scheduler (:mod:`bridgehead.controllers.scheduler`).
A client sees and steers its tenant's schedules (every tenant's if its token has none), an
admin all; another tenant's schedule is "not found", as runs are.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from bridgehead.domain.clusters import Principal
from bridgehead.domain.schedules import stamp
from bridgehead.errors import NotFound
from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.openapi import errors
from bridgehead.store.schedules_sql import ScheduleStore, StoredSchedule
from bridgehead.workflows.launch import spec_of

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
RECENT = 5
"""Recent ticks shown per schedule."""


class TickOut(BaseModel):
    at: str = Field(description="The tick's time (UTC, ISO 8601).")
    state: str = Field(description="waiting, started or skipped.")
    run_id: str | None = None
    reason: str | None = Field(None, description="Why it was skipped.")


class ScheduleOut(BaseModel):
    workflow: str
    tenant: str
    filename: str
    when: str = Field(description="'0 2 * * * (Europe/Paris)' or 'every 15m'.")
    cron: str | None
    timezone: str
    every_s: int | None
    catchup: str
    max_catchup: int
    max_active_runs: int
    params: dict[str, object]
    paused: bool
    next_runs: list[str] = Field(description="The next tick times (UTC, ISO 8601); none "
                                 "while paused.")
    recent: list[TickOut] = Field(description="The latest ticks, newest first.")


def _store(request: Request) -> ScheduleStore:
    return cast(ScheduleStore, request.app.state.store)


async def schedule_out(request: Request, stored: StoredSchedule, count: int) -> ScheduleOut:
    """One schedule as the API (and the web UI) shows it."""
    schedule = spec_of(stored.spec, stored.filename).schedule
    assert schedule is not None  # stored only when the file has one
    now = max(request.app.state.clock(), stored.last_tick)
    upcoming = [] if stored.paused else schedule.next_ticks(now, count)
    ticks = await _store(request).recent_ticks(stored.workflow, RECENT)
    return ScheduleOut(
        workflow=stored.workflow, tenant=stored.tenant, filename=stored.filename,
        when=schedule.describe(), cron=schedule.cron, timezone=schedule.timezone,
        every_s=schedule.every_s, catchup=schedule.catchup.value,
        max_catchup=schedule.max_catchup, max_active_runs=schedule.max_active_runs,
        params=dict(schedule.params), paused=stored.paused,
        next_runs=[stamp(t) for t in upcoming],
        recent=[TickOut(at=stamp(t.at), state=t.state, run_id=t.run_id, reason=t.reason)
                for t in ticks])


async def visible_schedules(request: Request, p: Principal) -> list[StoredSchedule]:
    return [s for s in await _store(request).schedules() if p.may_see_tenant(s.tenant)]


@router.get("", response_model=list[ScheduleOut])
async def list_schedules(request: Request, p: ClientOrAdmin,
                         next_runs: Annotated[int, Query(ge=0, le=50)] = 5,
                         ) -> list[ScheduleOut]:
    """The schedules the token may see, by workflow name, each with its ``next_runs`` tick
    times and its latest ticks."""
    return [await schedule_out(request, s, next_runs)
            for s in await visible_schedules(request, p)]


async def set_paused(request: Request, p: Principal, workflow: str,
                     paused: bool) -> StoredSchedule:
    """Pause or resume a schedule the principal may see (NotFound otherwise)."""
    store = _store(request)
    try:
        stored = await store.get_schedule(workflow)
    except NotFound:
        stored = None
    if stored is None or not p.may_see_tenant(stored.tenant):
        raise NotFound(f"no schedule for workflow {workflow!r}")
    return await store.set_paused(workflow, paused, request.app.state.clock())


@router.post("/{workflow}/pause", response_model=ScheduleOut, responses=errors(404))
async def pause(workflow: str, request: Request, p: ClientOrAdmin) -> ScheduleOut:
    """Pause a schedule: no tick falls until it is resumed."""
    return await schedule_out(request, await set_paused(request, p, workflow, True), 5)


@router.post("/{workflow}/resume", response_model=ScheduleOut, responses=errors(404))
async def resume(workflow: str, request: Request, p: ClientOrAdmin) -> ScheduleOut:
    """Resume a schedule: it ticks again from now (ticks that fell while it was paused are
    not run)."""
    return await schedule_out(request, await set_paused(request, p, workflow, False), 5)
