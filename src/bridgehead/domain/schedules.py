"""Schedules of native workflows: when a workflow's ticks fall, and which ticks start a run.

A schedule is a ``cron`` expression read in a ``timezone`` (wall-clock times), or an
interval (``every``: real elapsed time). Pure rules, no I/O: the scheduler controller
(:mod:`bridgehead.controllers.scheduler`) stores the ticks and starts the runs.

Tick times (whole UNIX seconds):

- ``cron``: the expression's wall-clock times in the zone. Across a daylight-saving change a
  wall time that does not exist (spring forward: 02:30 on the last Sunday of March in
  Europe/Paris) fires at the first instant after the gap (03:00 local, once); a wall time that
  happens twice (fall back: 02:30 on the last Sunday of October) fires once, at its first
  occurrence. So a daily job runs once every day, and an hourly cron has one two-hour gap
  on the fall-back night (use ``every: 1h`` for every real hour).
- ``every``: the multiples of the interval since the UNIX epoch: ``every: 15m`` fires at
  :00, :15, :30 and :45 of each hour, ``every: 1d`` at midnight UTC.

A tick that cannot start on time, because no server was leading when it fell or because
``max_active_runs`` runs of the workflow were still running, is *late*; ``catchup`` says
what becomes of late ticks (:func:`decide`):

- ``none``: a tick starts within :data:`GRACE_S` of its time or never; an older tick is
  always superseded by a newer one.
- ``latest`` (the default): only the newest late tick waits and starts (however late); the
  older ones are skipped.
- ``all``: every late tick starts, oldest first, up to ``max_catchup`` of them (the newest
  ones); older ones are skipped.

A tick that waits because of ``max_active_runs`` starts when a run of the workflow ends:
ticks queue, bounded as above; they never start a run beyond the cap (no overlap with the
default ``max_active_runs: 1``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, croniter

from bridgehead.errors import InvalidAt

GRACE_S = 60.0
"""With ``catchup: none``, how late a tick may still start."""
MAX_CATCHUP = 100
"""The most late ticks ``catchup: all`` may start (``max_catchup`` beyond it is refused)."""
MAX_ACTIVE_RUNS = 100
"""The highest ``max_active_runs``."""
MIN_EVERY_S = 1
"""The shortest interval."""


class InvalidSchedule(InvalidAt):
    """A schedule is not valid (at ``loc``: ``("cron",)``)."""


class Catchup(StrEnum):
    NONE = "none"
    """A late tick is skipped (one within GRACE_S of its time still starts)."""
    LATEST = "latest"
    """Only the newest late tick starts."""
    ALL = "all"
    """Every late tick starts, up to ``max_catchup``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When a workflow runs by itself, and with what."""

    cron: str | None = None
    """A five-field cron expression (or @daily, @hourly, ...), read in ``timezone``."""
    timezone: str = "UTC"
    """An IANA zone (``Europe/Paris``) for ``cron``."""
    every_s: int | None = None
    """The interval in seconds, instead of ``cron``."""
    catchup: Catchup = Catchup.LATEST
    max_catchup: int = 10
    """With ``catchup: all``: how many late ticks start at most."""
    max_active_runs: int = 1
    """Runs of the workflow running at once, beyond which a tick waits (1: no overlap)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The params of each scheduled run (over the workflow's defaults)."""
    paused: bool = False
    """The schedule's state when its file is first seen or this value changes in the file
    (pause and resume change it in between)."""
    tenant: str = "default"
    """The tenant the scheduled runs belong to."""

    def __post_init__(self) -> None:
        if self.cron is None and self.every_s is None:
            raise InvalidSchedule("give cron (an expression) or every (an interval)", ())
        if self.cron is not None and self.every_s is not None:
            raise InvalidSchedule("give cron or every, not both", ())
        if self.every_s is not None and self.every_s < MIN_EVERY_S:
            raise InvalidSchedule(f"must be at least {MIN_EVERY_S}s", ("every",))
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidSchedule(f"{self.timezone!r} is not a known time zone (use an IANA "
                                  "name such as Europe/Paris or UTC)", ("timezone",)) from exc
        if self.cron is not None:
            if len(self.cron.split()) not in (1, 5):
                raise InvalidSchedule(f"{self.cron!r} is not a cron expression: give five "
                                      "fields (minute hour day month weekday)", ("cron",))
            try:
                croniter(self.cron, datetime.now(zone))
            except (CroniterBadCronError, ValueError, KeyError) as exc:
                raise InvalidSchedule(f"{self.cron!r} is not a cron expression: {exc}",
                                      ("cron",)) from exc
        if not 1 <= self.max_catchup <= MAX_CATCHUP:
            raise InvalidSchedule(f"must be between 1 and {MAX_CATCHUP}", ("max_catchup",))
        if not 1 <= self.max_active_runs <= MAX_ACTIVE_RUNS:
            raise InvalidSchedule(f"must be between 1 and {MAX_ACTIVE_RUNS}",
                                  ("max_active_runs",))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_ticks(self, after: float, count: int) -> list[int]:
        """The first ``count`` tick times strictly after ``after``."""
        if self.every_s is not None:
            first = math.floor(after) // self.every_s + 1
            return [(first + i) * self.every_s for i in range(count)]
        assert self.cron is not None
        it = croniter(self.cron, datetime.fromtimestamp(math.floor(after), self.zone))
        out: list[int] = []
        while len(out) < count:
            when = it.get_next(datetime)
            if not _repeated(when):
                out.append(int(when.timestamp()))
        return out

    def due(self, after: float, now: float, limit: int) -> tuple[list[int], bool]:
        """The newest ``limit`` tick times in ``(after, now]``, oldest first, and whether
        older ones in that span were left out."""
        if self.every_s is not None:
            last = math.floor(now) // self.every_s
            first = math.floor(after) // self.every_s + 1
            times = [t * self.every_s for t in range(max(first, last - limit + 1), last + 1)]
            return times, last - first + 1 > limit
        assert self.cron is not None
        it = croniter(self.cron, datetime.fromtimestamp(math.floor(now) + 1, self.zone))
        found: list[int] = []
        while True:
            when = it.get_prev(datetime)
            at = int(when.timestamp())
            if at <= after:
                return found[::-1], False
            if len(found) == limit:
                return found[::-1], True
            if not _repeated(when):
                found.append(at)

    def describe(self) -> str:
        """``0 2 * * * (Europe/Paris)`` or ``every 15m``."""
        if self.cron is not None:
            return f"{self.cron} ({self.timezone})"
        return f"every {_span(self.every_s or 0)}"


def _repeated(when: datetime) -> bool:
    """The second occurrence of a wall time that happens twice (fall back)."""
    first = when.replace(tzinfo=None).replace(tzinfo=when.tzinfo, fold=0)
    return first.utcoffset() != when.utcoffset()


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a schedule's waiting ticks now."""

    start: list[int]
    """Ticks to start a run for, oldest first."""
    skip: list[tuple[int, str]]
    """Ticks never to run, each with why."""


def decide(schedule: Schedule, waiting: list[int], now: float, active: int) -> Decision:
    """Of the ticks ``waiting`` (fallen, not yet started), which to skip per ``catchup`` and
    which to start given ``active`` runs of the workflow; the others keep waiting."""
    waiting = sorted(waiting)
    keep, skip = list(waiting), []
    if schedule.catchup is Catchup.ALL:
        keep = waiting[-schedule.max_catchup:]
        skip = [(t, f"more than max_catchup ({schedule.max_catchup}) ticks late")
                for t in waiting[:-schedule.max_catchup]]
    elif waiting:
        keep, newest = waiting[-1:], waiting[-1]
        skip = [(t, f"superseded by the tick at {stamp(newest)} (catchup: "
                 f"{schedule.catchup.value})") for t in waiting[:-1]]
        if schedule.catchup is Catchup.NONE and now - newest > GRACE_S:
            keep = []
            skip.append((newest, f"{int(now - newest)}s late (catchup: none)"))
    slots = max(0, schedule.max_active_runs - active)
    return Decision(start=keep[:slots], skip=skip)


def stamp(at: float) -> str:
    """A tick time as ``2026-12-05T02:00:00Z``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tick_key(workflow: str, at: int) -> str:
    """The idempotency key of the run a tick starts: one run per tick, whoever starts it."""
    return f"schedule:{workflow}:{at}"
