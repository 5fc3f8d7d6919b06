"""The UI benchmark's data: N jobs spread over clusters, states, tenants, labels, names and
30 days as a busy deployment has them, a workflow run with a wide fan-out, and a big log,
written straight into a migrated store (PostgreSQL COPY, SQLite ``executemany``) for speed.

Only the writes bypass Bridgehead: the tables, indexes and triggers (``job_labels`` is filled
by the store's own trigger) are the migrations', so what the pages read is what a store that
took the same jobs through the API would hold. The spread is seeded: a run is repeatable.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bridgehead.domain.jobs import JobSpec, Resources
from bridgehead.domain.runs import new_run_id

DAY = 86400.0
SPAN_DAYS = 30
CLUSTERS = {"alpha": 30, "beta": 20, "gamma": 15, "delta": 10, "epsilon": 10, "zeta": 8,
            "eta": 5, "theta": 2}
TENANTS = {f"t{i:02d}": 1 / (i + 1) for i in range(20)}
"""Tenant -> weight (Zipf: t00 has the most jobs, t19 a twentieth of them)."""
TERMINAL = {"succeeded": 78.0, "failed": 8.0, "cancelled": 3.0, "timed_out": 1.0, "lost": 0.3}
ACTIVE = {"queued": 4.0, "claimed": 0.2, "submitting": 0.1, "submitted": 1.4, "running": 4.0}
"""State -> share of jobs (%). Active jobs are recent (the last 6 hours), ended ones any time
in the last 30 days."""
NAMES = ("forecast-ingest", "forecast-run", "forecast-post", "train-model", "eval-model",
         "etl-daily", "etl-hourly", "spark-agg", "render-frames", "simulate", "align-reads",
         "call-variants", "xtal-index", "xtal-integrate", "backup", "report")
TEAMS = ("weather", "ads", "genomics", "xtal", "ml", "infra", "finance", "physics", "render",
         "search", "bio", "ops")
ENVS = {"prod": 70, "dev": 20, "test": 10}
COLUMNS = ("id", "cluster", "tenant", "state", "spec", "version", "attempt", "native_id",
           "exit_code", "reason", "agent_id", "cancel_requested", "created_at", "updated_at",
           "submitted_at", "started_at", "finished_at")
_TEMPLATE = json.dumps(JobSpec(
    cluster="c-0", command=("python", "-m", "job", "--config", "conf.yaml"), name="n-0",
    tenant="t-0", labels={"l-0": "l-0"}, env={"OMP_NUM_THREADS": "4"},
    resources=Resources(cores=4, memory_mb=8192, walltime_s=3600)).to_dict())
SPEC = (_TEMPLATE.replace("%", "%%").replace('"c-0"', '"%s"').replace('"n-0"', '"%s"')
        .replace('"t-0"', '"%s"').replace('{"l-0": "l-0"}', "%s"))
"""A job spec as the API stores it (``JobSpec.to_dict``), with its cluster, name, tenant and
labels to fill in (%-format: the JSON's own braces stay as they are)."""


def _pick(rng: random.Random, weights: Mapping[str, float]) -> Iterator[str]:
    keys, cum = list(weights), list(weights.values())
    while True:
        yield from rng.choices(keys, cum, k=4096)


def _job_id(rng: random.Random, at: float, seq: int) -> str:
    """As ``new_job_id``: the millisecond, a sequence, 40 random bits (so a time range is a
    range of ids, as for jobs made by the API)."""
    return f"{int(at * 1000):012x}{seq & 0xFFFF:04x}{rng.getrandbits(40):010x}"


def job_rows(n: int, now: float, seed: int = 1) -> Iterator[tuple[tuple[Any, ...],
                                                                   dict[str, str]]]:
    """``n`` jobs' rows (:data:`COLUMNS`), each with its labels."""
    rng = random.Random(seed)
    clusters, tenants = _pick(rng, CLUSTERS), _pick(rng, TENANTS)
    states, envs = _pick(rng, {**TERMINAL, **ACTIVE}), _pick(rng, ENVS)
    for i in range(n):
        cluster, tenant, state = next(clusters), next(tenants), next(states)
        active = state in ACTIVE
        created = now - rng.uniform(0, 6 * 3600 if active else SPAN_DAYS * DAY)
        name = f"{NAMES[int(rng.paretovariate(1.2)) % len(NAMES)]}-{rng.randrange(40)}"
        labels = {"env": next(envs),
                  "team": TEAMS[int(rng.paretovariate(1.0)) % len(TEAMS)]}
        if rng.random() < 0.6:
            labels["project"] = f"p{int(rng.paretovariate(0.8)) % 200:03d}"
        if rng.random() < 0.05:
            labels["priority"] = "high"
        spec = SPEC % (cluster, name, json.dumps(labels), tenant)
        submitted = created + rng.uniform(1, 60) if state not in ("queued", "claimed") else None
        started = (submitted + rng.expovariate(1 / 120)
                   if submitted and state not in ("submitting", "submitted") else None)
        finished = started + rng.lognormvariate(6, 1.2) if started and not active else None
        if state == "cancelled" and started is None:
            finished = created + rng.uniform(1, 600)
        exit_code = {"succeeded": 0, "failed": 1}.get(state)
        reason = {"failed": "exit code 1", "timed_out": "walltime exceeded",
                  "lost": "node failure", "cancelled": "cancelled by user"}.get(state)
        yield (_job_id(rng, created, i), cluster, tenant, state, spec, 4, 1,
               str(100000 + i) if submitted else None, exit_code, reason,
               f"agent-{cluster}" if state != "queued" else None, False, created,
               finished or started or submitted or created, submitted, started,
               finished), labels


_LAST: dict[tuple[int, float, int], list[tuple[tuple[Any, ...], dict[str, str]]]] = {}


def job_chunk(n: int, now: float, seed: int) -> list[tuple[tuple[Any, ...], dict[str, str]]]:
    """:func:`job_rows` as a list, the last one kept: both stores get the same first 100k
    jobs, generated once."""
    key = (n, now, seed)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = list(job_rows(n, now, seed))
    return _LAST[key]


# -- a wide fan-out run --------------------------------------------------------------------
FAN_RUN = """name: fan-{width}
defaults: {{cluster: alpha, resources: {{cores: 1, walltime: 10m}}}}
steps:
  - id: prepare
    command: [python, -m, prep]
  - id: fan
    needs: [prepare]
    foreach: {{range: [0, {width}]}}
    command: [python, -m, work, '{{{{ item }}}}']
  - id: gather
    needs: [fan]
    command: [python, -m, gather]
"""


@dataclass(frozen=True, slots=True)
class RunRows:
    run: tuple[Any, ...]
    tasks: list[tuple[Any, ...]]
    jobs: list[tuple[Any, ...]]


RUN_COLUMNS = ("id", "workflow", "tenant", "spec", "filename", "params", "state", "created_at",
               "updated_at")
TASK_COLUMNS = ("run_id", "step", "idx", "pos", "item", "state", "attempt", "tries", "job_id",
                "exit_code", "reason", "ready_at", "started_at", "finished_at")


def run_rows(width: int, now: float, seed: int = 2) -> RunRows:
    """A running run of prepare -> fan x ``width`` -> gather: most of the fan-out ended
    (5% failed), the rest queued or running, each task with its job."""
    rng, run_id, start = random.Random(seed), new_run_id(), now - 3600
    run = (run_id, f"fan-{width}", "t00", FAN_RUN.format(width=width), f"fan-{width}.yaml",
           "{}", "running", start, now)
    tasks: list[tuple[Any, ...]] = []
    jobs: list[tuple[Any, ...]] = []
    plan = [("prepare", 0, None), *(("fan", i, json.dumps(i)) for i in range(width)),
            ("gather", 0, None)]
    for pos, (step, idx, item) in enumerate(plan):
        if step == "gather":
            tasks.append((run_id, step, idx, pos, item, "waiting", 0, 0, None, None, None,
                          None, None, None))
            continue
        state = "succeeded" if step == "prepare" else rng.choices(
            ("succeeded", "failed", "queued"), (80, 5, 15))[0]
        began = start + (0 if step == "prepare" else 60 + rng.uniform(0, 3000))
        ended = began + rng.uniform(5, 120) if state != "queued" else None
        job_state = state if state != "queued" else rng.choice(("queued", "running"))
        job_id = _job_id(rng, began - 1, pos)
        spec = SPEC % ("alpha", step, json.dumps({"run": run_id}), "t00")
        jobs.append((job_id, "alpha", "t00", job_state, spec, 4, 1, str(pos),
                     {"succeeded": 0, "failed": 1}.get(state), None, "agent-alpha", False,
                     began - 1, ended or began, began, began if job_state != "queued" else None,
                     ended))
        tasks.append((run_id, step, idx, pos, item, state, 1, 1, job_id,
                      {"succeeded": 0, "failed": 1}.get(state), None, began - 1,
                      began if job_state != "queued" else None, ended))
    return RunRows(run=run, tasks=tasks, jobs=jobs)


def log_chunks(job_id: str, size: int, chunk: int) -> Iterator[tuple[str, str, int, int, bytes]]:
    """``size`` bytes of numbered log lines in chunks of ``chunk`` bytes (as an agent sends
    them): (job_id, stream, pos, size, data)."""
    line = b"%09d 2026-12-05T10:00:00Z INFO step 42/100 loss=0.1234 lr=0.0003 ok\n"
    text = b"".join(line % i for i in range(chunk // len(line % 0) + 1))[:chunk]
    for pos in range(0, size, chunk):
        data = text[:min(chunk, size - pos)]
        yield (job_id, "stdout", pos, len(data), data)


# -- writing -------------------------------------------------------------------------------
CLUSTER_ROW = ("name", "backend", "labels", "agent_id", "last_heartbeat", "info")


def cluster_rows(now: float) -> list[tuple[Any, ...]]:
    return [(name, "slurm_cli", json.dumps({"site": "dc1", "gpu": str(i % 2 == 0).lower()}),
             f"agent-{name}", now, "{}") for i, name in enumerate(CLUSTERS)]


async def fill_postgres(dsn: str, n: int, runs: Sequence[RunRows], now: float) -> None:
    """COPY the jobs, their labels, runs and clusters, with the jobs' secondary indexes
    dropped and the labels trigger off meanwhile (then each index is built again from its
    own definition, and ``job_labels`` holds what the trigger writes); then VACUUM ANALYZE,
    as autovacuum does to a table that grew this much."""
    conn = await asyncpg.connect(dsn)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs' "
            "AND indexname <> 'jobs_pkey'")
        await conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_labels")
        for ix in indexes:
            await conn.execute(f"DROP INDEX {ix['indexname']}")
        for lo in range(0, n, 100_000):
            jobs = job_chunk(min(n, lo + 100_000) - lo, now, seed=lo + 1)
            await conn.copy_records_to_table("jobs", records=[j for j, _ in jobs],
                                             columns=COLUMNS)
            await conn.copy_records_to_table("job_labels", records=label_rows(jobs),
                                             columns=("key", "value", "job_id"))
        for r in runs:
            await conn.copy_records_to_table("jobs", records=r.jobs, columns=COLUMNS)
            await conn.copy_records_to_table("job_labels", records=[
                ("run", r.run[0], j[0]) for j in r.jobs], columns=("key", "value", "job_id"))
            await conn.copy_records_to_table("workflow_runs", records=[r.run],
                                             columns=RUN_COLUMNS)
            await conn.copy_records_to_table("workflow_tasks", records=r.tasks,
                                             columns=TASK_COLUMNS)
        await conn.copy_records_to_table("clusters", records=cluster_rows(now),
                                         columns=CLUSTER_ROW)
        for ix in indexes:
            await conn.execute(ix["indexdef"])
        await conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_labels")
        await conn.execute("VACUUM ANALYZE jobs, job_labels, workflow_tasks")
    finally:
        await conn.close()


def label_rows(jobs: Sequence[tuple[tuple[Any, ...], dict[str, str]]],
               ) -> list[tuple[str, str, str]]:
    return [(k, v, row[0]) for row, labels in jobs for k, v in labels.items()]


async def pg_log(dsn: str, job_id: str, size: int, chunk: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("job_logs", records=log_chunks(job_id, size, chunk),
                                         columns=("job_id", "stream", "pos", "size", "data"))
    finally:
        await conn.close()


def _insert(db: sqlite3.Connection, table: str, columns: Sequence[str],
            rows: Any) -> None:
    marks = ", ".join("?" * len(columns))
    db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def fill_sqlite(path: Path, n: int, runs: Sequence[RunRows], now: float) -> None:
    """The same rows into SQLite in one transaction, with the jobs' secondary indexes and
    the labels trigger dropped meanwhile (then made again from their own SQL, and
    ``job_labels`` written as the trigger writes it). The count triggers (migration 0011)
    stay: they keep ``job_counts`` as the server's writes would."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        saved = db.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'jobs' "
                           "AND type IN ('index', 'trigger') AND sql IS NOT NULL "
                           "AND name NOT LIKE 'jobs_count_%'").fetchall()
        for kind, name, _ in saved:
            db.execute(f"DROP {kind.upper()} {name}")
        jobs = job_chunk(n, now, seed=1)
        _insert(db, "jobs", COLUMNS, (row for row, _ in jobs))
        _insert(db, "job_labels", ("key", "value", "job_id"), label_rows(jobs))
        for r in runs:
            _insert(db, "jobs", COLUMNS, r.jobs)
            _insert(db, "job_labels", ("key", "value", "job_id"),
                    [("run", r.run[0], j[0]) for j in r.jobs])
            _insert(db, "workflow_runs", RUN_COLUMNS, [r.run])
            _insert(db, "workflow_tasks", TASK_COLUMNS, r.tasks)
        _insert(db, "clusters", CLUSTER_ROW, cluster_rows(now))
        for _, _, sql in saved:
            db.execute(sql)
        db.execute("COMMIT")
    finally:
        db.close()
