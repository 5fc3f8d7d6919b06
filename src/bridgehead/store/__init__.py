"""The job store: one protocol, SQLite (embedded) and PostgreSQL (production) behind it."""

from __future__ import annotations

from bridgehead.config import StoreDsn
from bridgehead.store.base import ClusterStats, JobFilter, JobStore, LogChunk, Submitted
from bridgehead.store.hub import ChangeHub

__all__ = [
    "ChangeHub",
    "ClusterStats",
    "JobFilter",
    "JobStore",
    "LogChunk",
    "Submitted",
    "create_store",
]


def create_store(dsn: str) -> JobStore:
    """A store for ``dsn`` (not yet opened: ``await store.open()``)."""
    parsed = StoreDsn.parse(dsn)
    if parsed.kind == "sqlite":
        from bridgehead.store.sqlite import SqliteJobStore

        return SqliteJobStore(parsed.target)
    from bridgehead.store.postgres import PostgresJobStore

    return PostgresJobStore(parsed.target)
