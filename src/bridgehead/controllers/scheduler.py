"""The scheduler: starts one run per tick of each workflow schedule, on one server at a time.

It is a leased consumer (:mod:`bridgehead.controllers.consumers`): several servers may run
it over one PostgreSQL store; the lease holder acts, the others stand by. Each pass:

1. reads the workflow files of ``[server] workflows_dir`` (only files changed since the last
   pass are parsed again) and makes the stored schedules those files' ``schedule:`` blocks;
2. for each schedule not paused, records the ticks due since its ``last_tick`` as waiting
   rows (unique per workflow and tick time: a second scheduler acting at once by a lease
   handover records nothing twice), bounded by its catch-up policy;
3. decides, per :func:`bridgehead.domain.schedules.decide`, which waiting ticks are skipped
   and which start a run now (``max_active_runs``), and starts each with the tick's
   idempotency key, then marks the tick started. A crash between the run and the mark
   leaves the tick waiting; the next pass creates the run again with the same key, which
   returns the run already made: one run per tick, none lost.

A pass runs every ``pass_s`` seconds, and at once when a run of any workflow ends (its
event wakes the consumer: a tick waiting for ``max_active_runs`` starts promptly).

Time comes from ``clock`` (``time.time`` in production). Tests give the servers a clock
read from a file (:func:`file_clock`, the ``[server] schedule_clock_file`` setting, which
nothing sets by default) to drive ticks without waiting for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridgehead.controllers.consumers import EventConsumer
from bridgehead.domain.events import Event
from bridgehead.domain.schedules import Catchup, Schedule, decide, stamp, tick_key
from bridgehead.errors import BridgeheadError, StoreError
from bridgehead.metrics import Metrics
from bridgehead.store.schedules_sql import ScheduleFile, ScheduleStore, StoredSchedule
from bridgehead.workflows.launch import create_run, spec_of
from bridgehead.workflows.spec import read_spec_file

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
KEEP_TICKS_S = 30 * 86400.0
"""Ended ticks are forgotten this long after they fell (the runs they started stay)."""
PRUNE_EVERY_S = 3600.0
"""How often (real time) the scheduler forgets old ticks."""
ENDED = ("bridgehead.workflow.succeeded", "bridgehead.workflow.failed",
         "bridgehead.workflow.cancelled")


def file_clock(path: Path) -> Clock:
    """A clock read from ``path`` (UNIX seconds as text), for tests that drive the
    schedules' time; the system's time while the file is missing or unreadable."""

    def now() -> float:
        try:
            return float(path.read_text().strip())
        except (OSError, ValueError):
            return time.time()

    return now


@dataclass(frozen=True, slots=True)
class _Read:
    key: tuple[int, int]
    found: ScheduleFile | None


class Scheduler(EventConsumer):
    name = "scheduler"
    types = ENDED

    def __init__(self, store: ScheduleStore, *, folder: Path, clock: Clock = time.time,
                 pass_s: float = 5.0, lease_s: float = 15.0,
                 metrics: Metrics | None = None) -> None:
        super().__init__(store, lease_s=lease_s, metrics=metrics)
        self.schedules: ScheduleStore = store
        self.folder = folder
        self.clock = clock
        self.pass_s = pass_s
        self._next_pass = 0.0
        self._files: dict[Path, _Read] = {}
        self._next_prune = 0.0

    async def start(self) -> None:
        self._next_pass = 0.0

    async def handle(self, events: list[Event]) -> bool:
        self._next_pass = 0.0  # a run ended: a waiting tick may start now
        return False

    def next_wake(self) -> float | None:
        return self._next_pass

    async def tick(self, now: float) -> None:
        if now >= self._next_pass:
            self._next_pass = now + self.pass_s
            await self.run_pass()

    async def run_pass(self) -> None:
        """Sync the files, then record and start each schedule's due ticks."""
        now = self.clock()
        await self.schedules.sync_schedules(self.read_files(), now)
        stored_all = await self.schedules.schedules()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            for stored in stored_all:
                await self.schedules.prune_ticks(stored.workflow, now - KEEP_TICKS_S)
        for stored in stored_all:
            if stored.paused:
                continue
            try:
                await self._one(stored, now)
            except StoreError:
                raise
            except Exception:  # one schedule's bug must not stop the others
                logger.exception("schedule %s failed; trying again next pass", stored.workflow)

    def read_files(self) -> list[ScheduleFile]:
        """The folder's workflow files that have a schedule; a bad file is logged and left
        out (the others keep running), a second file of one workflow name too."""
        paths = sorted(p for p in self.folder.glob("*.y*ml") if p.is_file()) \
            if self.folder.is_dir() else []
        reads: dict[Path, _Read] = {}
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            key = (stat.st_mtime_ns, stat.st_size)
            known = self._files.get(path)
            reads[path] = known if known is not None and known.key == key \
                else _Read(key, _schedule_file(path))
        self._files = reads
        out: dict[str, ScheduleFile] = {}
        for path, read in reads.items():
            if read.found is None:
                continue
            if read.found.workflow in out:
                logger.error("%s: workflow %r is also in another file; its schedule is left "
                             "out", path, read.found.workflow)
                continue
            out[read.found.workflow] = read.found
        return list(out.values())

    async def _one(self, stored: StoredSchedule, now: float) -> None:
        schedule = spec_of(stored.spec, stored.filename).schedule
        if schedule is None:
            return
        limit = schedule.max_catchup if schedule.catchup is Catchup.ALL else 1
        due, older = schedule.due(stored.last_tick, now, limit)
        if due and await self.schedules.add_ticks(stored.workflow, stored.tenant,
                                                  stored.last_tick, due):
            if older:
                logger.warning("schedule %s: ticks before %s were missed and are not run "
                               "(catchup: %s)", stored.workflow, stamp(due[0]),
                               schedule.catchup.value)
        waiting = await self.schedules.waiting_ticks(stored.workflow)
        if not waiting:
            return
        active = await self.schedules.running_runs(stored.workflow, stored.tenant)
        decision = decide(schedule, waiting, now, active)
        for at, why in decision.skip:
            if await self.schedules.end_tick(stored.workflow, at, "skipped", reason=why):
                logger.info("schedule %s: tick %s skipped: %s", stored.workflow, stamp(at), why)
        for at in decision.start:
            await self._start(stored, schedule, at)

    async def _start(self, stored: StoredSchedule, schedule: Schedule, at: int) -> None:
        try:
            run, _ = await create_run(self.schedules, stored.spec, filename=stored.filename,
                                      params=schedule.params, tenant=stored.tenant,
                                      idempotency_key=tick_key(stored.workflow, at))
        except StoreError:
            raise
        except BridgeheadError as exc:
            await self.schedules.end_tick(stored.workflow, at, "skipped",
                                          reason=f"the run could not start: {exc}")
            return
        if await self.schedules.end_tick(stored.workflow, at, "started", run_id=run.id):
            logger.info("schedule %s: tick %s started run %s", stored.workflow, stamp(at),
                        run.id)


def _schedule_file(path: Path) -> ScheduleFile | None:
    try:
        text = read_spec_file(path)
        spec = spec_of(text, path.name)
    except BridgeheadError as exc:
        logger.error("workflow file left out of the schedules: %s", exc)
        return None
    if spec.schedule is None:
        return None
    return ScheduleFile(workflow=spec.name, tenant=spec.schedule.tenant, filename=path.name,
                        spec=text, paused=spec.schedule.paused)
