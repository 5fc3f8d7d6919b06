"""Real server and agent processes for end-to-end tests (started with the real CLI)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridgehead.cli.tokens import create_in_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def make_token(dsn: str, role: str, cluster: str | None = None) -> str:
    out = asyncio.run(create_in_store(dsn, f"test-{role}", role, cluster, None))
    return out["token"]


class Proc:
    """A CLI process with its output in a log file; stopped (SIGKILL) at the end."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.args, self.log, self.env = args, log, env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "bridgehead", *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.popen.wait(15)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
    env.update({"BRIDGEHEAD_HOME": str(home), "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def start_up(home: Path, slots: int) -> Proc:
    """``bridgehead up`` (server on SQLite + local agent) with its client config written."""
    port = free_port()
    proc = Proc(["up", "--port", str(port), "--slots", str(slots)], home / "up.log",
                env_for(home)).start()

    def healthy() -> bool:
        assert proc.alive, proc.output()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    eventually(healthy, 30, what="bridgehead up")
    eventually(lambda: (home / "client.toml").exists(), 10, what="client.toml")
    return proc


class Server(Proc):
    def __init__(self, dsn: str, home: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["server", "--store", dsn, "--port", str(self.port)],
                         home / f"server-{self.port}.log", env_for(home))

    def start(self) -> Server:
        super().start()

        def healthy() -> bool:
            if not self.alive:
                raise AssertionError(f"server exited:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(healthy, timeout=30, what="server health")
        return self


class Agent(Proc):
    """``bridgehead agent`` with its token in a mode-600 file (``token_file=False``: in
    BRIDGEHEAD_TOKEN, the compatible way)."""

    def __init__(self, url: str, token: str, home: Path, *, cluster: str = "local",
                 slots: int = 4, poll: float = 0.2, args: tuple[str, ...] = (),
                 token_file: bool = True, **env: str) -> None:
        state = home / f"agent-{cluster}"
        self.token_file = home / f"agent-{cluster}.token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        how = ["--token-file", str(self.token_file)] if token_file else []
        if not token_file:
            env["BRIDGEHEAD_TOKEN"] = token
        super().__init__(
            ["agent", "--cluster", cluster, "--server", url, *how,
             "--state-dir", str(state), "--slots", str(slots), "--poll-interval", str(poll),
             *args],
            home / f"agent-{cluster}.log", env_for(home, **env))
        self.state_dir = state


@dataclass
class Stack:
    """A server (and optionally an agent of cluster ``local``) with their tokens."""

    dsn: str
    home: Path
    server: Server
    admin: str
    agent_token: str
    agents: list[Agent] = field(default_factory=list)

    def start_agent(self, **kw: Any) -> Agent:
        cluster = kw.get("cluster", "local")
        token = self.agent_token if cluster == "local" else make_token(self.dsn, "agent", cluster)
        agent = Agent(self.server.url, token, self.home, **kw).start()
        self.agents.append(agent)
        return agent


@contextmanager
def stack(home: Path, dsn: str | None = None, *, agent: bool = True,
          **agent_kw: Any) -> Iterator[Stack]:
    """Start a server on ``dsn`` (default: SQLite under ``home``), tokens, and an agent; kill
    them all at the end, whatever happened."""
    dsn = dsn or f"sqlite:///{home / 'bh.db'}"
    admin, agent_token = make_token(dsn, "admin"), make_token(dsn, "agent", "local")
    running = Stack(dsn=dsn, home=home, server=Server(dsn, home).start(), admin=admin,
                    agent_token=agent_token)
    try:
        if agent:
            running.start_agent(**agent_kw)
        yield running
    finally:
        for a in running.agents:
            a.kill()
        running.server.kill()


def bh(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The ``bridgehead`` CLI as a user of ``home`` runs it (its client config, its server)."""
    return subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args],
                          env=env_for(home), capture_output=True, text=True, timeout=timeout)


def bh_in(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``bridgehead`` run from the directory ``cwd`` (relative paths are the user's)."""
    return subprocess.run([sys.executable, "-m", "bridgehead", *args], env=env_for(home),
                          cwd=cwd, capture_output=True, text=True, timeout=120)
