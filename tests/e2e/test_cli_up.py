"""The CLI as a user meets it: `bridgehead up`, then commands in another shell."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import Proc, env_for, eventually, free_port

pytestmark = pytest.mark.slow


def bh(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args],
                          env=env_for(home), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc]]:
    home = tmp_path_factory.mktemp("up")
    port = free_port()
    proc = Proc(["up", "--port", str(port), "--slots", "4"], home / "up.log",
                env_for(home)).start()

    def healthy() -> bool:
        assert proc.alive, proc.output()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    eventually(healthy, 30, what="bridgehead up")
    eventually(lambda: (home / "client.toml").exists(), 10, what="client.toml")
    yield home, proc
    proc.kill()


def test_submit_wait_status_logs_and_list(up: tuple[Path, Proc]) -> None:
    home, _ = up
    run = bh(home, "submit", "--wait", "--json", "--label", "run=r1", "--",
             "/bin/echo", "hello from $(bridgehead)")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert job["state"] == "succeeded" and job["exit_code"] == 0
    logs = bh(home, "logs", job["id"])
    assert logs.stdout == "hello from $(bridgehead)\n"
    status = json.loads(bh(home, "status", job["id"], "--json").stdout)
    assert status["id"] == job["id"] and status["spec"]["labels"] == {"run": "r1"}
    listed = json.loads(bh(home, "list", "--label", "run=r1", "--json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    failing = bh(home, "submit", "--wait", "--", sys.executable, "-c", "raise SystemExit(4)")
    assert failing.returncode == 1  # the job failed: so does the command


def test_clusters_show_the_local_agent_online(up: tuple[Path, Proc]) -> None:
    home, _ = up
    clusters = eventually(lambda: json.loads(bh(home, "clusters", "--json").stdout), 15,
                          what="a cluster")
    [local] = clusters
    assert local["name"] == "local" and local["online"] and local["backend"] == "local"


def test_cancel_and_wait_exit_codes(up: tuple[Path, Proc]) -> None:
    home, _ = up
    job = json.loads(bh(home, "submit", "--json", "--", "sleep", "60").stdout)
    eventually(lambda: json.loads(bh(home, "status", job["id"], "--json").stdout)["state"]
               == "running", 30, what="the job to run")
    assert bh(home, "cancel", job["id"]).returncode == 0
    waited = bh(home, "wait", job["id"], "--json", "--timeout", "30")
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["jobs"][0]["state"] == "cancelled"
    assert bh(home, "status", "no-such-job").returncode == 2


def test_up_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = Proc(["up", "--port", str(port)], tmp_path / "up.log", env_for(tmp_path)).start()
    eventually(lambda: (tmp_path / "client.toml").exists(), 30, what="bridgehead up")
    eventually(lambda: "Bridgehead is up" in proc.output(), 30, what="the ready line")
    assert proc.kill(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Traceback" not in proc.output()
