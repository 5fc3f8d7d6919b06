"""An agent whose backend does not run Spark fails a Spark job that reached it anyway (a job
stored before its cluster's agent reported, or by a rule) with the reason, never crashing."""

from __future__ import annotations

from pathlib import Path

from bridgehead.agent.loop import Agent
from bridgehead.domain.jobs import JobSpec, JobState, Transition
from bridgehead.domain.spark import SparkApp
from bridgehead.store import JobStore
from tests.integration.test_agent import setup  # noqa: F401 - the fixture


async def test_a_spark_job_on_a_local_agent_fails_with_the_reason(
    setup: tuple[Agent, JobStore], tmp_path: Path  # noqa: F811
) -> None:
    agent, store = setup
    spark = SparkApp(application="/apps/pi.py", executors=2)
    res, _ = await store.submit([JobSpec(cluster="local", spark=spark),
                                 JobSpec(cluster="local", command=("true",))])
    claimed = await store.claim("local", agent.agent_id, limit=2, lease_s=60)
    for job in claimed:
        agent._to_submit[job.id] = job
    await agent._submit_pending()
    await agent._flush_all()
    job = await store.get(res.job.id)
    assert job.state is JobState.FAILED and job.native_id is None
    assert job.reason is not None and job.reason.startswith("spark:")
    assert "the local backend" in job.reason
    assert not (tmp_path / "agent" / "local" / "jobs" / res.job.id).exists()
    other = next(j for j in claimed if j.id != res.job.id)
    assert (await store.get(other.id)).state is JobState.SUBMITTED  # the rest carry on
    await store.transition([Transition(job_id=other.id, state=JobState.CANCELLED)],
                           agent_id=agent.agent_id)
    await agent.backend.cancel([other.id])
