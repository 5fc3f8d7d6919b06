"""A job bigger than its cluster can ever run is refused at submit (HTTP 400 naming both
numbers), from the capacity the cluster's agent reports in its heartbeat; nothing is stored.
A cluster that reports none (Slurm: sbatch decides) is not checked. Real stores."""

from __future__ import annotations

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.server.app import create_app
from bridgehead.store import JobFilter
from tests.integration.test_api import Api, api  # noqa: F401 - the fixture


@pytest.fixture
def bh(api: Api) -> Api:  # noqa: F811 - the fixture imported above
    return api


CAPACITY = {"capacity": {"cores": 2, "nodes": 1, "source": "2 slots on one node"}}


async def heartbeat(bh: Api, info: dict[str, object]) -> None:
    r = await bh.http.post("/v1/agent/heartbeat", headers=bh.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "backend": "local", "info": info})
    assert r.status_code == 200, r.text


def job(cores: int, **resources: int) -> dict[str, object]:
    return {"cluster": "c1", "command": ["true"], "resources": {"cores": cores, **resources}}


async def test_a_job_that_can_never_fit_is_refused(bh: Api) -> None:
    await heartbeat(bh, CAPACITY)
    r = await bh.http.post("/v1/jobs", headers=bh.client, json=job(3))
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "asks for 3 cores" in detail and "at most 2 cores" in detail
    assert "2 slots on one node" in detail and "'c1'" in detail
    r = await bh.http.post("/v1/jobs/batch", headers=bh.client,
                            json={"jobs": [job(1), job(2, nodes=2)]})
    assert r.status_code == 400 and "asks for 2 nodes" in r.json()["detail"]
    jobs = await bh.store.list_jobs(JobFilter())
    assert jobs == []  # all or nothing
    for fits in (job(2), job(8, max_cores=2)):
        assert (await bh.http.post("/v1/jobs", headers=bh.client, json=fits)).status_code \
            == 201


async def test_clusters_without_a_reported_capacity_are_not_checked(bh: Api) -> None:
    await heartbeat(bh, {"capacity": {"cores": "many"}, "free_slots": 0})
    r = await bh.http.post("/v1/jobs", headers=bh.client, json=job(64))
    assert r.status_code == 201, r.text
    r = await bh.http.post("/v1/jobs", headers=bh.client,
                            json={**job(64), "cluster": "never-seen"})
    assert r.status_code == 201, r.text


async def test_another_replica_reads_the_capacity_from_the_store(bh: Api) -> None:
    await heartbeat(bh, CAPACITY)
    other = create_app(ServerSettings.load(store="sqlite:///unused.db"), bh.store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other),
                                 base_url="http://bh2") as http:
        r = await http.post("/v1/jobs", headers=bh.client, json=job(5))
    assert r.status_code == 400 and "at most 2 cores" in r.json()["detail"]
