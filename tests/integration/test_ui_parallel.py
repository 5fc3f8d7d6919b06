"""The Jobs page's name index and filters on PostgreSQL in parallel mode: the functions that
read a spec's name and labels catch bad JSON with an EXCEPTION block (a subtransaction), which
parallel mode refuses, so they must never run in a parallel worker (migration 0010). With
them PARALLEL SAFE, building jobs_name with workers (REINDEX, or migration 0005 on a big jobs
table) failed: "cannot start subtransactions during a parallel operation". The table's
parallel_workers and forced parallel plans make a small table do what a big one would."""

from __future__ import annotations

from typing import Any

import asyncpg

from bridgehead.domain.jobs import JobSpec
from bridgehead.store import create_store
from bridgehead.store.postgres import to_positional
from bridgehead.store.ui_sql import JobQuery


async def _parallel(conn: asyncpg.Connection) -> None:
    """Every query a parallel plan, whatever its cost (PostgreSQL 16 renamed the setting)."""
    version = int(await conn.fetchval("SHOW server_version_num"))
    forced = "debug_parallel_query" if version >= 160000 else "force_parallel_mode"
    await conn.execute(f"SET {forced} = on")
    for knob in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size",
                 "min_parallel_index_scan_size"):
        await conn.execute(f"SET {knob} = 0")


async def test_name_and_label_filters_and_index_build_in_parallel_mode(pg_database: str,
                                                                        ) -> None:
    store: Any = create_store(pg_database)
    await store.open()
    try:
        await store.submit([JobSpec(cluster="c1", command=("true",), name=f"etl-{i}",
                                    labels={"team": "red" if i % 2 else "blue"})
                            for i in range(200)])
        conn = await asyncpg.connect(pg_database)
        try:
            await _parallel(conn)
            await conn.execute("SET max_parallel_maintenance_workers = 2")
            await conn.execute("ALTER TABLE jobs SET (parallel_workers = 2)")
            await conn.execute("REINDEX INDEX jobs_name")  # a parallel build
            for q, want in ((JobQuery(name_prefix="etl-19"), 11),
                            (JobQuery(labels=(("team", "red"),)), 51)):
                sql, params = store.query_jobs_sql(q, limit=51)
                text, names = to_positional(sql)
                rows = await conn.fetch(text, *(params[n] for n in names))
                assert len(rows) == want, q
            by_name = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE bridgehead_spec_name(spec) LIKE 'etl-%'")
            assert by_name == 200
        finally:
            await conn.close()
    finally:
        await store.close()


