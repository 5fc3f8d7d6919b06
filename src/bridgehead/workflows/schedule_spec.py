"""The ``schedule:`` block of a workflow file (see :mod:`bridgehead.domain.schedules`)::

    schedule:
      cron: "0 2 * * *"          # or every: 15m
      timezone: Europe/Paris     # for cron; default UTC
      catchup: latest            # none | latest | all
      max_catchup: 10            # catchup: all starts at most this many late ticks
      max_active_runs: 1         # a tick waits while this many runs are running
      params: {day: yesterday}   # each scheduled run's params
      paused: false
      tenant: default            # whose runs they are

Checked by the same parser as the rest of the file (``bridgehead workflow validate``, the
API's validation and the editor), each error at its field (``schedule.cron: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, WithJsonSchema
from pydantic_core import PydanticCustomError

from bridgehead.domain.schedules import (
    MAX_ACTIVE_RUNS,
    MAX_CATCHUP,
    Catchup,
    InvalidSchedule,
    Schedule,
)
from bridgehead.domain.units import parse_walltime
from bridgehead.domain.workflows import InvalidWorkflow
from bridgehead.errors import InvalidSpec

TENANT = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$"
"""A tenant's name, as the API takes it."""


def _interval(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return parse_walltime(value)
    except InvalidSpec as exc:
        raise PydanticCustomError("interval", "{text} is not an interval: use 90, 15m, 2h "
                                  "or 1d", {"text": repr(value)}) from exc


Interval = Annotated[int, BeforeValidator(_interval), Field(ge=1), WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"type": "string"}],
     "description": "seconds, or 90, 15m, 2h, 1d"})]


class ScheduleModel(BaseModel):
    """When the workflow runs by itself: a cron expression in a time zone, or an interval."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Schedule")
    cron: str | None = Field(None, description="five fields: minute hour day month weekday")
    timezone: str = Field("UTC", description="IANA time zone of cron, e.g. Europe/Paris")
    every: Interval | None = Field(None, description="an interval instead of cron")
    catchup: Literal["none", "latest", "all"] = Field(
        "latest", description="late ticks: none skips them, latest starts the newest, all "
        "starts each (up to max_catchup)")
    max_catchup: int = Field(10, ge=1, le=MAX_CATCHUP)
    max_active_runs: int = Field(1, ge=1, le=MAX_ACTIVE_RUNS,
                                 description="runs at once; a tick waits beyond (1: no overlap)")
    params: dict[str, JsonValue] = Field({}, description="each scheduled run's params")
    paused: bool = False
    tenant: str = Field("default", pattern=TENANT, description="whose runs they are")


def to_schedule(model: ScheduleModel | None, declared: Mapping[str, Any]) -> Schedule | None:
    """The domain's schedule; ``InvalidWorkflow`` at its field (inside ``schedule``), a
    param the workflow does not declare included."""
    if model is None:
        return None
    unknown = sorted(set(model.params) - set(declared))
    if unknown:
        raise InvalidWorkflow(f"the workflow has no param {unknown[0]!r} (it has: "
                              f"{', '.join(declared) or 'none'})", ("params", unknown[0]))
    try:
        return Schedule(cron=model.cron, timezone=model.timezone, every_s=model.every,
                        catchup=Catchup(model.catchup), max_catchup=model.max_catchup,
                        max_active_runs=model.max_active_runs, params=dict(model.params),
                        paused=model.paused, tenant=model.tenant)
    except InvalidSchedule as exc:
        raise InvalidWorkflow(exc.detail, exc.loc) from exc
