"""Versioned schema migrations: ``<dialect>/NNNN_name.sql``, applied in order, each once.

Each migration runs in its own transaction together with its row in ``schema_migrations``;
on PostgreSQL an advisory lock makes concurrent servers starting together apply it once.
"""

from __future__ import annotations

import sqlite3
import time
from importlib import resources
from typing import Any

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)
"""
_LOCK_KEY = 0x62726964  # "brid"


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file of ``dialect``, in order."""
    folder = resources.files(__package__) / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(version), name, entry.read_text()))
    return sorted(found)


async def apply_sqlite_migrations(db: Any) -> list[int]:
    """Apply pending migrations on an aiosqlite connection in autocommit mode."""
    await db.execute(CREATE_TABLE)
    applied = []
    for version, name, sql in migrations("sqlite"):
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
            ) as cur:
                done = await cur.fetchone()
            if not done:
                for statement in _statements(sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time())
                )
                applied.append(version)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
    return applied


async def apply_postgres_migrations(conn: Any) -> list[int]:
    """Apply pending migrations on an asyncpg connection."""
    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(CREATE_TABLE)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations("postgres"):
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)", version, name, time.time()
            )
            applied.append(version)
    return applied


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (they hold no ';' inside literals); a trigger's
    ``BEGIN ... END`` is one statement, as ``sqlite3.complete_statement`` tells."""
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    out, current = [], ""
    for part in "\n".join(lines).split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                out.append(current.strip().removesuffix(";").strip())
            current = ""
    if current.strip(" \n;"):
        out.append(current.strip().removesuffix(";").strip())
    return out
