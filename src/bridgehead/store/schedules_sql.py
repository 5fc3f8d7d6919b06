"""The store's workflow schedules and their ticks (migration 0009).

A schedule row is a workflow the server knows (its file's text, from ``[server]
workflows_dir``) with a ``schedule:``; the scheduler (:mod:`bridgehead.controllers.scheduler`)
keeps the rows in step with the files. Its ``last_tick`` is the newest tick time already
recorded: ticks after it are due. A tick row is unique on (workflow, tick time), so two
schedulers racing record it once; it is ``waiting`` until a run is started for it (with
the idempotency key ``run_key``: the same run whoever starts it, and a restart between the
insert and the start neither loses nor doubles it) or it is skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridgehead.domain.events import Event
from bridgehead.domain.schedules import stamp, tick_key
from bridgehead.errors import NotFound
from bridgehead.store.base import JobStore
from bridgehead.store.runs_sql import SqlRunStore
from bridgehead.store.sql import Row, event_row

SELECT_SCHEDULES = "SELECT * FROM schedules ORDER BY workflow"
TENANT_SCHEDULES = "SELECT * FROM schedules WHERE tenant = :tenant ORDER BY workflow"
SELECT_SCHEDULE = "SELECT * FROM schedules WHERE workflow = :workflow"
INSERT_SCHEDULE = """
INSERT INTO schedules (workflow, tenant, filename, spec, paused, file_paused, last_tick,
    created_at, updated_at)
VALUES (:workflow, :tenant, :filename, :spec, :paused, :paused, :last_tick, :now, :now)
ON CONFLICT (workflow) DO NOTHING
"""
UPDATE_SCHEDULE = """
UPDATE schedules SET tenant = :tenant, filename = :filename, spec = :spec,
    paused = :paused, file_paused = :file_paused, updated_at = :now
WHERE workflow = :workflow
"""
DELETE_SCHEDULE = "DELETE FROM schedules WHERE workflow = :workflow"
PAUSE = """
UPDATE schedules SET paused = TRUE, updated_at = :now WHERE workflow = :workflow RETURNING *
"""
RESUME = """
UPDATE schedules SET paused = FALSE, updated_at = :now,
    last_tick = CASE WHEN last_tick > :tick THEN last_tick ELSE :tick END
WHERE workflow = :workflow RETURNING *
"""
MOVE_LAST_TICK = """
UPDATE schedules SET last_tick = :new WHERE workflow = :workflow AND last_tick = :old
RETURNING workflow
"""
INSERT_TICK = """
INSERT INTO schedule_ticks (workflow, tick_at, tenant, state, run_key, created_at, updated_at)
VALUES (:workflow, :at, :tenant, 'waiting', :run_key, :now, :now)
ON CONFLICT (workflow, tick_at) DO NOTHING
"""
WAITING_TICKS = """
SELECT tick_at FROM schedule_ticks WHERE workflow = :workflow AND state = 'waiting'
ORDER BY tick_at
"""
END_TICK = """
UPDATE schedule_ticks SET state = :state, run_id = :run_id, reason = :reason, updated_at = :now
WHERE workflow = :workflow AND tick_at = :at AND state = 'waiting' RETURNING tenant
"""
PRUNE_TICKS = """
DELETE FROM schedule_ticks WHERE workflow = :workflow AND state <> 'waiting' AND tick_at < :before
"""
RECENT_TICKS = """
SELECT * FROM schedule_ticks WHERE workflow = :workflow ORDER BY tick_at DESC LIMIT :limit
"""
RUNNING_RUNS = """
SELECT COUNT(*) AS n FROM workflow_runs r
WHERE r.state = 'running' AND r.workflow = :workflow AND r.tenant = :tenant
  AND NOT EXISTS (SELECT 1 FROM schedule_ticks t WHERE t.workflow = :workflow
                  AND t.state = 'waiting' AND t.run_key = r.idempotency_key)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleFile:
    """A workflow file with a schedule, as the scheduler found it."""

    workflow: str
    tenant: str
    filename: str
    spec: str
    paused: bool
    """The file's ``schedule.paused``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSchedule:
    workflow: str
    tenant: str
    filename: str
    spec: str
    paused: bool
    last_tick: int
    """The newest tick time recorded (ticks after it are due)."""
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    workflow: str
    at: int
    state: str
    """``waiting``, ``started`` or ``skipped``."""
    run_id: str | None
    reason: str | None
    updated_at: float


class ScheduleStore(JobStore, Protocol):
    async def sync_schedules(self, found: Sequence[ScheduleFile], now: float) -> None:
        """Make the stored schedules those ``found``: new ones start ticking after ``now``
        (paused as their file says), changed ones keep their state (paused again as the
        file says when its ``paused`` changed), gone ones are deleted."""
        ...

    async def schedules(self, *, tenant: str | None = None) -> list[StoredSchedule]: ...

    async def get_schedule(self, workflow: str) -> StoredSchedule: ...

    async def set_paused(self, workflow: str, paused: bool, now: float) -> StoredSchedule:
        """Pause or resume; a resumed schedule ticks after ``now`` (nothing while paused)."""
        ...

    async def add_ticks(self, workflow: str, tenant: str, old: int,
                        ticks: Sequence[int]) -> bool:
        """Record ``ticks`` (waiting) and move ``last_tick`` from ``old`` to the newest, in
        one transaction; False if ``last_tick`` was no longer ``old``."""
        ...

    async def waiting_ticks(self, workflow: str) -> list[int]: ...

    async def running_runs(self, workflow: str, tenant: str) -> int:
        """The workflow's running runs, not counting those of still-waiting ticks (a run
        created just before a crash, found again by its key)."""
        ...

    async def end_tick(self, workflow: str, at: int, state: str, *, run_id: str | None = None,
                       reason: str | None = None) -> bool:
        """A waiting tick ``started`` (its run) or ``skipped`` (why), with its event."""
        ...

    async def recent_ticks(self, workflow: str, limit: int) -> list[Tick]: ...

    async def prune_ticks(self, workflow: str, before: float) -> None:
        """Forget the ended ticks that fell before ``before`` (waiting ones stay)."""
        ...


def _schedule(row: Row) -> StoredSchedule:
    return StoredSchedule(workflow=row["workflow"], tenant=row["tenant"],
                          filename=row["filename"], spec=row["spec"], paused=bool(row["paused"]),
                          last_tick=int(row["last_tick"]), updated_at=row["updated_at"])


class SqlScheduleStore(SqlRunStore):
    """Schedules over the same connections as the jobs and runs."""

    async def sync_schedules(self, found: Sequence[ScheduleFile], now: float) -> None:
        async with self._write() as tx:
            stored = {r["workflow"]: r for r in await tx.conn.fetch(SELECT_SCHEDULES)}
            for f in found:
                row = stored.get(f.workflow)
                if row is None:
                    await tx.conn.executemany(INSERT_SCHEDULE, [{
                        "workflow": f.workflow, "tenant": f.tenant, "filename": f.filename,
                        "spec": f.spec, "paused": f.paused, "last_tick": math.floor(now),
                        "now": now}])
                elif (row["tenant"], row["filename"], row["spec"], bool(row["file_paused"])) \
                        != (f.tenant, f.filename, f.spec, f.paused):
                    changed = bool(row["file_paused"]) != f.paused
                    await tx.conn.executemany(UPDATE_SCHEDULE, [{
                        "workflow": f.workflow, "tenant": f.tenant, "filename": f.filename,
                        "spec": f.spec, "file_paused": f.paused, "now": now,
                        "paused": f.paused if changed else bool(row["paused"])}])
            names = {f.workflow for f in found}
            gone = [{"workflow": name} for name in stored if name not in names]
            if gone:
                await tx.conn.executemany(DELETE_SCHEDULE, gone)

    async def schedules(self, *, tenant: str | None = None) -> list[StoredSchedule]:
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_SCHEDULES if tenant is None else TENANT_SCHEDULES,
                                    {"tenant": tenant} if tenant is not None else None)
        return [_schedule(r) for r in rows]

    async def get_schedule(self, workflow: str) -> StoredSchedule:
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_SCHEDULE, {"workflow": workflow})
        if not rows:
            raise NotFound(f"no schedule for workflow {workflow!r}")
        return _schedule(rows[0])

    async def set_paused(self, workflow: str, paused: bool, now: float) -> StoredSchedule:
        async with self._write() as tx:
            if paused:
                rows = await tx.conn.fetch(PAUSE, {"workflow": workflow, "now": now})
            else:
                rows = await tx.conn.fetch(RESUME, {"workflow": workflow, "now": now,
                                                    "tick": math.floor(now)})
        if not rows:
            raise NotFound(f"no schedule for workflow {workflow!r}")
        return _schedule(rows[0])

    async def add_ticks(self, workflow: str, tenant: str, old: int,
                        ticks: Sequence[int]) -> bool:
        if not ticks:
            return True
        now = time.time()
        async with self._write() as tx:
            moved = await tx.conn.fetch(MOVE_LAST_TICK, {"workflow": workflow, "old": old,
                                                         "new": max(ticks)})
            if not moved:
                return False
            await tx.conn.executemany(INSERT_TICK, [
                {"workflow": workflow, "at": at, "tenant": tenant, "now": now,
                 "run_key": tick_key(workflow, at)} for at in ticks])
        return True

    async def waiting_ticks(self, workflow: str) -> list[int]:
        async with self._read() as conn:
            rows = await conn.fetch(WAITING_TICKS, {"workflow": workflow})
        return [int(r["tick_at"]) for r in rows]

    async def running_runs(self, workflow: str, tenant: str) -> int:
        async with self._read() as conn:
            [row] = await conn.fetch(RUNNING_RUNS, {"workflow": workflow, "tenant": tenant})
        return int(row["n"])

    async def end_tick(self, workflow: str, at: int, state: str, *, run_id: str | None = None,
                       reason: str | None = None) -> bool:
        now = time.time()
        async with self._write() as tx:
            rows = await tx.conn.fetch(END_TICK, {"workflow": workflow, "at": at,
                                                  "state": state, "run_id": run_id,
                                                  "reason": reason, "now": now})
            if not rows:
                return False
            event = Event(type=f"bridgehead.schedule.{state}", subject=f"schedules/{workflow}",
                          data={"workflow": workflow, "tick": stamp(at), "tick_at": at,
                                "run_id": run_id, "reason": reason},
                          id=f"{tick_key(workflow, at)}:{state}", tenant=rows[0]["tenant"])
            await self._insert_events(tx, [event_row(event, now)])
        return True

    async def recent_ticks(self, workflow: str, limit: int) -> list[Tick]:
        async with self._read() as conn:
            rows = await conn.fetch(RECENT_TICKS, {"workflow": workflow, "limit": limit})
        return [Tick(workflow=r["workflow"], at=int(r["tick_at"]), state=r["state"],
                     run_id=r["run_id"], reason=r["reason"], updated_at=r["updated_at"])
                for r in rows]

    async def prune_ticks(self, workflow: str, before: float) -> None:
        async with self._write() as tx:
            await tx.conn.executemany(PRUNE_TICKS, [{"workflow": workflow,
                                                     "before": math.floor(before)}])
