"""The store's workflow runs, event-log consumers' cursors and leases, and rules.

A run's plan (:func:`bridgehead.domain.runs.plan`) is applied in ONE transaction guarded by
the run's ``version``: the run's row, its tasks, the jobs the plan submits and the events it
emits commit together or not at all. Two runners that look at the same run at once (two
servers, or one restarting) cannot both apply a plan: the second one's compare-and-set finds
a newer version and changes nothing, so no task's job is ever submitted twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bridgehead.domain.events import SOURCE, Event
from bridgehead.domain.jobs import JobState
from bridgehead.domain.runs import (
    PERIOD_EVENTS,
    JobEnd,
    Plan,
    Run,
    RunState,
    Task,
    TaskState,
    idle_spans,
    retry_tasks,
    run_event,
)
from bridgehead.errors import Conflict, NotFound
from bridgehead.store import queries as q
from bridgehead.store.arrays_sql import SqlArrayStore
from bridgehead.store.sql import (
    Conn,
    Row,
    WriteTx,
    event_from_row,
    event_row,
    job_event_rows,
    job_rows,
)

INSERT_RUN = """
INSERT INTO workflow_runs (id, workflow, tenant, spec, filename, params, state, version,
    cancel_requested, idempotency_key, created_at, updated_at)
VALUES (:id, :workflow, :tenant, :spec, :filename, :params, 'running', 1, FALSE,
    :idempotency_key, :now, :now)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *
"""
SELECT_RUN_BY_KEY = """
SELECT * FROM workflow_runs WHERE tenant = :tenant AND idempotency_key = :key
"""
SELECT_RUN = "SELECT * FROM workflow_runs WHERE id = :id"
INSERT_TASK = """
INSERT INTO workflow_tasks (run_id, step, idx, pos, item, state)
VALUES (:run_id, :step, :idx, :pos, :item, 'waiting')
"""
SELECT_TASKS = """
SELECT t.*, j.state AS job_state, j.exit_code AS job_exit_code, j.reason AS job_reason,
       j.started_at AS job_started_at, j.finished_at AS job_finished_at
FROM workflow_tasks t LEFT JOIN jobs j ON j.id = t.job_id
WHERE t.run_id = :id ORDER BY t.pos
"""
BUMP_RUN = """
UPDATE workflow_runs SET version = version + 1, updated_at = :now, state = :state,
    finished_at = :finished_at, cancel_requested = :cancel_requested
WHERE id = :id AND version = :version RETURNING *
"""
UPDATE_TASK = """
UPDATE workflow_tasks SET state = :state, attempt = :attempt, tries = :tries,
    job_id = :job_id, not_before = :not_before, deadline = :deadline, exit_code = :exit_code,
    reason = :reason, ready_at = :ready_at, started_at = :started_at, finished_at = :finished_at
WHERE run_id = :run_id AND step = :step AND idx = :idx
"""
ACTIVE_RUNS = "SELECT id FROM workflow_runs WHERE state = 'running' ORDER BY id"
PERIOD_EVENTS_OF = """
SELECT subject, type, time FROM events
WHERE source = :source AND subject IN {subjects} AND type IN {types} ORDER BY seq
"""
UPSERT_CURSOR = """
INSERT INTO cursors (name, seq) VALUES (:name, :seq)
ON CONFLICT (name) DO UPDATE SET seq = excluded.seq
"""
SELECT_CURSOR = "SELECT seq FROM cursors WHERE name = :name"
LAST_SEQ = "SELECT COALESCE(MAX(seq), 0) AS seq FROM events"
EVENTS_BOUND = "SELECT COALESCE(MAX(seq), 0) AS seq FROM events WHERE seq > :after"
ACQUIRE_LEASE = """
INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :expires)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at < :now
RETURNING holder
"""
RELEASE_LEASE = "DELETE FROM leases WHERE name = :name AND holder = :holder"
UPSERT_RULE = """
INSERT INTO rules (name, spec, created_at, updated_at) VALUES (:name, :spec, :now, :now)
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at
"""
SELECT_RULES = "SELECT name, spec, created_at, updated_at FROM rules ORDER BY name"
DELETE_RULE = "DELETE FROM rules WHERE name = :name RETURNING name"


def run_from_row(row: Row) -> Run:
    return Run(
        id=row["id"], workflow=row["workflow"], tenant=row["tenant"], spec_text=row["spec"],
        filename=row["filename"], params=json.loads(row["params"]),
        state=RunState(row["state"]), version=row["version"],
        cancel_requested=bool(row["cancel_requested"]),
        idempotency_key=row["idempotency_key"], created_at=row["created_at"],
        updated_at=row["updated_at"], finished_at=row["finished_at"],
    )


def task_from_row(row: Row) -> Task:
    job = None
    if row.get("job_state") is not None:
        job = JobEnd(state=JobState(row["job_state"]), exit_code=row["job_exit_code"],
                     reason=row["job_reason"], started_at=row["job_started_at"],
                     finished_at=row["job_finished_at"])
    return Task(
        run_id=row["run_id"], step=row["step"], index=row["idx"],
        item=json.loads(row["item"]) if row["item"] is not None else None,
        state=TaskState(row["state"]), attempt=row["attempt"], tries=row["tries"],
        job_id=row["job_id"], not_before=row["not_before"], deadline=row["deadline"],
        exit_code=row["exit_code"], reason=row["reason"], ready_at=row["ready_at"],
        started_at=row["started_at"], finished_at=row["finished_at"], job=job,
    )


def _task_row(task: Task) -> dict[str, Any]:
    return {
        "run_id": task.run_id, "step": task.step, "idx": task.index, "state": task.state.value,
        "attempt": task.attempt, "tries": task.tries, "job_id": task.job_id,
        "not_before": task.not_before, "deadline": task.deadline, "exit_code": task.exit_code,
        "reason": task.reason, "ready_at": task.ready_at, "started_at": task.started_at,
        "finished_at": task.finished_at,
    }


class SqlRunStore(SqlArrayStore):
    """Runs, cursors, leases and rules over the same connections as the jobs."""

    # -- runs ------------------------------------------------------------------------------
    async def create_run(self, run: Run, tasks: Sequence[Task]) -> tuple[Run, bool]:
        """Store a new run and its tasks (all waiting) and log ``workflow.started``; the same
        ``idempotency_key`` (per tenant) returns the existing run and False."""
        now = time.time()
        async with self._write() as tx:
            rows = await tx.conn.fetch(INSERT_RUN, {
                "id": run.id, "workflow": run.workflow, "tenant": run.tenant,
                "spec": run.spec_text, "filename": run.filename,
                "params": json.dumps(run.params), "idempotency_key": run.idempotency_key,
                "now": now,
            })
            if not rows:
                found = await tx.conn.fetch(
                    SELECT_RUN_BY_KEY, {"tenant": run.tenant, "key": run.idempotency_key})
                [existing] = await self._with_idle(tx.conn, [run_from_row(found[0])])
                return existing, False
            stored = run_from_row(rows[0])
            await tx.conn.executemany(INSERT_TASK, [
                {"run_id": t.run_id, "step": t.step, "idx": t.index, "pos": pos,
                 "item": json.dumps(t.item) if t.item is not None else None}
                for pos, t in enumerate(tasks)])
            await self._log(tx, [run_event(stored, "started")], now)
            tx.notify(f"run:{stored.id}")
        return stored, True

    async def get_run(self, run_id: str) -> Run:
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_RUN, {"id": run_id})
            if not rows:
                raise NotFound(f"workflow run {run_id} not found")
            [run] = await self._with_idle(conn, [run_from_row(rows[0])])
        return run

    async def run_tasks(self, run_id: str) -> list[Task]:
        """The run's tasks in creation order, each with its job's state."""
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_TASKS, {"id": run_id})
        return [task_from_row(r) for r in rows]

    async def list_runs(self, *, state: str | None = None, workflow: str | None = None,
                        tenant: str | None = None, limit: int = 100,
                        after: str | None = None) -> list[Run]:
        """Runs newest first; ``after`` is the last id of the previous page."""
        where, params = ["1 = 1"], {"limit": limit}
        for column, value in (("state", state), ("workflow", workflow), ("tenant", tenant),
                              ("after", after)):
            if value is not None:
                where.append("id < :after" if column == "after" else f"{column} = :{column}")
                params[column] = value  # type: ignore[assignment]
        sql = (f"SELECT * FROM workflow_runs WHERE {' AND '.join(where)} "
               "ORDER BY id DESC LIMIT :limit")
        async with self._read() as conn:
            runs = [run_from_row(r) for r in await conn.fetch(sql, params)]
            return await self._with_idle(conn, runs)

    async def _with_idle(self, conn: Conn, runs: list[Run]) -> list[Run]:
        """The runs with their ``idle`` spans, from their end and retry events."""
        if not runs:
            return runs
        sql = PERIOD_EVENTS_OF.format(subjects=self._ids_sql("subjects"),
                                      types=self._ids_sql("types"))
        rows = await conn.fetch(sql, {
            "source": SOURCE, "subjects": self._ids_value([f"runs/{r.id}" for r in runs]),
            "types": self._ids_value(PERIOD_EVENTS)})
        marks: dict[str, list[tuple[str, float]]] = {}
        for r in rows:
            marks.setdefault(r["subject"], []).append((r["type"], r["time"]))
        return [replace(run, idle=idle_spans(marks.get(f"runs/{run.id}", ()))) for run in runs]

    async def task_counts(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Each run's number of tasks by state."""
        sql = (f"SELECT run_id, state, COUNT(*) AS n FROM workflow_tasks "
               f"WHERE run_id IN {self._ids_sql('ids')} GROUP BY run_id, state")
        async with self._read() as conn:
            rows = await conn.fetch(sql, {"ids": self._ids_value(list(run_ids))})
        out: dict[str, dict[str, int]] = {run_id: {} for run_id in run_ids}
        for r in rows:
            out[r["run_id"]][r["state"]] = r["n"]
        return out

    async def active_runs(self) -> list[str]:
        async with self._read() as conn:
            return [r["id"] for r in await conn.fetch(ACTIVE_RUNS)]

    async def apply_plan(self, run: Run, plan: Plan) -> Run | None:
        """Apply ``plan`` if ``run`` is still at its version: the run, its changed tasks, the
        jobs and the events in one transaction. None: the run moved on (nothing written)."""
        now = time.time()
        state = plan.state or run.state
        async with self._write() as tx:
            rows = await tx.conn.fetch(BUMP_RUN, {
                "id": run.id, "version": run.version, "now": now, "state": state.value,
                "finished_at": now if state.terminal else None,
                "cancel_requested": run.cancel_requested,
            })
            if not rows:
                return None
            # Keys are wf:<run>:<step>:<index>:<try> and a try is only counted under this
            # version's compare-and-set, so none of these inserts can meet its key.
            rows_in, events_in = job_rows(plan.jobs, now)
            await tx.conn.executemany(q.INSERT_JOB, rows_in)
            elements = await self._insert_elements(tx, plan.jobs, now)  # a fan-out's array
            events_in += job_event_rows(elements, now)
            await tx.conn.executemany(UPDATE_TASK, [_task_row(t) for t in plan.tasks])
            tx.notify(f"run:{run.id}", *{f"cluster:{spec.cluster}" for _, spec in plan.jobs})
            # The jobs' events, then the plan's: the last write (see _insert_events).
            await self._insert_events(tx, events_in + [event_row(e, now) for e in plan.events])
        return replace(run_from_row(rows[0]), idle=run.idle)  # a plan never retries

    async def request_run_cancel(self, run_id: str) -> Run:
        """Flag the run for its runner (logs ``workflow.cancelling``); a finished run: as is."""
        return await self._bump(run_id, "cancelling", cancel=True)

    async def retry_run(self, run_id: str) -> Run:
        """Run the failed, skipped and cancelled tasks of a finished run again (logs
        ``workflow.retried``); Conflict unless the run failed or was cancelled."""
        return await self._bump(run_id, "retried", cancel=False)

    async def _bump(self, run_id: str, kind: str, *, cancel: bool) -> Run:
        now = time.time()
        async with self._write() as tx:
            # A runner's plan may commit between this read and the compare-and-set below (on
            # PostgreSQL, whose READ COMMITTED statements each see the latest commit): then
            # read the run again and decide on it as it now is.
            while True:
                found = await tx.conn.fetch(SELECT_RUN, {"id": run_id})
                if not found:
                    raise NotFound(f"workflow run {run_id} not found")
                run = run_from_row(found[0])
                if cancel and (run.state.terminal or run.cancel_requested):
                    [run] = await self._with_idle(tx.conn, [run])
                    return run
                retried: list[Task] = []
                if not cancel:
                    if run.state not in (RunState.FAILED, RunState.CANCELLED):
                        raise Conflict(f"run {run_id} is {run.state.value}: only a failed or "
                                       "cancelled run can be retried")
                    tasks = await tx.conn.fetch(SELECT_TASKS, {"id": run_id})
                    retried = retry_tasks([task_from_row(r) for r in tasks])
                rows = await tx.conn.fetch(BUMP_RUN, {
                    "id": run.id, "version": run.version, "now": now,
                    "state": run.state.value if cancel else RunState.RUNNING.value,
                    "finished_at": None if not cancel else run.finished_at,
                    "cancel_requested": cancel,
                })
                if rows:
                    break
            bumped = run_from_row(rows[0])
            await tx.conn.executemany(UPDATE_TASK, [_task_row(t) for t in retried])
            await self._log(tx, [run_event(bumped, kind)], now)
            tx.notify(f"run:{run.id}")
            [bumped] = await self._with_idle(tx.conn, [bumped])  # with this retry's span
        return bumped

    async def _log(self, tx: WriteTx, events: Sequence[Event], now: float) -> None:
        await self._insert_events(tx, [event_row(e, now) for e in events])

    # -- event-log consumers ---------------------------------------------------------------
    async def cursor(self, name: str) -> int | None:
        """The last event ``seq`` the consumer ``name`` finished with (None: never ran)."""
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_CURSOR, {"name": name})
        return rows[0]["seq"] if rows else None

    async def set_cursor(self, name: str, seq: int) -> None:
        async with self._write() as tx:
            await tx.conn.executemany(UPSERT_CURSOR, [{"name": name, "seq": seq}])

    async def events_of(self, *, after: int, limit: int,
                        types: Sequence[str]) -> tuple[list[Event], int]:
        """The events of these ``types`` after the cursor ``after``, and the cursor to go on
        from: what was scanned, so a consumer of a few types does not read every event."""
        async with self._read() as conn:
            # Event writers commit in seq order (_lock_events), so a later statement's newer
            # snapshot can add no event at or below this bound.
            bound = (await conn.fetch(EVENTS_BOUND, {"after": after}))[0]["seq"]
            if bound <= after:
                return [], after
            rows = await conn.fetch(
                "SELECT seq, id, type, source, subject, time, data, tenant FROM events WHERE "
                f"seq > :after AND seq <= :bound AND type IN {self._ids_sql('types')} "
                "ORDER BY seq LIMIT :limit",
                {"after": after, "bound": bound, "types": self._ids_value(list(types)),
                 "limit": limit})
        found = [event_from_row(r) for r in rows]
        return found, found[-1].seq if len(found) == limit else bound

    async def last_event_seq(self) -> int:
        async with self._read() as conn:
            return (await conn.fetch(LAST_SEQ))[0]["seq"]

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder``: True if it holds it for ``ttl_s``."""
        now = time.time()
        async with self._write() as tx:
            rows = await tx.conn.fetch(ACQUIRE_LEASE, {
                "name": name, "holder": holder, "expires": now + ttl_s, "now": now})
        return bool(rows)

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._write() as tx:
            await tx.conn.executemany(RELEASE_LEASE, [{"name": name, "holder": holder}])

    # -- rules -----------------------------------------------------------------------------
    async def put_rules(self, rules: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Create or replace rules by name (``(name, stored form)``)."""
        now = time.time()
        async with self._write() as tx:
            await tx.conn.executemany(UPSERT_RULE, [
                {"name": name, "spec": json.dumps(spec), "now": now} for name, spec in rules])
            tx.notify("rules")

    async def list_rules(self) -> list[dict[str, Any]]:
        """Every rule's stored form, with ``created_at``/``updated_at``, by name."""
        async with self._read() as conn:
            rows = await conn.fetch(SELECT_RULES)
        return [{**json.loads(r["spec"]), "created_at": r["created_at"],
                 "updated_at": r["updated_at"]} for r in rows]

    async def delete_rule(self, name: str) -> None:
        async with self._write() as tx:
            rows = await tx.conn.fetch(DELETE_RULE, {"name": name})
            tx.notify("rules")
        if not rows:
            raise NotFound(f"rule {name!r} not found")

