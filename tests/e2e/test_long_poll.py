"""Against real server processes: long-polls, server-sent events, graceful agent stop."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest

from bridgehead.cli.tokens import create_in_store
from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from tests.procs import eventually, stack

pytestmark = pytest.mark.slow


def test_an_abandoned_claim_long_poll_claims_nothing(tmp_path: Path) -> None:
    with stack(tmp_path, agent=False) as s:
        asyncio.run(abandon_then_submit(s.server.url, s.admin, s.agent_token))


async def abandon_then_submit(url: str, admin: str, agent: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        gone = asyncio.create_task(http.post(
            "/v1/agent/claim", headers={"Authorization": f"Bearer {agent}"},
            json={"cluster": "local", "agent_id": "gone", "max_jobs": 5, "wait_s": 20}))
        await asyncio.sleep(0.5)
        gone.cancel()  # the agent stops; its connection closes
        await asyncio.sleep(0.5)
        r = await http.post("/v1/jobs", headers={"Authorization": f"Bearer {admin}"},
                            json={"cluster": "local", "command": ["true"]})
        job_id = r.json()["job"]["id"]
        await asyncio.sleep(1.0)  # time for a parked handler to (wrongly) claim it
        job = (await http.get(f"/v1/jobs/{job_id}",
                              headers={"Authorization": f"Bearer {admin}"})).json()
        assert job["state"] == "queued", job
        r = await http.post("/v1/agent/claim", headers={"Authorization": f"Bearer {agent}"},
                            json={"cluster": "local", "agent_id": "next", "max_jobs": 5})
        assert [j["id"] for j in r.json()["jobs"]] == [job_id]


def test_events_stream_as_server_sent_events_from_a_cursor(tmp_path: Path) -> None:
    with stack(tmp_path, agent=False) as s:
        headers = {"Authorization": f"Bearer {s.admin}"}
        with httpx.Client(base_url=s.server.url, headers=headers, timeout=10) as http:
            first = http.post("/v1/jobs", json={"cluster": "local", "command": ["true"]})
            second = http.post("/v1/jobs", json={"cluster": "local", "command": ["true"]})
            cursor = http.get("/v1/events").json()["events"][0]["seq"]
            with http.stream("GET", "/v1/events/stream", params={"after": cursor}) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                frames = []
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        frames.append(json.loads(line[6:]))
                    if len(frames) == 2:
                        break
                    if len(frames) == 1 and line.startswith("data: "):  # then a live one
                        http.post(f"/v1/jobs/{second.json()['job']['id']}/cancel")
        assert frames[0]["subject"] == f"jobs/{second.json()['job']['id']}"
        assert frames[0]["type"] == "bridgehead.job.queued" and frames[0]["seq"] > cursor
        assert frames[1]["data"]["state"] == "cancelled"  # pushed as it happened
        assert first.json()["job"]["id"] not in {f["data"]["job_id"] for f in frames}


def test_agent_stops_gracefully_on_sigterm_and_its_job_survives(tmp_path: Path) -> None:
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        [agent] = s.agents
        job = bh.submit(JobSpec(cluster="local", command=("sleep", "2")))
        eventually(lambda: bh.get(job.id).state is JobState.RUNNING, 30, what="running")
        assert agent.kill(signal.SIGTERM) == 0  # a clean exit
        assert "Traceback" not in agent.output()
        s.start_agent()
        done = bh.wait(job.id, until="terminal", timeout=30)
    assert done.state is JobState.SUCCEEDED and done.attempt == 1


def test_the_event_stream_is_scoped_by_tenant(tmp_path: Path) -> None:
    """SSE as a browser reads it, from a real server: tenant B's stream shows B's events and
    none of tenant A's, though A's came first."""
    with stack(tmp_path, agent=False) as s:
        tokens = {t: asyncio.run(create_in_store(s.dsn, t, "client", None, t))["token"]
                  for t in ("tenA", "tenB")}
        for tenant in ("tenA", "tenB"):
            httpx.post(f"{s.server.url}/v1/events", timeout=10,
                       headers={"Authorization": f"Bearer {tokens[tenant]}"},
                       json={"type": "demo.ping", "subject": tenant}).raise_for_status()
        seen = []
        with httpx.stream("GET", f"{s.server.url}/v1/events/stream", timeout=30,
                          headers={"Authorization": f"Bearer {tokens['tenB']}"}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    break
    assert [(e["subject"], e["tenant"]) for e in seen] == [("tenB", "tenB")]
