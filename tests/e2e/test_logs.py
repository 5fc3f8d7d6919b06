"""Logs of real server, agent, CLI and SDK processes: quiet at INFO (a line per state change,
none per request), every request at DEBUG, JSON on request, and no secret anywhere: not in
any log at DEBUG, not in the event log, whatever the request (a bad token's too)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bridgehead.domain.jobs import JobState
from tests.procs import Agent, Server, env_for, eventually, make_token

pytestmark = pytest.mark.slow

SDK_AT_DEBUG = """
import logging, sys
from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
with Client() as bh:
    job = bh.submit(JobSpec(cluster="local", command=("true",),
                            env={"API_KEY": sys.argv[1]}))
    print(bh.wait(job.id, until="terminal", timeout=120).state.value)
"""


def _server(dsn: str, home: Path, **env: str) -> Server:
    server = Server(dsn, home)
    server.env.update(env)
    return server.start()


def _cli(home: Path, url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridgehead", *args],
                          env=env_for(home, BRIDGEHEAD_URL=url, BRIDGEHEAD_TOKEN=token),
                          capture_output=True, text=True, timeout=120)


def test_no_secret_in_any_log_or_event_at_debug(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    admin, agent_token = make_token(dsn, "admin"), make_token(dsn, "agent", "local")
    client = make_token(dsn, "client")
    job_secret = f"job-secret-{secrets.token_hex(8)}"
    bad_token = f"not-a-token-{secrets.token_hex(8)}"
    server = _server(dsn, tmp_path, BRIDGEHEAD_LOG_LEVEL="DEBUG")
    agent = Agent(server.url, agent_token, tmp_path, token_file=False,
                  BRIDGEHEAD_LOG_LEVEL="DEBUG").start()  # the token in its environment
    outputs = []
    try:
        for env_arg in (f"PASSWORD={job_secret}", f"TOKEN={agent_token}"):
            done = _cli(tmp_path, server.url, client, "submit", "--wait", "--env", env_arg,
                        "--", "sh", "-c", "exit 0")
            assert done.returncode == 0, done.stderr
            outputs += [done.stdout, done.stderr]
        refused = _cli(tmp_path, server.url, bad_token, "list")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "401" in refused.stderr
        outputs += [refused.stdout, refused.stderr]
        sdk = subprocess.run([sys.executable, "-c", SDK_AT_DEBUG, job_secret],
                             env=env_for(tmp_path, BRIDGEHEAD_URL=server.url,
                                         BRIDGEHEAD_TOKEN=admin),
                             capture_output=True, text=True, timeout=120)
        assert sdk.stdout.strip() == "succeeded", sdk.stderr
        assert "HTTP Request: POST" in sdk.stderr  # its requests are logged, at DEBUG
        outputs += [sdk.stdout, sdk.stderr]
        events = httpx.get(f"{server.url}/v1/events", params={"limit": 1000},
                           headers={"Authorization": f"Bearer {admin}"}).json()
        assert len(events["events"]) >= 6
        outputs.append(json.dumps(events))
    finally:
        agent.kill()
        server.kill()
    outputs += [server.output(), agent.output()]
    assert "/v1/agent/claim" in server.output() and "/v1/agent/report" in agent.output()
    everything = "\n".join(outputs)
    for name, secret in (("admin token", admin), ("agent token", agent_token),
                         ("client token", client), ("bad token", bad_token),
                         ("job env value", job_secret)):
        assert secret not in everything, f"the {name} is in a log or event"


def test_busy_agent_at_info_logs_state_changes_only(tmp_path: Path) -> None:
    """Over 20+ heartbeats and claims of an agent with jobs, its INFO log (JSON, one object a
    line, a state change's with its job_id and state) holds state changes only; the server,
    at DEBUG, shows those requests as DEBUG."""
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    admin, agent_token = make_token(dsn, "admin"), make_token(dsn, "agent", "local")
    server = _server(dsn, tmp_path, BRIDGEHEAD_LOG_LEVEL="DEBUG")
    agent = Agent(server.url, agent_token, tmp_path, poll=0.1,
                  args=("--log-format", "json", "--log-level", "INFO"),
                  BRIDGEHEAD_HEARTBEAT_S="0.1").start()
    try:
        for _ in range(3):
            done = _cli(tmp_path, server.url, admin, "submit", "--wait", "--", "true")
            assert done.returncode == 0, done.stderr
        eventually(lambda: server.output().count("POST /v1/agent/heartbeat") >= 20, 120,
                   what="20 heartbeats")
    finally:
        agent.kill()
        server.kill()
    request_lines = [line for line in server.output().splitlines() if "/v1/agent/" in line]
    assert request_lines and all(" DEBUG " in line for line in request_lines), request_lines[:3]
    records = [json.loads(line) for line in agent.output().splitlines()]
    assert {r["level"] for r in records} == {"info"}, records
    messages = [r["msg"] for r in records]
    assert not [m for m in messages if "HTTP" in m or "/v1/" in m]
    states = [m.split()[2] for m in messages if m.startswith("job ")]
    assert states.count("succeeded") == 3 and states.count("claimed") == 3, messages
    states_or_start = re.compile(r"agent \S+ serving cluster local via |job \S+ (claimed|"
                                 + "|".join(s.value for s in JobState) + ")( |$)")
    assert all(states_or_start.match(m) for m in messages), messages
    changes = [r for r in records if r["msg"].startswith("job ")]
    assert all(r["msg"].split()[1:3] == [r["job_id"], r["state"]] for r in changes), changes
