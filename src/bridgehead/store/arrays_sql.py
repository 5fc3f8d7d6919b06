"""Job arrays in the SQL stores: elements made with their parent, and each following the
other inside the transaction that changed it (see :mod:`bridgehead.domain.arrays`).

- submit: a new array job's elements are inserted in the parent's transaction (a re-sent
  idempotency key creates neither again);
- the parent becomes ``submitted`` with native id N: its queued elements become
  ``submitted`` with ``N_<index>``, held by the parent's agent;
- the parent ends before it reached the scheduler (refused, cancelled): its queued elements
  end the same way;
- an element runs: a submitted parent runs; the last element ends: the parent ends with
  :func:`bridgehead.domain.arrays.outcome`. The parent rows are locked first
  (:meth:`_lock_parents`), so of two transactions ending an array's last two elements at
  once, the second sees the first's end and derives the parent's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridgehead.domain import arrays
from bridgehead.domain.jobs import Job, JobSpec, JobState
from bridgehead.store import queries as q
from bridgehead.store.sql import Conn, SqlJobStore, WriteTx, job_from_row, transition_row


class SqlArrayStore(SqlJobStore):
    async def _lock_parents(self, conn: Conn, ids: Sequence[str]) -> None:
        """Hold the rows of ``ids`` until the transaction ends (a dialect may need nothing:
        SQLite has one writer)."""

    async def _insert_elements(self, tx: WriteTx, jobs: Sequence[tuple[str, JobSpec]],
                               now: float) -> list[Job]:
        rows: list[dict[str, Any]] = []
        made: list[Job] = []
        for parent_id, parent_spec in jobs:
            if parent_spec.array is None:
                continue
            spec = arrays.element_spec(parent_spec)
            text = json.dumps(spec.to_dict())
            for job_id, index in arrays.elements_of(parent_id, parent_spec):
                rows.append({"id": job_id, "cluster": spec.cluster, "tenant": spec.tenant,
                             "idempotency_key": None, "spec": text, "now": now,
                             "parent_id": parent_id, "array_index": index, "elements": None})
                made.append(Job(id=job_id, spec=spec, state=JobState.QUEUED, created_at=now,
                                updated_at=now, parent_id=parent_id, array_index=index))
        await tx.conn.executemany(q.INSERT_JOB, rows)
        return made

    async def _follow(self, tx: WriteTx, changed: Sequence[Job], now: float) -> list[Job]:
        out: list[Job] = []
        for parent in changed:
            if parent.elements is not None:
                out += await self._elements_follow(tx.conn, parent, now)
        moved = [j for j in changed if j.parent_id is not None
                 and (j.state is JobState.RUNNING or j.terminal)]
        parent_ids = sorted({j.parent_id for j in moved if j.parent_id is not None})
        if parent_ids:
            await self._lock_parents(tx.conn, parent_ids)
        for parent_id in parent_ids:
            mine = [j for j in moved if j.parent_id == parent_id]
            out += await self._parent_follows(tx.conn, parent_id, mine, now)
        if out:
            tx.notify(*(f"job:{j.id}" for j in out))
        return out

    async def _elements_follow(self, conn: Conn, parent: Job, now: float) -> list[Job]:
        if parent.state is JobState.SUBMITTED and parent.native_id:
            rows = await conn.fetch(q.SUBMIT_ELEMENTS, {
                "parent": parent.id, "native": parent.native_id, "agent": parent.agent_id,
                "lease": parent.lease_expires_at, "now": now})
        elif parent.terminal:  # before it reached the scheduler, or all ended already
            rows = await conn.fetch(q.END_ELEMENTS, {
                "parent": parent.id, "state": parent.state.value, "now": now,
                "reason": f"its array job {parent.id} ended ({parent.state.value}) before "
                          "it reached the scheduler" + (f": {parent.reason}"
                                                        if parent.reason else "")})
        else:
            return []
        return [job_from_row(r) for r in rows]

    async def _parent_follows(self, conn: Conn, parent_id: str, moved: list[Job],
                              now: float) -> list[Job]:
        out = []
        if any(j.state is JobState.RUNNING for j in moved):
            out += [job_from_row(r) for r in await conn.fetch(
                q.RUN_PARENT, {"id": parent_id, "now": now})]
        if not any(j.terminal for j in moved):
            return out
        [count] = await conn.fetch(q.COUNT_ACTIVE_ELEMENTS, {"parent": parent_id})
        if count["n"]:
            return out
        [parent_row] = await conn.fetch(q.SELECT_JOB, {"id": parent_id})
        elements = [job_from_row(r) for r in await conn.fetch(
            q.SELECT_ELEMENTS, {"parent": parent_id})]
        end = arrays.outcome(job_from_row(parent_row), elements, at=now)
        [row] = await self._apply(conn, [transition_row(end, now)], None, now)
        if row is not None:
            out.append(job_from_row(row))
        return out
