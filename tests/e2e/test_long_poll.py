"""Long-polls against a real server process: an abandoned claim must not take jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.procs import Server, make_token

pytestmark = pytest.mark.slow


def test_an_abandoned_claim_long_poll_claims_nothing(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    admin, agent = make_token(dsn, "admin"), make_token(dsn, "agent", "local")
    server = Server(dsn, tmp_path).start()
    try:
        asyncio.run(abandon_then_submit(server.url, admin, agent))
    finally:
        server.kill()


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
