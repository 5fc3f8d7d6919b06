"""Client-side failover: two real server processes on one PostgreSQL database, an agent, a
CLI ``wait`` and an ``events tail`` follower given both URLs. A replica is SIGKILLed while
the ``wait`` long-polls it and the agent claims from it; all carry on through the other (and
back, when the other dies in its turn): the waited job ends succeeded, jobs submitted after
each kill run, and the follower shows every event of the log once, in order (its cursor
went with it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.procs import Agent, Server, env_for, eventually, make_token

pytestmark = pytest.mark.slow


def _job(url: str, admin: str, job_id: str) -> dict[str, object]:
    r = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {admin}"})
    r.raise_for_status()
    return r.json()


def _wait_cli(home: Path, servers: str, admin: str, job_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridgehead", "--server", servers, "wait", "--json", job_id],
        env=env_for(home, BRIDGEHEAD_TOKEN=admin), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _submit(home: Path, servers: str, admin: str, *command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bridgehead", "--server", servers, "submit",
                           "--json", "--", *command],
                          env=env_for(home, BRIDGEHEAD_TOKEN=admin), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def test_wait_and_agent_carry_on_through_the_other_replica(
        tmp_path: Path, pg_database: str) -> None:
    admin = make_token(pg_database, "admin")
    agent_token = make_token(pg_database, "agent", "local")
    a, b = Server(pg_database, tmp_path).start(), Server(pg_database, tmp_path).start()
    servers = f"{a.url},{b.url}"
    agent = Agent(servers, agent_token, tmp_path, slots=4,
                  BRIDGEHEAD_HEARTBEAT_S="1").start()
    waits: list[subprocess.Popen[str]] = []
    follower_out = tmp_path / "events.jsonl"
    with open(follower_out, "w") as out:  # the event log, followed through both kills
        follower = subprocess.Popen(
            [sys.executable, "-m", "bridgehead", "--server", servers, "events", "tail",
             "--json"], env=env_for(tmp_path, BRIDGEHEAD_TOKEN=admin), stdout=out,
            stderr=subprocess.PIPE, text=True)
    try:
        for dead, alive in ((a, b), (b, a)):
            eventually(lambda alive=alive: _online(alive.url, admin), 60, what="agent online")
            long_job = _submit(tmp_path, servers, admin, "sh", "-c", "sleep 4; exit 0")
            eventually(lambda j=long_job, s=alive: _job(s.url, admin, j)["state"] == "running",
                       60, what="the job running")
            # the wait asks the replica to kill first; the agent is there already (sticky)
            waits.append(_wait_cli(tmp_path, f"{dead.url},{alive.url}", admin, long_job))
            eventually(lambda d=dead: _open_waits(d, admin) >= 2, 30,
                       what="the wait and the agent's claim long-polling the replica to kill")
            dead.kill(signal.SIGKILL)
            after = _submit(tmp_path, servers, admin, "true")  # claimed through the other
            eventually(lambda j=after, s=alive: _job(s.url, admin, j)["state"] == "succeeded",
                       90, what="a job submitted after the kill to run")
            out, err = waits[-1].communicate(timeout=120)
            assert waits[-1].returncode == 0, err
            assert f"now using {alive.url} ({dead.url} failed)" in err  # it moved over
            assert json.loads(out)["jobs"][0]["state"] == "succeeded"
            assert _job(alive.url, admin, long_job)["exit_code"] == 0
            dead.start()  # back on its port, for the next round
        logged = [e["seq"] for e in _events(a.url, admin)]
        eventually(lambda: _seqs(follower_out) == logged, 60,
                   what="the follower to have every event once, in order")
    finally:
        follower.send_signal(signal.SIGINT)
        _, follower_err = follower.communicate(timeout=30)
        for w in waits:
            if w.poll() is None:
                w.kill()
        agent.kill()
        a.kill()
        b.kill()
    assert follower.returncode == 0, follower_err
    assert follower_err.count("now using") == 2, follower_err  # moved at each kill
    assert "now using" in agent.output()  # the agent moved, each time, and said so once
    assert agent.output().count("now using") <= 4


def _events(url: str, admin: str) -> list[dict[str, object]]:
    r = httpx.get(f"{url}/v1/events", params={"limit": 1000},
                  headers={"Authorization": f"Bearer {admin}"})
    r.raise_for_status()
    return list(r.json()["events"])


def _seqs(path: Path) -> list[object]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines() if line]


def _online(url: str, admin: str) -> bool:
    try:
        clusters = httpx.get(f"{url}/v1/clusters",
                             headers={"Authorization": f"Bearer {admin}"}).json()
    except httpx.TransportError:
        return False
    return any(c["name"] == "local" and c["online"] for c in clusters)


def _open_waits(server: Server, admin: str) -> int:
    """Long-polls open in ``server`` now (its metrics)."""
    try:
        text = httpx.get(f"{server.url}/metrics", timeout=5,
                         headers={"Authorization": f"Bearer {admin}"}).text
    except httpx.TransportError:
        return 0
    for line in text.splitlines():
        if line.startswith("bridgehead_waiters "):
            return int(float(line.split()[1]))
    return 0
