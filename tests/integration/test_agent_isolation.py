"""An agent token writes logs only for the jobs its agent holds, on a real store (SQLite and
PostgreSQL), and a real agent whose outbox holds a chunk of a job taken from it drops that
chunk and ships the rest."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bridgehead.agent.loop import Agent
from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.client import AsyncClient
from bridgehead.config import AgentSettings, ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.domain.jobs import JobSpec, JobState, Transition
from bridgehead.server.app import create_app
from bridgehead.store import JobStore, LogChunk, create_store


@dataclass
class Api:
    http: httpx.AsyncClient
    store: JobStore
    secrets: dict[str, str]
    transport: httpx.ASGITransport

    async def report_log(self, token: str, cluster: str, agent_id: str, job_id: str,
                         data: bytes = b"x\n", pos: int = 0) -> httpx.Response:
        chunk = {"job_id": job_id, "stream": "stdout", "pos": pos,
                 "data": base64.b64encode(data).decode()}
        return await self.http.post(
            "/v1/agent/report", headers={"Authorization": f"Bearer {self.secrets[token]}"},
            json={"cluster": cluster, "agent_id": agent_id, "logs": [chunk]})


@pytest.fixture
async def api(store_dsn: str) -> AsyncIterator[Api]:
    store = create_store(store_dsn)
    await store.open()
    app = create_app(ServerSettings.load(store=store_dsn), store)
    secrets = {}
    for cluster in ("c1", "c2", "local"):
        _, secrets[cluster] = await store.create_token(name=cluster, role=Role.AGENT,
                                                       cluster=cluster, tenant=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bh") as http:
        yield Api(http=http, store=store, secrets=secrets, transport=transport)
    await store.close()


async def held_by(store: JobStore, agent_id: str, cluster: str = "c1") -> str:
    [sub] = await store.submit([JobSpec(cluster=cluster, command=("true",))])
    [job] = await store.claim(cluster, agent_id, limit=1, lease_s=60)
    assert job.id == sub.job.id
    return job.id


async def test_logs_of_a_job_held_by_another_agent_are_refused_naming_it(api: Api) -> None:
    job_id = await held_by(api.store, "a1")
    r = await api.report_log("c1", "c1", "a2", job_id, b"forged\n")
    assert r.status_code == 403, r.text
    assert job_id in r.json()["detail"] and "a2" in r.json()["detail"]
    queued = (await api.store.submit([JobSpec(cluster="c1", command=("true",))]))[0].job.id
    r = await api.report_log("c1", "c1", "a1", queued)  # held by nobody
    assert r.status_code == 403 and queued in r.json()["detail"]
    assert await api.store.read_logs(job_id, "stdout", 0, 100) == b""
    assert await api.store.read_logs(queued, "stdout", 0, 100) == b""


async def test_an_agent_id_is_no_key_to_another_clusters_jobs(api: Api) -> None:
    job_id = await held_by(api.store, "a1", "c1")
    for cluster in ("c2", "c1"):  # c2's token naming c2, or naming c1 outright
        r = await api.report_log("c2", cluster, "a1", job_id, b"forged\n")
        assert r.status_code == 403, r.text
    assert await api.store.read_logs(job_id, "stdout", 0, 100) == b""


async def test_the_holder_writes_logs_also_after_the_end_and_after_adopting(api: Api) -> None:
    job_id = await held_by(api.store, "a1")
    assert (await api.report_log("c1", "c1", "a1", job_id, b"one\n")).status_code == 200
    await api.store.transition([Transition(job_id=job_id, state=JobState.SUBMITTING)],
                               agent_id="a1")
    await api.store.transition([Transition(job_id=job_id, state=JobState.SUBMITTED,
                                           native_id="n1")], agent_id="a1")
    # the agent restarted with the same id and adopted the job
    assert [j.id for j in await api.store.adopt("c1", "a1", lease_s=60)] == [job_id]
    assert (await api.report_log("c1", "c1", "a1", job_id, b"two\n", 4)).status_code == 200
    await api.store.transition([Transition(job_id=job_id, state=JobState.SUCCEEDED,
                                           exit_code=0)], agent_id="a1")
    assert (await api.report_log("c1", "c1", "a1", job_id, b"end\n", 8)).status_code == 200
    assert await api.store.read_logs(job_id, "stdout", 0, 100) == b"one\ntwo\nend\n"


async def test_an_agent_drops_the_chunks_of_a_job_taken_from_it_and_ships_the_rest(
    api: Api, tmp_path: Path
) -> None:
    state = tmp_path / "agent"
    agent = Agent(AgentSettings.load(cluster="local", server="http://bh", state_dir=state),
                  LocalBackend(LocalBackendSettings(state_dir=state / "local")),
                  AsyncClient("http://bh", api.secrets["local"], transport=api.transport),
                  handle_signals=False)
    try:
        mine = await held_by(api.store, agent.agent_id, "local")
        taken = await held_by(api.store, "another-agent", "local")
        agent.outbox.put(logs=[LogChunk(job_id=mine, stream="stdout", pos=0, data=b"a\n"),
                               LogChunk(job_id=taken, stream="stdout", pos=0, data=b"x\n"),
                               LogChunk(job_id=mine, stream="stdout", pos=2, data=b"b\n")])
        await agent._flush_all()
        assert len(agent.outbox) == 0
        assert await api.store.read_logs(mine, "stdout", 0, 100) == b"a\nb\n"
        assert await api.store.read_logs(taken, "stdout", 0, 100) == b""
        assert state.stat().st_mode & 0o777 == 0o700
    finally:
        await agent.client.aclose()
        agent.outbox.close()
