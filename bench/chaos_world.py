"""The processes of a chaos run: its own PostgreSQL (which may be crashed), two server
replicas behind haproxy, one agent per cluster (``local``, and the Slurm lab's alpha and beta
when it is up), and how to start and stop them all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from chaos_checks import SLURM_AGENTS
from common import HAPROXY, BenchError, free_port, haproxy_config, make_tokens, spawn, stop, tail

from bridgehead.client import AsyncClient

ROOT = Path(__file__).resolve().parents[1]
HAVE_HAPROXY = Path(HAPROXY).exists()
LAB = ROOT / "scripts" / "slurm-lab"
LAB_DIR = Path(os.environ.get("SLURM_LAB_DIR", "/tmp/bh-slurm-lab"))


@dataclass
class Proc:
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.popen = spawn(self.argv, self.env, self.log)
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)
            self.popen.wait(15)


class Postgres:
    """A PostgreSQL of the run's own (trust auth, loopback, fsync off), which may be crashed."""

    def __init__(self, binaries: Path) -> None:
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="bh-chaos-pg-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self.owner is not None:
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self._run("initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self.owner is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise BenchError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-w", "-l",
                  str(self.root / "log"), "-o", f"-p {self.port} -k {self.root} "
                  "-c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")

    def crash(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")

    def remove(self) -> None:
        with contextlib.suppress(BenchError):
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def own_postgres() -> Postgres | None:
    """The run's own PostgreSQL, started; None without the binaries (or a postgres user)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if not found or (os.geteuid() == 0 and not _has_user("postgres")):
        return None
    pg = Postgres(found[-1].parent)
    pg.start()
    return pg


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class World:
    """The processes of one run and how to reach them."""

    work: Path
    dsn: str
    admin: str
    agent_tokens: dict[str, str]
    replicas: list[Proc]
    ports: list[int]
    agents: dict[str, Proc]
    """By cluster: ``local``, and ``alpha`` (slurm_cli) and ``beta`` (slurm_rest) of the Slurm
    lab when it is up."""
    balancer: Proc | None
    url: str
    ledger: Path
    postgres: Postgres | None = None
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)
    partitioned: list[str] = field(default_factory=list)
    """Jobs running when a long partition began."""
    long_partitions: list[float] = field(default_factory=list)


def server_proc(work: Path, dsn: str, port: int, lease_s: float | None = None) -> Proc:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
    env.update({"BRIDGEHEAD_STORE": dsn, "BRIDGEHEAD_HOME": str(work / "home")})
    if lease_s is not None:
        env["BRIDGEHEAD_LEASE_S"] = str(lease_s)
    return Proc([sys.executable, "-m", "bridgehead.cli.main", "server", "--port", str(port)],
                env, work / f"server-{port}.log")


def agent_proc(work: Path, url: str, cluster: str, token: str,
               lab: dict[str, Any] | None) -> Proc:
    token_file = work / f"agent-{cluster}.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
    env.update({"BRIDGEHEAD_HOME": str(work / "home"), "BRIDGEHEAD_HEARTBEAT_S": "1"})
    backend = ["--slots", "8"]
    if cluster in SLURM_AGENTS:
        assert lab is not None
        info = lab["clusters"][cluster]
        env.update({"BRIDGEHEAD_SLURM__CONF": info["slurm_conf"],
                    "BRIDGEHEAD_SLURM__REST_URL": info["rest_url"],
                    "BRIDGEHEAD_SLURM__JOB_ROOT": str(work / "slurm-jobs")})
        backend = ["--backend", SLURM_AGENTS[cluster]]
    return Proc([sys.executable, "-m", "bridgehead.cli.main", "agent", "--cluster", cluster,
                 "--server", url, "--token-file", str(token_file), *backend,
                 "--state-dir", str(work / f"agent-{cluster}"), "--poll-interval", "0.5"],
                env, work / f"agent-{cluster}.log")


def slurm_lab() -> dict[str, Any] | None:
    """The Slurm lab's lab.json when ``scripts/slurm-lab status`` says it is up."""
    if subprocess.run(["bash", str(LAB), "status"], capture_output=True).returncode != 0:
        return None
    data: dict[str, Any] = json.loads((LAB_DIR / "lab.json").read_text())
    return data


def balancer_proc(work: Path, ports: list[int]) -> tuple[Proc, str]:
    port = free_port()
    config = work / "haproxy.cfg"
    config.write_text(haproxy_config(port, ports))
    return Proc([HAPROXY, "-db", "-f", str(config)], dict(os.environ),
                work / "haproxy.log"), f"http://127.0.0.1:{port}"


async def healthy(url: str, timeout: float = 120) -> None:
    """Wait for ``url`` to answer /health 200 (generous: a replica starting on a busy 2-CPU
    machine may take tens of seconds)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise BenchError(f"{url} is not healthy after {timeout} s")


async def start_world(work: Path, dsn: str, lab: dict[str, Any] | None,
                      lease_s: float | None = None) -> World:
    """Replicas, haproxy and agents up and the agents online; whatever was started is
    stopped again if any of it fails."""
    clusters = ["local", *(SLURM_AGENTS if lab else ())]
    tokens = await make_tokens(dsn, clusters)
    ports = [free_port(), free_port()]
    world = World(work=work, dsn=dsn, admin=tokens.admin, agent_tokens=tokens.agents,
                  replicas=[server_proc(work, dsn, p, lease_s).start() for p in ports],
                  ports=ports, agents={}, balancer=None, url="", ledger=work / "ledger.txt")
    try:
        for p in ports:
            await healthy(f"http://127.0.0.1:{p}")
        if HAVE_HAPROXY:
            world.balancer, world.url = balancer_proc(work, ports)
            world.balancer.start()
            await healthy(world.url)
        else:
            world.url = ",".join(f"http://127.0.0.1:{p}" for p in ports)
        (work / "slurm-jobs").mkdir()
        world.agents = {c: agent_proc(work, world.url, c, tokens.agents[c], lab).start()
                        for c in clusters}
        await _online(world)
    except BaseException:
        stop_world(world)
        raise
    return world


async def _online(world: World) -> None:
    async with AsyncClient(world.url, world.admin) as bh:
        deadline = time.monotonic() + 120
        for cluster, agent in world.agents.items():
            while not any(c["name"] == cluster and c["online"] for c in await bh.clusters()):
                if time.monotonic() > deadline or not agent.alive:
                    raise BenchError(f"agent {cluster} did not come online:\n"
                                     f"{tail(agent.log)}")
                await asyncio.sleep(0.2)


def stop_world(world: World) -> None:
    for proc in [*world.agents.values(), *world.replicas,
                 *([world.balancer] if world.balancer else [])]:
        if proc.popen is not None:
            if proc.popen.poll() is None and proc is world.balancer:
                proc.popen.send_signal(signal.SIGCONT)
            stop(proc.popen)
