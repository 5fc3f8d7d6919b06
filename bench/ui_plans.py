"""The Jobs page's filters as the bench asks them, and the checks that their indexes carry
them: each filter's query (``query_jobs_sql``, what the page runs) EXPLAINed on the store,
and, on PostgreSQL, the same query timed with index scans switched off (the baseline)."""

from __future__ import annotations

import json
import re
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import ui_data

from bridgehead.domain.jobs import JobState
from bridgehead.store import create_store
from bridgehead.store.postgres import to_positional
from bridgehead.store.ui_sql import JobQuery, counted_exactly

USING = re.compile(r"USING (?:COVERING )?(?:INDEX (\S+)|(?:INTEGER )?PRIMARY KEY)")
"""An index in a line of SQLite's EXPLAIN QUERY PLAN."""
PAGE_ROWS = 51
"""What the page asks for: a page of 50 and one to know there is a next."""


def _at(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M")


def _filters() -> dict[str, list[dict[str, str]]]:
    """Filter -> the URL parameters of /ui/jobs asked in turn: common and rare values, and
    one that matches nothing (the worst case of a scan: no early stop)."""
    day = ui_data.DAY
    return {
        "none": [{}],
        "cluster": [{"cluster": c} for c in ui_data.CLUSTERS],
        "state": [{"state": s} for s in ("failed", "running", "queued", "lost", "succeeded",
                                         "claimed")],
        "tenant": [{"tenant": t} for t in ("t00", "t03", "t11", "t19")],
        "label": [{"label": v} for v in ("env=prod", "team=weather", "project=p000",
                                          "priority=high", "project=p150", "team=nobody")],
        "name": [{"name": v} for v in ("forecast", "xtal-index", "backup-3", "train-model-1",
                                        "nothing-like-it")],
        "time range": [{"from": _at(3600)}, {"from": _at(4 * day), "to": _at(3 * day)},
                       {"from": _at(7 * day)}, {"from": _at(90 * day), "to": _at(60 * day)}],
        "cluster + state": [{"cluster": "alpha", "state": "failed"},
                            {"cluster": "theta", "state": "running"}],
    }


FILTERS = _filters()


def _time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def query_of(params: dict[str, str]) -> JobQuery:
    """The JobQuery the page makes of these parameters (as ``ui.pages.jobs``, for an admin)."""
    label = params.get("label")
    return JobQuery(cluster=params.get("cluster"),
                    states=(JobState(params["state"]),) if "state" in params else (),
                    tenant=params.get("tenant"),
                    labels=(tuple(label.split("=", 1)),) if label else (),  # type: ignore[arg-type]
                    name_prefix=params.get("name"), created_from=_time(params.get("from")),
                    created_to=_time(params.get("to")))


def _pg_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _pg_nodes(child)
    return out


async def check_plans(dsn: str, kind: str) -> dict[str, Any]:
    """Each filter value's plans (the page's query, and its bounded count where the kept
    counts cannot answer it): the indexes they read and whether one scans a whole table
    (``jobs`` or ``job_labels``) instead."""
    store: Any = create_store(dsn)
    await store.open()
    out: dict[str, Any] = {}
    try:
        async with store._read() as conn:
            for name, values in FILTERS.items():
                indexes: set[str] = set()
                scans: list[str] = []
                queries = [(params, store.query_jobs_sql(query_of(params), limit=PAGE_ROWS))
                           for params in values]
                queries += [(params, store.count_jobs_sql(query_of(params)))
                            for params in values if not counted_exactly(query_of(params))]
                for params, (sql, args) in queries:
                    if kind == "postgres":
                        [row] = await conn.fetch("EXPLAIN (FORMAT JSON) " + sql, args)
                        plan = json.loads(row["QUERY PLAN"])[0]["Plan"]
                        for node in _pg_nodes(plan):
                            if "Index Name" in node:
                                indexes.add(node["Index Name"])
                            if node["Node Type"] == "Seq Scan":
                                scans.append(f"{params}: Seq Scan on {node['Relation Name']}")
                    else:
                        rows = await conn.fetch("EXPLAIN QUERY PLAN " + sql, args)
                        for detail in (r["detail"] for r in rows):
                            used = USING.search(detail)
                            if used:
                                indexes.add(used.group(1) or "PRIMARY KEY")
                            elif detail.startswith("SCAN ") and "subquery" not in detail:
                                scans.append(f"{params}: {detail}")
                out[name] = {"indexes": sorted(indexes), "full_scans": scans}
    finally:
        await store.close()
    return out


async def no_index_baseline(dsn: str, repeat: int = 3) -> dict[str, Any]:
    """Each filter's query (its first value) on PostgreSQL: median ms as planned, and with
    index and bitmap scans off (a sequential scan and a sort: the page without its index;
    timed once, after the planned runs warmed the cache)."""
    store: Any = create_store(dsn)
    conn = await asyncpg.connect(dsn)
    out: dict[str, Any] = {}
    try:
        for name, values in FILTERS.items():
            sql, args = store.query_jobs_sql(query_of(values[0]), limit=PAGE_ROWS)
            text, names = to_positional(sql)
            positional = [args[n] for n in names]
            timings = []
            for off in (False, True):
                value = "off" if off else "on"
                for knob in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                    await conn.execute(f"SET {knob} = {value}")
                runs = []
                for _ in range(1 if off else repeat):  # a scan of every job: once is enough
                    started = time.perf_counter()
                    await conn.fetch(text, *positional)
                    runs.append((time.perf_counter() - started) * 1000)
                timings.append(statistics.median(runs))
            out[name] = {"params": values[0], "index_ms": round(timings[0], 2),
                         "no_index_ms": round(timings[1], 1),
                         "ratio": round(timings[1] / max(timings[0], 1e-3), 1)}
    finally:
        await conn.close()
    return out
