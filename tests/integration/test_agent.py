"""The agent's edge paths against a real server app, store and local backend (in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
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
from bridgehead.store import JobStore, create_store


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Agent, JobStore]]:
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    store = create_store(dsn)
    await store.open()
    app = create_app(ServerSettings.load(store=dsn), store)
    _, secret = await store.create_token(name="a", role=Role.AGENT, cluster="local", tenant=None)
    client = AsyncClient("http://bh", secret, transport=httpx.ASGITransport(app=app))
    settings = AgentSettings.load(cluster="local", server="http://bh", token=secret,
                                  state_dir=tmp_path / "agent")
    backend = LocalBackend(LocalBackendSettings(state_dir=tmp_path / "agent" / "local",
                                                slots=2))
    agent = Agent(settings, backend, client, handle_signals=False)
    yield agent, store
    await client.aclose()
    agent.outbox.close()
    await store.close()


async def test_a_lost_answer_to_submitting_does_not_strand_the_job(
    setup: tuple[Agent, JobStore], tmp_path: Path
) -> None:
    agent, store = setup
    [res] = await store.submit([JobSpec(cluster="local", command=("true",))])
    [claimed] = await store.claim("local", agent.agent_id, limit=1, lease_s=60)
    # the agent's first 'submitting' report landed, but its answer never came back
    await store.transition([Transition(job_id=claimed.id, state=JobState.SUBMITTING)],
                           agent_id=agent.agent_id)
    agent._to_submit[claimed.id] = claimed
    await agent._submit_pending()  # the retry is refused by CAS: the agent must carry on
    assert res.job.id in agent.tracked and not agent._to_submit
    await agent._flush_all()
    job = await store.get(res.job.id)
    assert job.state is JobState.SUBMITTED and job.native_id == res.job.id
    assert (tmp_path / "agent" / "local" / "jobs" / res.job.id).is_dir()


async def test_a_lost_answer_after_the_scheduler_took_the_job_adopts_it(
    setup: tuple[Agent, JobStore], caplog: pytest.LogCaptureFixture
) -> None:
    agent, store = setup
    await store.submit([JobSpec(cluster="local", command=("sleep", "5"))])
    [claimed] = await store.claim("local", agent.agent_id, limit=1, lease_s=60)
    await store.transition([Transition(job_id=claimed.id, state=JobState.SUBMITTING)],
                           agent_id=agent.agent_id)
    native = await agent.backend.submit(claimed.id, claimed.spec)  # that try reached it
    agent._to_submit[claimed.id] = claimed
    with caplog.at_level("INFO", logger="bridgehead"):
        await agent._submit_pending()
    assert agent.tracked[claimed.id].native_id == native
    # adopted by its tag, not submitted again (the local backend's submit is idempotent: only
    # the agent's own account tells the two apart)
    assert f"job {claimed.id} found on the scheduler as {native}: adopting it" in caplog.text
    assert "already submitted" not in caplog.text
    await agent.backend.cancel([native])


async def test_a_job_cancelled_before_submission_is_not_submitted(
    setup: tuple[Agent, JobStore], tmp_path: Path
) -> None:
    agent, store = setup
    [res] = await store.submit([JobSpec(cluster="local", command=("true",))])
    [claimed] = await store.claim("local", agent.agent_id, limit=1, lease_s=60)
    await store.request_cancel(res.job.id)
    agent._to_submit[claimed.id] = claimed
    await agent._submit_pending()
    assert not agent._to_submit
    assert res.job.id not in agent.tracked
    assert not (tmp_path / "agent" / "local" / "jobs" / res.job.id).exists()
    assert (await store.get(res.job.id)).state is JobState.CANCELLED


async def test_one_refused_report_is_dropped_and_the_rest_delivered(
    setup: tuple[Agent, JobStore],
) -> None:
    agent, store = setup
    results = await store.submit([JobSpec(cluster="local", command=("true",))] * 3)
    ids = [r.job.id for r in results]
    await store.claim("local", agent.agent_id, limit=3, lease_s=60)
    good = [Transition(job_id=i, state=JobState.SUBMITTING) for i in ids]
    poison = replace(good[1], reason="x" * 10_000)  # over the API's limit: a 422
    agent.outbox.put(transitions=[good[0], poison, good[2]])
    await agent._flush_all()
    assert len(agent.outbox) == 0
    states = [(await store.get(i)).state for i in ids]
    assert states == [JobState.SUBMITTING, JobState.CLAIMED, JobState.SUBMITTING]
