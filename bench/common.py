"""What the benchmarks share: processes (a real server, agents), tokens, latency figures and
the results file. It imports no optional driver (asyncpg, airflow) at import time, so each
benchmark runs where only its own needs are installed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bridgehead.client import AsyncClient
from bridgehead.domain.clusters import Role
from bridgehead.store import create_store

BATCH = 500
"""Submit batch, claim ``max_jobs`` and report batch; the baseline uses the same size."""


STAMP = ("import sys, time; time.sleep(float(sys.argv[2])); f = open(sys.argv[1], 'w'); "
         "f.write(repr(time.time())); f.close()")
"""The wake-latency job: sleeps, then writes the time as its last act."""


console = Console(stderr=True)
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
"""Debian's haproxy (``apt-get install haproxy``), the load balancer the benches start."""


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to (a refused report, a lost job...)."""


@dataclass(frozen=True, slots=True)
class Tokens:
    admin: str
    agents: dict[str, str]
    """Cluster -> agent token."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def process(argv: list[str], env: dict[str, str], log: Path) -> AsyncIterator[
        subprocess.Popen[bytes]]:
    """A child process with its output in ``log``; stopped (TERM, then KILL) on exit."""
    proc = spawn(argv, env, log)
    try:
        yield proc
    finally:
        await asyncio.to_thread(stop, proc)


@contextlib.asynccontextmanager
async def server(dsn: str, work: Path, name: str,
                 settings: dict[str, str] | None = None) -> AsyncIterator[str]:
    """A real Bridgehead server (uvicorn, own process) on ``dsn``; yields its URL.
    ``settings``: more of its environment (``BRIDGEHEAD_<SETTING>``)."""
    port, log = free_port(), work / f"server-{name}.log"
    argv = [sys.executable, "-m", "uvicorn", "--factory", "bridgehead.server.app:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--log-level", "warning", "--timeout-graceful-shutdown", "2"]
    env = {**os.environ, "BRIDGEHEAD_STORE": dsn, "BRIDGEHEAD_HOME": str(work / "home"),
           **(settings or {})}
    async with process(argv, env, log) as proc:
        url = f"http://127.0.0.1:{port}"
        await until_healthy(url, proc, log)
        yield url


async def until_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"the server exited with {proc.returncode}:\n{tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise BenchError(f"the server did not become healthy in 30 s:\n{tail(log)}")


async def make_tokens(dsn: str, clusters: Sequence[str]) -> Tokens:
    """Migrate the store and make an admin token and one agent token per cluster."""
    store = create_store(dsn)
    await store.open()
    try:
        _, admin = await store.create_token(name="bench-admin", role=Role.ADMIN, cluster=None,
                                            tenant=None)
        agents = {}
        for cluster in clusters:
            _, agents[cluster] = await store.create_token(
                name=f"bench-{cluster}", role=Role.AGENT, cluster=cluster, tenant=None)
    finally:
        await store.close()
    return Tokens(admin, agents)


async def until_online(admin: AsyncClient, cluster: str, proc: subprocess.Popen[bytes],
                        log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the agent exited with {proc.returncode}:\n{tail(log)}")
        if any(c["name"] == cluster and c["online"] for c in await admin.clusters()):
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"the agent of {cluster} did not come online in 30 s:\n{tail(log)}")


def read_stamp(path: Path) -> float:
    return float(path.read_text())


def latency_figures(samples_ms: list[float], **extra: Any) -> dict[str, Any]:
    q = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1),
            "mean": round(statistics.fmean(samples_ms), 1), "max": round(max(samples_ms), 1),
            "samples": len(samples_ms), **extra}


def publish(results: dict[str, Any], output: Path, rendered: Table, *, width: int) -> None:
    """Write the JSON results and print the table (``width`` columns when not a terminal)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    out = Console()
    if not out.is_terminal:
        out.width = width
    out.print(rendered)
    console.print(f"results written to {output} in {results['run']['duration_s']} s")


FAST_CHECKS = "inter 300ms fall 2 rise 2"
"""A dead replica is out within a second (chaos); a saturated one may be taken out too."""
PATIENT_CHECKS = "inter 2s fall 3 rise 2"
"""haproxy's default pace: a replica busy at 100% CPU (a throughput run) stays in."""


def haproxy_config(port: int, ports: Sequence[int], checks: str = FAST_CHECKS) -> str:
    """haproxy in front of the replicas on ``ports`` (round robin per request, health-checked
    on /health at ``checks``' pace, a request a dead replica refused sent to the other),
    listening on ``port``."""
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p} check" for i, p in enumerate(ports))
    return ("global\n    maxconn 1024\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 120s\n"
            "    timeout server 120s\n    retries 3\n    option redispatch\n"
            f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
            "backend be\n    balance roundrobin\n    option httpchk GET /health\n"
            f"    timeout check 5s\n    default-server {checks}\n{servers}\n")


@contextlib.asynccontextmanager
async def balancer(urls: Sequence[str], work: Path, name: str) -> AsyncIterator[str]:
    """haproxy (own process) in front of the servers at ``urls``, health checks at haproxy's
    default pace; yields its URL once it forwards /health."""
    config, port = _haproxy_file(work / f"haproxy-{name}.cfg", urls)
    log = work / f"haproxy-{name}.log"
    async with process([HAPROXY, "-db", "-f", str(config)], dict(os.environ), log) as proc:
        url = f"http://127.0.0.1:{port}"
        await until_healthy(url, proc, log)
        yield url


def _haproxy_file(config: Path, urls: Sequence[str]) -> tuple[Path, int]:
    if not Path(HAPROXY).exists():
        raise BenchError(f"haproxy is not installed ({HAPROXY}): apt-get install haproxy")
    port = free_port()
    config.write_text(haproxy_config(port, [int(u.rsplit(":", 1)[1]) for u in urls],
                                     PATIENT_CHECKS))
    return config, port


_COUNT = re.compile(r'^bridgehead_http_request_seconds_count\{method="(\w+)",route="([^"]+)",'
                    r'status="(\d+)"\} ([0-9.e+]+)$', re.MULTILINE)


async def requests_served(url: str, token: str) -> dict[str, int]:
    """Requests this server process answered, by "METHOD route" (its /metrics)."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{url}/metrics",
                                  headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    out: dict[str, int] = {}
    for method, route, _status, count in _COUNT.findall(response.text):
        key = f"{method} {route}"
        out[key] = out.get(key, 0) + int(float(count))
    return out


def run_bench(main: Coroutine[Any, Any, dict[str, Any]], pg_dsn: str) -> dict[str, Any] | None:
    """The results of a bench's ``main``, or None once why it failed is printed (a
    BenchError, or PostgreSQL or the system refusing)."""
    import asyncpg

    try:
        return asyncio.run(main)
    except BenchError as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}")
    except (OSError, asyncpg.PostgresError) as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc!r} (PostgreSQL: {pg_dsn})")
    return None
