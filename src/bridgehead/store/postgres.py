"""PostgreSQL store: production. Several server processes share one database.

- Claims take rows with ``FOR UPDATE SKIP LOCKED``: concurrent claimers never block each
  other and never get the same job.
- A batch of reports is one ``UPDATE ... FROM unnest(...)`` per round (a job named twice in a
  batch goes in two rounds, in order), each row guarded by its expected states.
- Changes leave a transaction as ``NOTIFY bridgehead`` (delivered on commit); every process
  LISTENs and publishes the keys on its own hub, so a waiter on any replica wakes.
- Event writers take one transaction-scoped advisory lock right before their first insert
  into ``events`` and hold it to the commit (``LOCK_EVENTS``), so ``seq`` order is commit
  order: a reader's cursor (``seq > :after``) can never pass an event committed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from bridgehead.errors import StoreError
from bridgehead.store.migrations import apply_postgres_migrations
from bridgehead.store.pools_sql import SqlPoolStore
from bridgehead.store.queries import TRANSITION_SET
from bridgehead.store.sql import Conn, Row, Tx, expected_states

try:
    import asyncpg
except ImportError:  # pragma: no cover - optional extra
    asyncpg = None

logger = logging.getLogger(__name__)

CHANNEL = "bridgehead"
_NOTIFY_BYTES = 7000  # PostgreSQL caps a payload at 8000 bytes

CLAIM = """
UPDATE jobs SET state = 'claimed', agent_id = :agent, lease_expires_at = :lease,
    version = jobs.version + 1, updated_at = :now,
    attempt = CASE WHEN jobs.state = 'claimed' THEN jobs.attempt + 1 ELSE jobs.attempt END
WHERE id IN (
    SELECT id FROM jobs WHERE cluster = :cluster AND NOT cancel_requested
      AND parent_id IS NULL
      AND (state = 'queued' OR (state = 'claimed' AND lease_expires_at < :now))
    ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING *
"""
TRANSITION_BATCH = f"""
UPDATE jobs SET {TRANSITION_SET}
FROM unnest(:ids::text[], :states::text[], :native_ids::text[], :exit_codes::int[],
            :reasons::text[], :usages::text[], :ats::float8[], :expected::text[])
     AS v(id, state, native_id, exit_code, reason, usage, at, expected)
WHERE jobs.id = v.id AND jobs.state = ANY(string_to_array(v.expected, ','))
  AND (:agent::text IS NULL OR jobs.agent_id = :agent)
  AND (v.state <> 'submitting' OR NOT jobs.cancel_requested)
RETURNING jobs.*
"""
# Why a lock: xid order is not seq order. A takes its xid (a jobs UPDATE), B a later one, B
# logs seq 10, A seq 11, A commits: a reader whose snapshot xmin was B's xid passed the old
# ``tx < pg_snapshot_xmin(...)`` filter, read 11 and lost 10 when B committed. Under the lock
# the only uncommitted events are the holder's, above every committed seq (PostgreSQL makes a
# commit visible before it releases the locks), so a cursor may read every row it sees. The
# filter is gone: it no longer protected anything and held every reader back behind any long
# transaction of the whole server. A rolled-back holder leaves a seq gap for good; cursors
# step over it. The lock is per database and only event writers take it; ``events.tx`` stays,
# unused.
LOCK_EVENTS = "SELECT pg_advisory_xact_lock(7090968626607779444)"  # b"bh.event"
LOCK_FOLD = "SELECT pg_advisory_xact_lock(7090968626607779443)"
FOLD_COUNTS = """
WITH moved AS (DELETE FROM job_count_deltas RETURNING cluster, tenant, state, n)
INSERT INTO job_counts (cluster, tenant, state, n)
SELECT cluster, tenant, state, SUM(n) FROM moved GROUP BY cluster, tenant, state
HAVING SUM(n) <> 0
ON CONFLICT (cluster, tenant, state) DO UPDATE SET n = job_counts.n + excluded.n
"""
"""Fold the deltas committed so far into ``job_counts`` (migration 0011), one folder at a
time (LOCK_FOLD: two would lock count rows in either order). Deltas of writers not committed
yet are not seen by the DELETE, so they stay for the next fold."""
LOCK_PARENTS = "SELECT id FROM jobs WHERE id = ANY(:ids::text[]) ORDER BY id FOR UPDATE"
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@lru_cache(maxsize=256)
def to_positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters -> asyncpg's ``$n``; the names in order."""
    names: list[str] = []

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(repl, sql), tuple(names)


class _PgConn:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        text, names = to_positional(sql)
        params = params or {}
        return await self._conn.fetch(text, *(params[n] for n in names))

    async def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            text, names = to_positional(sql)
            await self._conn.executemany(text, [tuple(r[n] for n in names) for r in rows])


class PostgresJobStore(SqlPoolStore):
    _for_update = " FOR UPDATE"

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        super().__init__()
        if asyncpg is None:
            raise StoreError("PostgreSQL needs the 'postgres' extra: "
                             "pip install 'bridgehead[postgres]'")
        self.dsn = dsn
        self._sizes = (min_size, max_size)
        self._pool: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self._sizes[0], max_size=self._sizes[1]
            )
            async with self._pool.acquire() as conn:
                await apply_postgres_migrations(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot open PostgreSQL store: {exc}") from exc
        self._listener = asyncio.create_task(self._listen(), name="bridgehead-listen")
        await asyncio.wait_for(self._listening.wait(), 10)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _listen(self) -> None:
        """Hold a LISTEN connection; after it drops, reconnect and wake every waiter."""
        delay = 0.1
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.dsn)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                if self._listening.is_set():
                    self.hub.publish_all()  # changes while we were deaf
                self._listening.set()
                delay = 0.1
                try:
                    await lost.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("LISTEN connection lost (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.hub.publish(payload.split(" "))

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Tx]:
        try:
            async with self._pool.acquire() as raw, raw.transaction():
                tx = Tx(_PgConn(raw))
                yield tx
                for payload in _payloads(tx.keys):
                    await raw.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL write failed: {exc}") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        try:
            async with self._pool.acquire() as raw:
                yield _PgConn(raw)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL read failed: {exc}") from exc

    def _ids_sql(self, param: str) -> str:
        return f"(SELECT unnest(:{param}::text[]))"

    def _ids_value(self, ids: Sequence[str]) -> Any:
        return list(ids)

    def _name_range_sql(self) -> str:
        return ("bridgehead_spec_name(spec) ~>=~ :name_lo::text "
                "AND bridgehead_spec_name(spec) ~<~ :name_hi::text")

    async def _claim(self, conn: Conn, params: dict[str, Any]) -> list[Row]:
        return await conn.fetch(CLAIM, params)

    async def _apply_round(
        self, conn: Conn, rows: list[dict[str, Any]], agent_id: str | None, now: float
    ) -> list[Row]:
        params: dict[str, Any] = {
            f"{column}s": [r[column] for r in rows]
            for column in ("id", "state", "native_id", "exit_code", "reason", "usage", "at")
        }
        params["expected"] = [",".join(expected_states(r["state"])) for r in rows]
        return await conn.fetch(TRANSITION_BATCH, {**params, "agent": agent_id, "now": now})

    async def _fold_counts(self, conn: Any) -> None:
        await conn.fetch(LOCK_FOLD)
        await conn.fetch(FOLD_COUNTS)

    async def _lock_events(self, conn: Conn) -> None:
        await conn.fetch(LOCK_EVENTS)

    async def _lock_parents(self, conn: Conn, ids: Sequence[str]) -> None:
        await conn.fetch(LOCK_PARENTS, {"ids": list(ids)})


def _payloads(keys: set[str]) -> list[str]:
    out, current = [], ""
    for key in sorted(keys):
        if current and len(current) + len(key) + 1 > _NOTIFY_BYTES:
            out.append(current)
            current = ""
        current = f"{current} {key}" if current else key
    if current:
        out.append(current)
    return out
