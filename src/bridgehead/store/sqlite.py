"""SQLite store: the embedded default. One process, WAL, one connection behind a lock.

SQLite has one writer at a time, so a claim inside ``BEGIN IMMEDIATE`` is already exclusive;
notifications are published in-process once a transaction commits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bridgehead.errors import StoreError
from bridgehead.store.migrations import apply_sqlite_migrations
from bridgehead.store.pools_sql import SqlPoolStore
from bridgehead.store.queries import TRANSITION_SET
from bridgehead.store.sql import Conn, Row, Tx, expected_states

CLAIM = """
UPDATE jobs SET state = 'claimed', agent_id = :agent, lease_expires_at = :lease,
    version = version + 1, updated_at = :now,
    attempt = CASE WHEN state = 'claimed' THEN attempt + 1 ELSE attempt END
WHERE id IN (
    SELECT id FROM jobs WHERE cluster = :cluster AND NOT cancel_requested
      AND parent_id IS NULL
      AND (state = 'queued' OR (state = 'claimed' AND lease_expires_at < :now))
    ORDER BY id LIMIT :limit)
RETURNING *
"""
TRANSITION_BATCH = f"""
UPDATE jobs SET {TRANSITION_SET}
FROM (SELECT value ->> 'id' AS id, value ->> 'state' AS state,
             value ->> 'native_id' AS native_id, value ->> 'exit_code' AS exit_code,
             value ->> 'reason' AS reason, value ->> 'usage' AS usage, value ->> 'at' AS at,
             value ->> 'expected' AS expected
      FROM json_each(:rows)) AS v
WHERE jobs.id = v.id AND jobs.state IN (SELECT value FROM json_each(v.expected))
  AND (CAST(:agent AS TEXT) IS NULL OR jobs.agent_id = :agent)
  AND (v.state <> 'submitting' OR NOT jobs.cancel_requested)
RETURNING *
"""


class _SqliteConn:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        async with self._db.execute(sql, params or {}) as cursor:
            return [dict(r) for r in await cursor.fetchall()]

    async def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self._db.executemany(sql, rows)


class SqliteJobStore(SqlPoolStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                # Jobs' env, tokens' hashes and logs are in here: the owner's alone, as
                # client.toml (SQLite gives its -wal and -shm files the same mode).
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000",
                           "foreign_keys=ON"):
                await self._db.execute(f"PRAGMA {pragma}")
            await apply_sqlite_migrations(self._db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Tx]:
        tx = Tx(_SqliteConn(self._conn()))
        async with self._lock:
            db = self._conn()
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield tx
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite write failed: {exc}") from exc
        self.hub.publish(tx.keys)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        async with self._lock:
            try:
                yield _SqliteConn(self._conn())
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc

    def _ids_sql(self, param: str) -> str:
        return f"(SELECT value FROM json_each(:{param}))"

    def _ids_value(self, ids: Sequence[str]) -> Any:
        return json.dumps(list(ids))


    async def _claim(self, conn: Conn, params: dict[str, Any]) -> list[Row]:
        return await conn.fetch(CLAIM, params)

    async def _apply_round(
        self, conn: Conn, rows: list[dict[str, Any]], agent_id: str | None, now: float
    ) -> list[Row]:
        batch = json.dumps([{**r, "expected": expected_states(r["state"])} for r in rows])
        return await conn.fetch(TRANSITION_BATCH, {"rows": batch, "agent": agent_id, "now": now})

    async def _lock_events(self, conn: Conn) -> None:
        """Nothing: ``BEGIN IMMEDIATE`` makes every writer the only one already."""
