"""Two server replicas on one PostgreSQL behind a real load balancer (Debian's haproxy, started
here), with clients that know only the balancer's address: an agent, a CLI ``wait`` and an
``events tail`` follower. Each replica in turn is SIGKILLed while the ``wait`` and the
agent's claim long-poll through the balancer; everything carries on through the other: the
waited job ends succeeded, jobs submitted after each kill run, and the follower shows every
event of the log once, in order (its cursor travels with its request, so a long-poll or the
SSE stream resumes on whichever replica the balancer picks)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.e2e.test_failover import _events, _job, _online, _open_waits, _seqs, _submit
from tests.procs import Agent, Proc, Server, env_for, eventually, free_port, make_token

pytestmark = pytest.mark.slow

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch
frontend bridgehead
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /health
    default-server inter 300ms fall 2 rise 2
{servers}
"""


class Balancer(Proc):
    """haproxy in the foreground on a free loopback port, in front of ``servers``."""

    def __init__(self, home: Path, servers: list[Server]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        lines = "\n".join(f"    server s{i} 127.0.0.1:{s.port} check"
                          for i, s in enumerate(servers))
        config = home / "haproxy.cfg"
        config.write_text(CONFIG.format(port=self.port, servers=lines))
        super().__init__([], home / "haproxy.log", env_for(home))
        self.argv = [HAPROXY, "-db", "-f", str(config)]

    def start(self) -> Balancer:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, start_new_session=True)
        eventually(lambda: _healthy(self.url), 30, what="haproxy forwarding to a replica")
        return self


@pytest.fixture
def balanced(tmp_path: Path, pg_database: str) -> Iterator[tuple[Server, Server, Balancer]]:
    if not Path(HAPROXY).exists():
        if IN_CI:
            raise AssertionError(f"haproxy is not installed ({HAPROXY}): scripts/test "
                                 "installs Debian's haproxy")
        pytest.skip("haproxy is not installed (apt-get install haproxy; scripts/test does)")
    a, b = Server(pg_database, tmp_path).start(), Server(pg_database, tmp_path).start()
    lb = Balancer(tmp_path, [a, b]).start()
    try:
        yield a, b, lb
    finally:
        for proc in (lb, a, b):
            proc.kill()


def test_clients_of_the_balancer_carry_on_when_either_replica_dies(
        tmp_path: Path, pg_database: str, balanced: tuple[Server, Server, Balancer]) -> None:
    a, b, lb = balanced
    admin = make_token(pg_database, "admin")
    agent = Agent(lb.url, make_token(pg_database, "agent", "local"), tmp_path, slots=4,
                  BRIDGEHEAD_HEARTBEAT_S="1").start()
    follower_out = tmp_path / "events.jsonl"
    with open(follower_out, "w") as out:
        follower = subprocess.Popen(
            [sys.executable, "-m", "bridgehead", "--server", lb.url, "events", "tail",
             "--json"], env=env_for(tmp_path, BRIDGEHEAD_TOKEN=admin), stdout=out,
            stderr=subprocess.PIPE, text=True)
    waits: list[subprocess.Popen[str]] = []
    try:
        for dead, alive in ((a, b), (b, a)):
            eventually(lambda: _online(lb.url, admin), 60, what="the agent online")
            long_job = _submit(tmp_path, lb.url, admin, "sh", "-c", "sleep 4; exit 0")
            eventually(lambda j=long_job: _job(lb.url, admin, j)["state"] == "running", 60,
                       what="the job running")
            waits.append(subprocess.Popen(
                [sys.executable, "-m", "bridgehead", "--server", lb.url, "wait", "--json",
                 long_job], env=env_for(tmp_path, BRIDGEHEAD_TOKEN=admin),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            eventually(lambda: _open_waits(a, admin) + _open_waits(b, admin) >= 2, 30,
                       what="the wait and the agent's claim long-polling through haproxy")
            dead.kill(signal.SIGKILL)
            after = _submit(tmp_path, lb.url, admin, "true")
            eventually(lambda j=after: _job(lb.url, admin, j)["state"] == "succeeded", 90,
                       what="a job submitted after the kill to run")
            out, err = waits[-1].communicate(timeout=120)
            assert waits[-1].returncode == 0, err
            assert json.loads(out)["jobs"][0]["state"] == "succeeded"
            assert _job(alive.url, admin, long_job)["exit_code"] == 0
            dead.start()  # back on its port: haproxy's health check takes it back
            eventually(lambda d=dead: _healthy(d.url), 30, what="the replica back")
        logged = [e["seq"] for e in _events(lb.url, admin)]
        eventually(lambda: _seqs(follower_out) == logged, 60,
                   what="the follower to have every event once, in order")
        assert agent.alive and lb.alive  # the agent rode out both deaths
    finally:
        follower.send_signal(signal.SIGINT)
        _, follower_err = follower.communicate(timeout=30)
        for w in waits:
            if w.poll() is None:
                w.kill()
        agent.kill()
    assert follower.returncode == 0, follower_err


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
