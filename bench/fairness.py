"""Fairness: does a client flooding the server starve the others?

    .venv/bin/python bench/fairness.py --quick      # 4 phases of 10 s: about a minute
    .venv/bin/python bench/fairness.py              # 4 phases of 30 s

One real server (uvicorn, own process) on a fresh PostgreSQL database per phase. In every
phase a normal client submits one job at a time (``POST /v1/jobs``) and a fake agent (its own
token) claims them (``POST /v1/agent/claim``, no wait) and reports each step to
``succeeded`` (``POST /v1/agent/report``); each call is timed. In the flood phases a third
token, from its own process (so its work does not slow this process's clocks), keeps
``--flood`` requests in flight at all times, alternating a 20-job batch submit (to a cluster
no agent serves) and a 100-job listing, and ignores any ``Retry-After`` (the worst case: a
runaway script). Phases: without the server's protection (``max_requests_per_token`` 0) and
with it (``--limit``, the default setting), each without and with the flood. The run fails if
the protection never refused the flooder (it did not engage) or refused anyone else.

Prints p50/p95/p99 of each call and the flood/no-flood ratio of each, and writes
bench/results/fairness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from broker import DEFAULT_PG_DSN, REPORTS, bench_spec, pg_database, pg_execute, report
from common import BenchError, console, latency_figures, make_tokens, publish, server
from rich.table import Table

from bridgehead.client import AsyncClient
from bridgehead.config import ServerSettings

CLUSTER = "bench"
CALLS = ("submit", "claim", "report")
FLOOD_BATCH = 20
WARM_UP = 5


async def flood(url: str, token: str, seconds: float, concurrency: int) -> Counter[str]:
    """``concurrency`` requests in flight for ``seconds``, never waiting between them;
    answers counted by status."""
    statuses: Counter[str] = Counter()
    body = {"jobs": [{"cluster": "flood", "command": ["true"], "name": "flood"}] * FLOOD_BATCH}
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as http:

        async def worker(i: int) -> None:
            while time.monotonic() < end:
                try:
                    if i % 2:
                        r = await http.post("/v1/jobs/batch", json=body)
                    else:
                        r = await http.get("/v1/jobs", params={"cluster": "flood",
                                                               "limit": 100})
                    statuses[str(r.status_code)] += 1
                    i += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return statuses


async def normal_client(client: AsyncClient, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await client.submit(bench_spec(0))
        out.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.02)


async def agent(client: AsyncClient, stop: asyncio.Event, claims: list[float],
                reports: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        jobs, _ = await client.claim(CLUSTER, "fair-agent", max_jobs=5)
        claims.append((time.perf_counter() - start) * 1000)
        if not jobs:
            await asyncio.sleep(0.02)
        for state in REPORTS if jobs else ():
            start = time.perf_counter()
            await report(client, "fair-agent", jobs, state)
            reports.append((time.perf_counter() - start) * 1000)


async def phase(pg_dsn: str, work: Path, *, limit: int, flooding: int, seconds: float,
                ) -> dict[str, Any]:
    """One measurement: ``flooding`` concurrent flood requests (0: no flood)."""
    name = f"bh_bench_fair_{secrets.token_hex(4)}"
    async with pg_database(pg_dsn, name) as dsn:
        tokens = await make_tokens(dsn, [CLUSTER])
        flooder = (await make_tokens(dsn, [])).admin
        async with server(dsn, work, f"fair-{limit}-{flooding}",
                          {"BRIDGEHEAD_MAX_REQUESTS_PER_TOKEN": str(limit)}) as url:
            console.log(f"limit {limit or 'none'}, flood {flooding or 'none'}: {seconds:.0f} s")
            samples: dict[str, list[float]] = {c: [] for c in CALLS}
            stop = asyncio.Event()
            async with AsyncClient(url, tokens.admin) as normal, \
                    AsyncClient(url, tokens.agents[CLUSTER]) as worker:
                flood_proc = await _flood_process(url, flooder, seconds, flooding)
                tasks = [asyncio.create_task(normal_client(normal, stop, samples["submit"])),
                         asyncio.create_task(agent(worker, stop, samples["claim"],
                                                   samples["report"]))]
                await asyncio.sleep(seconds)
                stop.set()
                await asyncio.gather(*tasks)
                statuses = await _flood_result(flood_proc)
                throttled = await _throttled(url, tokens.admin)
    if flooding and limit and not statuses.get("429"):
        raise BenchError(f"the limit {limit} never refused the flooder: {dict(statuses)}")
    if throttled != statuses.get("429", 0):
        raise BenchError(f"the server refused {throttled} requests, the flooder got "
                         f"{statuses.get('429', 0)} 429s: someone else was refused")
    return {"limit": limit, "flood_concurrency": flooding, "seconds": seconds,
            "flood_answers": dict(statuses),
            **{c: latency_figures(s[WARM_UP:] or s) for c, s in samples.items()}}


async def _flood_process(url: str, token: str, seconds: float,
                         concurrency: int) -> asyncio.subprocess.Process | None:
    if not concurrency:
        return None
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--flood-only", url, str(seconds), str(concurrency),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "FAIRNESS_FLOOD_TOKEN": token})


async def _flood_result(proc: asyncio.subprocess.Process | None) -> Counter[str]:
    if proc is None:
        return Counter()
    out, _ = await proc.communicate()
    if proc.returncode:
        raise BenchError(f"the flooder exited with {proc.returncode}")
    return Counter(json.loads(out))


async def _throttled(url: str, token: str) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{url}/metrics",
                               headers={"Authorization": f"Bearer {token}"})).text
    for line in text.splitlines():
        if line.startswith("bridgehead_requests_throttled_total "):
            return int(float(line.split()[1]))
    return 0


def ratios(calm: dict[str, Any], flooded: dict[str, Any]) -> dict[str, float]:
    """Flooded p95 / calm p95 of each call: 1.0 is no harm done."""
    return {c: round(flooded[c]["p95"] / max(calm[c]["p95"], 0.001), 2) for c in CALLS}


def render(r: dict[str, Any]) -> Table:
    t = Table(title=f"Fairness under a flood ({r['run']['flood']} requests in flight, "
                    f"{r['machine']['nproc']} CPUs): ms, p50 / p95 / p99")
    t.add_column("server protection")
    t.add_column("flood")
    for c in CALLS:
        t.add_column(f"{c} (ms)", justify="right")
    t.add_column("flood answers", justify="right")
    for key in ("unprotected", "protected"):
        for phase_key in ("calm", "flooded"):
            p = r[key][phase_key]
            t.add_row(f"{key} (limit {p['limit'] or 'none'})", phase_key,
                      *(f"{p[c]['p50']:,.0f} / {p[c]['p95']:,.0f} / {p[c]['p99']:,.0f}"
                        for c in CALLS),
                      ", ".join(f"{k}: {v:,}" for k, v in sorted(p["flood_answers"].items())))
        ratio = r[key]["p95_ratio"]
        t.add_row("", "p95 flooded / calm", *(f"{ratio[c]:.1f}x" for c in CALLS), "")
    return t


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    seconds = 10.0 if args.quick else 30.0
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bh-fair-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        os.environ["BRIDGEHEAD_HOME"] = str(work / "home")
        for key, limit in (("unprotected", 0), ("protected", args.limit)):
            calm = await phase(args.pg_dsn, work, limit=limit, flooding=0, seconds=seconds)
            flooded = await phase(args.pg_dsn, work, limit=limit, flooding=args.flood,
                                  seconds=seconds)
            out[key] = {"calm": calm, "flooded": flooded, "p95_ratio": ratios(calm, flooded)}
    out["protection_gain_p95"] = {
        c: round(out["unprotected"]["flooded"][c]["p95"]
                 / max(out["protected"]["flooded"][c]["p95"], 0.001), 2) for c in CALLS}
    out["machine"] = {"nproc": os.cpu_count(),
                      "postgres": await pg_execute(args.pg_dsn, "SHOW server_version")}
    out["run"] = {"quick": args.quick, "flood": args.flood, "limit": args.limit,
                  "duration_s": round(time.perf_counter() - started, 1),
                  "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="phases of 10 s, not 30 s")
    parser.add_argument("--flood", type=int, default=64,
                        help="the flooder's requests in flight (64)")
    parser.add_argument("--limit", type=int,
                        default=ServerSettings.model_fields["max_requests_per_token"].default,
                        help="max_requests_per_token of the protected phases (the default)")
    parser.add_argument("--pg-dsn", default=os.environ.get("BRIDGEHEAD_TEST_PG_DSN",
                                                           DEFAULT_PG_DSN))
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "fairness.json")
    args = parser.parse_args(argv)
    if args.flood < 1 or args.limit < 1:
        parser.error("--flood and --limit must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--flood-only"]:  # the flooder's own process
        url, seconds, concurrency = argv[1], float(argv[2]), int(argv[3])
        statuses = asyncio.run(flood(url, os.environ["FAIRNESS_FLOOD_TOKEN"], seconds,
                                     concurrency))
        print(json.dumps(statuses))
        return 0
    args = parse_args(argv)
    try:
        results = asyncio.run(run(args))
    except BenchError as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    publish(results, args.output, render(results), width=150)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
