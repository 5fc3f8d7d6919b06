"""Broker benchmark: throughput through the HTTP API, claim latency and wake latency.

    python bench/broker.py [--quick] [--jobs N] [--pg-dsn DSN] [--agents K]

Every Bridgehead figure goes through a real server process (uvicorn) over HTTP; the baseline
does the same database work with raw SQL on a fresh database of the same server. Results go
to ``bench/results/broker.json``; see ``bench/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from common import (
    BATCH,
    STAMP,
    BenchError,
    Tokens,
    balancer,
    console,
    latency_figures,
    make_tokens,
    process,
    publish,
    read_stamp,
    requests_served,
    server,
    tail,
    until_online,
)
from rich.table import Table

from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import Job, JobSpec, JobState, Transition, new_job_id
from bridgehead.store import create_store

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).resolve().parent / "results" / "broker.json"
CLUSTER = "bench"
REPORTS = (JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING, JobState.SUCCEEDED)
"""After the claim, the legal path to ``succeeded`` (claimed -> running is refused by CAS)."""
RAW_STATES = ("claimed", *(s.value for s in REPORTS))
WAKE_RUNS = {"wake_latency_ms": ("local", None), "wake_latency_ms_poll_0_2": ("local-fast", 0.2)}
"""JSON key -> (cluster, agent --poll-interval; None = the default). One cluster per agent
run, so a long-poll left behind by the previous agent cannot take the next run's jobs."""
WAKE_SLEEP_S = 0.3
"""The wake job sleeps this long plus a random part of the agent's poll interval, so its end
falls anywhere between two polls (a fixed duration would measure one fixed phase)."""
CLAIM_PAUSE_S = 0.05
STEP_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    jobs: int
    pg_dsn: str
    agents: int
    claim_samples: int
    wake_samples: int
    quick: bool
    output: Path
    balanced: bool = True


@dataclass(slots=True)
class Progress:
    total: int
    done: int = 0
    last: float = 0.0
    claims: list[int] = field(default_factory=list)


# -- processes, databases, tokens -------------------------------------------------------------


def dsn_for(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def pg_execute(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """A fresh, empty database; dropped on exit (even if a connection is still open)."""
    await pg_execute(admin_dsn, f"CREATE DATABASE {name}")
    try:
        yield dsn_for(admin_dsn, name)
    finally:
        await pg_execute(admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def migrate(dsn: str) -> None:
    store = create_store(dsn)
    await store.open()
    await store.close()


def bench_spec(i: int, cluster: str = CLUSTER) -> JobSpec:
    return JobSpec(cluster=cluster, command=("true",), name=f"bench-{i}")


# -- throughput through the API ---------------------------------------------------------------
async def throughput(url: str, tokens: Tokens, n: int, agents: int) -> tuple[float, list[int]]:
    """Seconds from the first submit to the last ``succeeded`` report (all N jobs verified
    afterwards), and the size of each claim."""
    progress = Progress(total=n)
    admin = AsyncClient(url, tokens.admin)
    workers = [AsyncClient(url, tokens.agents[CLUSTER]) for _ in range(agents)]
    try:
        start = time.perf_counter()
        async with asyncio.timeout(STEP_TIMEOUT_S), asyncio.TaskGroup() as tg:
            submitted = tg.create_task(submit_all(admin, n))
            for i, client in enumerate(workers):
                tg.create_task(work(client, f"bench-agent-{i}", progress))
        await verify_succeeded(admin, submitted.result(), n)
    finally:
        for client in (admin, *workers):
            await client.aclose()
    return progress.last - start, progress.claims


async def submit_all(client: AsyncClient, n: int) -> list[str]:
    ids: list[str] = []
    for lo in range(0, n, BATCH):
        jobs = await client.submit_many([bench_spec(i) for i in range(lo, min(n, lo + BATCH))])
        ids += [j.id for j in jobs]
    return ids


async def work(client: AsyncClient, agent_id: str, progress: Progress) -> None:
    """A fake agent: claim a batch, then report each step of the path for the whole batch."""
    while progress.done < progress.total:
        jobs, _ = await client.claim(CLUSTER, agent_id, max_jobs=BATCH, wait_s=0.5)
        if not jobs:
            continue
        progress.claims.append(len(jobs))
        for state in REPORTS:
            await report(client, agent_id, jobs, state)
        progress.done += len(jobs)
        progress.last = time.perf_counter()


async def report(client: AsyncClient, agent_id: str, jobs: list[Job], state: JobState) -> None:
    transitions = [
        Transition(job_id=j.id, state=state,
                   native_id=j.id if state is JobState.SUBMITTED else None,
                   exit_code=0 if state is JobState.SUCCEEDED else None)
        for j in jobs
    ]
    applied = await client.report(CLUSTER, agent_id, transitions=transitions)
    if len(applied) != len(jobs) or not all(applied):
        raise BenchError(f"{applied.count(False)} of {len(jobs)} reports to {state} refused")


async def verify_succeeded(client: AsyncClient, ids: list[str], n: int) -> None:
    seen: set[str] = set()
    after: str | None = None
    while True:
        page, after = await client.list_jobs(cluster=CLUSTER, states=["succeeded"],
                                             limit=1000, after=after)
        seen.update(j.id for j in page)
        if after is None:
            break
    missing = set(ids) - seen
    if len(set(ids)) != n or missing or len(seen) != n:
        raise BenchError(f"{n} jobs submitted ({len(set(ids))} ids), {len(seen)} succeeded, "
                         f"{len(missing)} submitted ones not succeeded")


# -- the raw SQL baseline -----------------------------------------------------------------------
RAW_INSERT_PG = """
INSERT INTO jobs (id, cluster, tenant, state, spec, created_at, updated_at)
VALUES ($1, $2, $3, 'queued', $4, $5, $5)
"""
RAW_UPDATE_PG = """
UPDATE jobs SET state = $2, agent_id = $3, version = version + 1, updated_at = $4
WHERE id = ANY($1::text[])
"""
RAW_INSERT_SQLITE = """
INSERT INTO jobs (id, cluster, tenant, state, spec, created_at, updated_at)
VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5)
"""
RAW_UPDATE_SQLITE = """
UPDATE jobs SET state = ?2, agent_id = ?3, version = version + 1, updated_at = ?4
WHERE id IN (SELECT value FROM json_each(?1))
"""
RAW_COUNT = "SELECT count(*) FROM jobs WHERE state = 'succeeded'"


def raw_rows(lo: int, hi: int) -> list[tuple[str, str, str, str, float]]:
    now = time.time()
    return [(new_job_id(), CLUSTER, "default", json.dumps(bench_spec(i).to_dict()), now)
            for i in range(lo, hi)]


async def raw_postgres(dsn: str, n: int) -> float:
    """The same rows and state changes, one statement per transaction, with asyncpg."""
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        for lo in range(0, n, BATCH):
            rows = raw_rows(lo, min(n, lo + BATCH))
            await conn.executemany(RAW_INSERT_PG, rows)
            ids = [r[0] for r in rows]
            for state in RAW_STATES:
                await conn.execute(RAW_UPDATE_PG, ids, state, "raw-agent", time.time())
        elapsed = time.perf_counter() - start
        done = await conn.fetchval(RAW_COUNT)
    finally:
        await conn.close()
    if done != n:
        raise BenchError(f"raw SQL on PostgreSQL: {done} of {n} rows succeeded")
    return elapsed


def raw_sqlite(path: Path, n: int) -> float:
    """The same rows and state changes, one statement per transaction, with sqlite3 (WAL,
    synchronous=NORMAL as the store)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        start = time.perf_counter()
        for lo in range(0, n, BATCH):
            rows = raw_rows(lo, min(n, lo + BATCH))
            _sqlite_write(db, RAW_INSERT_SQLITE, rows, many=True)
            ids = json.dumps([r[0] for r in rows])
            for state in RAW_STATES:
                _sqlite_write(db, RAW_UPDATE_SQLITE, (ids, state, "raw-agent", time.time()))
        elapsed = time.perf_counter() - start
        done = db.execute(RAW_COUNT).fetchone()[0]
    finally:
        db.close()
    if done != n:
        raise BenchError(f"raw SQL on SQLite: {done} of {n} rows succeeded")
    return elapsed


def _sqlite_write(db: sqlite3.Connection, sql: str, params: Any, *, many: bool = False) -> None:
    """One statement in its own write transaction, as the store does per request."""
    db.execute("BEGIN IMMEDIATE")
    if many:
        db.executemany(sql, params)
    else:
        db.execute(sql, params)
    db.execute("COMMIT")


# -- latencies ----------------------------------------------------------------------------------
async def claim_latency(url: str, tokens: Tokens, samples: int) -> list[float]:
    """ms from just before POST /v1/jobs to the arrival of the parked claim that takes it."""
    admin = AsyncClient(url, tokens.admin)
    agent = AsyncClient(url, tokens.agents[CLUSTER])
    arrived: asyncio.Queue[tuple[float, list[Job]]] = asyncio.Queue()
    poller = asyncio.create_task(_claim_forever(agent, arrived))
    try:
        out = [await _claim_sample(admin, arrived, poller) for _ in range(samples + 1)]
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await admin.aclose()
        await agent.aclose()
    return out[1:]  # the first is a warm-up


async def _claim_forever(client: AsyncClient, out: asyncio.Queue[tuple[float, list[Job]]],
                         ) -> None:
    while True:
        jobs, _ = await client.claim(CLUSTER, "latency-agent", max_jobs=1, wait_s=20.0)
        if jobs:
            out.put_nowait((time.perf_counter(), jobs))


async def _claim_sample(admin: AsyncClient, arrived: asyncio.Queue[tuple[float, list[Job]]],
                        poller: asyncio.Task[None]) -> float:
    await asyncio.sleep(CLAIM_PAUSE_S)  # let the claim park on the server
    start = time.perf_counter()
    job = await admin.submit(bench_spec(0))
    try:
        at, jobs = await asyncio.wait_for(arrived.get(), 30)
    except TimeoutError:
        exc = poller.exception() if poller.done() else None
        raise BenchError(f"job {job.id} was not claimed within 30 s ({exc!r})") from exc
    if [j.id for j in jobs] != [job.id]:
        raise BenchError(f"the claim returned {[j.id for j in jobs]}, expected {job.id}")
    return (at - start) * 1000


@contextlib.asynccontextmanager
async def agent(url: str, token: str, cluster: str, work: Path, poll_s: float | None,
                ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A real agent process (``bridgehead agent``, local backend)."""
    argv = [sys.executable, "-m", "bridgehead.cli.main", "agent", "--cluster", cluster,
            "--server", url, "--state-dir", str(work / f"agent-{cluster}")]
    if poll_s is not None:
        argv += ["--poll-interval", str(poll_s)]
    env = {**os.environ, "BRIDGEHEAD_TOKEN": token, "BRIDGEHEAD_HOME": str(work / "home"),
           "BRIDGEHEAD_LOG_LEVEL": "WARNING"}
    async with process(argv, env, work / f"agent-{cluster}.log") as proc:
        yield proc


async def wake_latency(url: str, tokens: Tokens, cluster: str, work: Path, samples: int,
                       poll_s: float | None) -> list[float]:
    """ms from the job's last act (it writes time.time()) to the return of a parked
    ``GET /v1/jobs/{id}/wait?until=terminal``."""
    admin = AsyncClient(url, tokens.admin)
    log = work / f"agent-{cluster}.log"
    rng = random.Random(samples)
    try:
        async with agent(url, tokens.agents[cluster], cluster, work, poll_s) as proc:
            await until_online(admin, cluster, proc, log)
            out = []
            for i in range(samples + 1):
                spec = JobSpec(cluster=cluster, command=(
                    sys.executable, "-c", STAMP, str(work / f"stamp-{cluster}-{i}"),
                    f"{WAKE_SLEEP_S + rng.uniform(0, poll_s or 1.0):.3f}"))
                out.append(await _wake_sample(admin, spec, log))
    finally:
        await admin.aclose()
    return out[1:]  # the first is a warm-up


async def _wake_sample(admin: AsyncClient, spec: JobSpec, log: Path) -> float:
    job = await admin.submit(spec)
    done = await admin.wait(job.id, until="terminal", timeout=60)
    returned = time.time()
    if done.state is not JobState.SUCCEEDED:
        raise BenchError(f"wake job {job.id} ended {done.state} ({done.reason}):\n{tail(log)}")
    return (returned - read_stamp(Path(spec.command[3]))) * 1000


# -- the runs -----------------------------------------------------------------------------------
def backend_figures(n: int, wall_s: float, raw_wall_s: float, claims: list[int]) -> dict[str, Any]:
    bridgehead, raw = n / wall_s, n / raw_wall_s
    return {"jobs": n, "jobs_per_s": round(bridgehead, 1), "raw_sql_jobs_per_s": round(raw, 1),
            "ratio": round(raw / bridgehead, 2), "wall_s": round(wall_s, 3),
            "raw_sql_wall_s": round(raw_wall_s, 3), "claims": len(claims),
            "mean_claim_size": round(statistics.fmean(claims), 1) if claims else 0}


async def run_postgres(cfg: BenchConfig, work: Path) -> dict[str, Any]:
    name = f"bh_bench_{secrets.token_hex(4)}"
    async with pg_database(cfg.pg_dsn, name) as dsn, \
            pg_database(cfg.pg_dsn, f"{name}_raw") as raw_dsn:
        tokens = await make_tokens(dsn, [CLUSTER])
        async with server(dsn, work, "postgres") as url:
            console.log(f"postgres: {cfg.jobs} jobs through {url}")
            wall, claims = await throughput(url, tokens, cfg.jobs, cfg.agents)
            console.log(f"postgres: claim latency, {cfg.claim_samples} samples")
            latencies = await claim_latency(url, tokens, cfg.claim_samples)
        console.log("postgres: raw SQL baseline")
        await migrate(raw_dsn)
        raw_wall = await raw_postgres(raw_dsn, cfg.jobs)
    return {"postgres": backend_figures(cfg.jobs, wall, raw_wall, claims),
            "claim_latency_ms": latency_figures(latencies, store="postgres")}


async def balanced_run(cfg: BenchConfig, work: Path, replicas: int) -> dict[str, Any]:
    """The throughput run through haproxy in front of ``replicas`` servers on one fresh
    PostgreSQL database, and the requests each replica served (its /metrics): BenchError if
    one served none, as the figure would not be two replicas'."""
    name = f"bh_bench_lb_{secrets.token_hex(4)}"
    async with pg_database(cfg.pg_dsn, name) as dsn, contextlib.AsyncExitStack() as stack:
        tokens = await make_tokens(dsn, [CLUSTER])
        urls = [await stack.enter_async_context(server(dsn, work, f"lb{replicas}-{i}"))
                for i in range(replicas)]
        url = await stack.enter_async_context(balancer(urls, work, f"lb{replicas}"))
        console.log(f"postgres: {cfg.jobs} jobs through haproxy {url}, {replicas} replica(s)")
        wall, claims = await throughput(url, tokens, cfg.jobs, cfg.agents)
        served = [await requests_served(u, tokens.admin) for u in urls]
    per_replica = [{"claims": s.get("POST /v1/agent/claim", 0),
                    "reports": s.get("POST /v1/agent/report", 0),
                    "submits": s.get("POST /v1/jobs/batch", 0),
                    "api_requests": sum(n for k, n in s.items() if " /v1/" in k)}
                   for s in served]
    idle = [i for i, r in enumerate(per_replica) if not r["api_requests"]]
    if idle:
        raise BenchError(f"replica(s) {idle} of {replicas} behind haproxy served no API "
                         f"request: {per_replica}")
    return {"replicas": replicas, "jobs": cfg.jobs, "jobs_per_s": round(cfg.jobs / wall, 1),
            "wall_s": round(wall, 3), "claims": len(claims), "requests_per_replica": per_replica}


async def run_balanced(cfg: BenchConfig, work: Path, one_server: dict[str, Any],
                       ) -> dict[str, Any]:
    """Two replicas behind haproxy against one server (the direct run, same jobs, same run)
    and against one replica behind the same haproxy (what the balancer itself costs)."""
    one = await balanced_run(cfg, work, 1)
    two = await balanced_run(cfg, work, 2)
    return {"lb_two_replicas": two, "lb_one_replica": one,
            "one_server": {"jobs": one_server["jobs"], "jobs_per_s": one_server["jobs_per_s"],
                           "wall_s": one_server["wall_s"]},
            "ratio": round(two["jobs_per_s"] / one_server["jobs_per_s"], 2),
            "ratio_vs_lb_one_replica": round(two["jobs_per_s"] / one["jobs_per_s"], 2)}


async def run_sqlite(cfg: BenchConfig, work: Path) -> dict[str, Any]:
    dsn = f"sqlite:///{work / 'bridgehead.db'}"
    tokens = await make_tokens(dsn, [CLUSTER, *(c for c, _ in WAKE_RUNS.values())])
    out: dict[str, Any] = {}
    async with server(dsn, work, "sqlite") as url:
        console.log(f"sqlite: {cfg.jobs} jobs through {url}")
        wall, claims = await throughput(url, tokens, cfg.jobs, cfg.agents)
        for key, (cluster, poll_s) in WAKE_RUNS.items():
            console.log(f"sqlite: wake latency, agent poll {poll_s or 'default'}, "
                        f"{cfg.wake_samples} samples")
            samples = await wake_latency(url, tokens, cluster, work, cfg.wake_samples, poll_s)
            out[key] = latency_figures(samples, store="sqlite", poll_interval_s=poll_s or 1.0,
                                       job_sleep_s=f"{WAKE_SLEEP_S} + U(0, poll interval)")
    console.log("sqlite: raw SQL baseline")
    raw_path = work / "raw.db"
    await migrate(f"sqlite:///{raw_path}")
    raw_wall = await asyncio.to_thread(raw_sqlite, raw_path, cfg.jobs)
    return {"sqlite": backend_figures(cfg.jobs, wall, raw_wall, claims), **out}


async def machine(cfg: BenchConfig) -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "postgres": await pg_execute(cfg.pg_dsn, "SHOW server_version")}


async def run(cfg: BenchConfig) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bh-bench-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        os.environ["BRIDGEHEAD_HOME"] = str(work / "home")  # no user config.toml/client.toml
        results = await run_postgres(cfg, work)
        if cfg.balanced:
            results["load_balancer"] = await run_balanced(cfg, work, results["postgres"])
        results.update(await run_sqlite(cfg, work))
    results["aims"] = aims(results)
    results["machine"] = await machine(cfg)
    results["run"] = {"quick": cfg.quick, "agents": cfg.agents, "batch": BATCH,
                      "path": " -> ".join(["queued", *RAW_STATES]),
                      "duration_s": round(time.perf_counter() - started, 1),
                      "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return results


# -- report -------------------------------------------------------------------------------------
def aims(r: dict[str, Any]) -> dict[str, bool]:
    """The aims of the issue, for reference (never asserted)."""
    return {
        "postgres_jobs_per_s >= 1000": r["postgres"]["jobs_per_s"] >= 1000,
        "postgres_ratio <= 5": r["postgres"]["ratio"] <= 5,
        "claim_p50_ms < 50": r["claim_latency_ms"]["p50"] < 50,
        "wake_p50_ms < 500": r["wake_latency_ms"]["p50"] < 500,
        "wake_p50_ms (poll 0.2 s) < 500": r["wake_latency_ms_poll_0_2"]["p50"] < 500,
    }


def _met(*flags: bool) -> str:
    return "[green]met[/]" if all(flags) else "[red]not met[/]"


def _latency(figures: dict[str, Any]) -> str:
    return f"p50 {figures['p50']:,.1f} / p99 {figures['p99']:,.1f}"


def table(r: dict[str, Any]) -> Table:
    a, pg, sq = r["aims"], r["postgres"], r["sqlite"]
    t = Table(title=f"Bridgehead broker benchmark ({pg['jobs']:,} jobs, "
                    f"{r['machine']['nproc']} CPUs, Python {r['machine']['python']})")
    for column in ("Measurement", "Bridgehead", "Raw SQL", "Ratio", "Aim", ""):
        t.add_column(column, justify="left" if column in ("Measurement", "Aim") else "right")
    t.add_row("Throughput, PostgreSQL (jobs/s)", f"{pg['jobs_per_s']:,.0f}",
              f"{pg['raw_sql_jobs_per_s']:,.0f}", f"{pg['ratio']:.1f}x",
              ">= 1,000 jobs/s, within 5x of raw SQL",
              _met(a["postgres_jobs_per_s >= 1000"], a["postgres_ratio <= 5"]))
    if lb := r.get("load_balancer"):
        two, one = lb["lb_two_replicas"], lb["lb_one_replica"]
        served = " + ".join(f"{x['api_requests']:,}" for x in two["requests_per_replica"])
        t.add_row("Throughput, PostgreSQL, haproxy + 2 replicas (jobs/s)",
                  f"{two['jobs_per_s']:,.0f}", "-", f"{lb['ratio']:.2f}x one server", "-",
                  f"requests per replica {served}")
        t.add_row("Throughput, PostgreSQL, haproxy + 1 replica (jobs/s)",
                  f"{one['jobs_per_s']:,.0f}", "-",
                  f"2 replicas {lb['ratio_vs_lb_one_replica']:.2f}x", "-", "")
    t.add_row("Throughput, SQLite (jobs/s)", f"{sq['jobs_per_s']:,.0f}",
              f"{sq['raw_sql_jobs_per_s']:,.0f}", f"{sq['ratio']:.1f}x", "-", "")
    t.add_row("Claim latency, PostgreSQL (ms)", _latency(r["claim_latency_ms"]), "-", "-",
              "p50 < 50 ms", _met(a["claim_p50_ms < 50"]))
    t.add_row("Wake latency, agent poll 1.0 s (ms)", _latency(r["wake_latency_ms"]), "-", "-",
              "p50 < 500 ms", _met(a["wake_p50_ms < 500"]))
    t.add_row("Wake latency, agent poll 0.2 s (ms)", _latency(r["wake_latency_ms_poll_0_2"]),
              "-", "-", "p50 < 500 ms", _met(a["wake_p50_ms (poll 0.2 s) < 500"]))
    return t


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (under a minute)")
    parser.add_argument("--jobs", type=int, help="jobs per throughput run (5000; quick 1000)")
    parser.add_argument("--pg-dsn", default=os.environ.get("BRIDGEHEAD_TEST_PG_DSN",
                                                           DEFAULT_PG_DSN),
                        help="PostgreSQL server (a fresh database is made and dropped on it)")
    parser.add_argument("--agents", type=int, default=4, help="concurrent fake agents")
    parser.add_argument("--no-balancer", action="store_true",
                        help="skip the runs through haproxy (two replicas vs one server)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    jobs = args.jobs or (1000 if args.quick else 5000)
    if jobs < 1 or args.agents < 1:
        parser.error("--jobs and --agents must be >= 1")
    return BenchConfig(jobs=jobs, pg_dsn=args.pg_dsn, agents=args.agents,
                       claim_samples=50 if args.quick else 200,
                       wake_samples=10 if args.quick else 30, quick=args.quick,
                       output=args.output, balanced=not args.no_balancer)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        results = asyncio.run(run(cfg))
    except BenchError as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc!r} (PostgreSQL: {cfg.pg_dsn})")
        return 1
    publish(results, cfg.output, table(results), width=140)
    return 0


if __name__ == "__main__":
    sys.exit(main())
