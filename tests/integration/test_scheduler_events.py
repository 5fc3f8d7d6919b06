"""Scheduler job events (``bridgehead slurm-event --server``): an agent token of cluster C
posts ``slurm.job.*`` events of source ``slurm/C``; the server logs them and answers C's
agents' claim long-poll at once with ``poll``, on any replica. Only C's agent token (or an
admin's) may post as C's scheduler, and an agent token posts nothing else. Real stores."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.server.app import create_app
from bridgehead.store import create_store
from tests.integration.test_api import Api, api, bearer  # noqa: F401 - the fixture

EVENT = {"type": "slurm.job.finished", "source": "slurm/c1", "subject": "1234",
         "id": "c1:1234:finished:1700000000", "data": {"job_id": "1234", "exit_code": 0}}


def claim_body(wait_s: float) -> dict[str, object]:
    return {"cluster": "c1", "agent_id": "a1", "max_jobs": 10, "wait_s": wait_s}


async def test_a_scheduler_event_answers_the_agents_long_poll_at_once(api: Api) -> None:  # noqa: F811
    claim = asyncio.create_task(api.http.post("/v1/agent/claim", headers=api.agent_c1,
                                              json=claim_body(30)))
    await asyncio.sleep(0.3)  # the claim is waiting
    assert not claim.done()
    start = time.monotonic()
    posted = await api.http.post("/v1/events", headers=api.agent_c1, json=EVENT)
    assert posted.status_code == 201, posted.text
    answer = await asyncio.wait_for(claim, 10)
    assert time.monotonic() - start < 10  # not the 30 s wait
    assert answer.status_code == 200
    assert {k: v for k, v in answer.json().items() if k != "at"} == {
        "jobs": [], "cancel": [], "poll": True}
    again = await api.http.post("/v1/events", headers=api.agent_c1, json=EVENT)
    assert again.status_code == 200  # a retried hook call is logged once
    logged = (await api.http.get("/v1/events", headers=api.admin)).json()["events"]
    assert [(e["type"], e["source"], e.get("tenant", "")) for e in logged] == [
        ("slurm.job.finished", "slurm/c1", "")]
    metrics = (await api.http.get("/metrics", headers=api.admin)).text
    assert 'bridgehead_scheduler_events_total{cluster="c1"} 2.0' in metrics
    assert 'bridgehead_agent_poll_hints_total{cluster="c1"} 1.0' in metrics


async def test_an_idle_claim_has_no_poll_hint_and_other_clusters_are_not_woken(
        api: Api) -> None:  # noqa: F811
    other = asyncio.create_task(api.http.post(
        "/v1/agent/claim", headers=api.agent_c2,
        json={"cluster": "c2", "agent_id": "a2", "max_jobs": 10, "wait_s": 1.5}))
    await asyncio.sleep(0.2)
    assert (await api.http.post("/v1/events", headers=api.agent_c1,
                                json=EVENT)).status_code == 201
    answer = await asyncio.wait_for(other, 10)
    assert answer.json()["poll"] is False  # answered at its deadline, not by c1's event
    r = await api.http.post("/v1/agent/claim", headers=api.agent_c1, json=claim_body(0))
    assert r.json()["poll"] is False  # the event came before this claim: nothing pending


async def test_an_event_between_two_claims_is_not_lost(api: Api) -> None:  # noqa: F811
    first = (await api.http.post("/v1/agent/claim", headers=api.agent_c1,
                                 json=claim_body(0))).json()
    assert first["poll"] is False and first["at"] > 0
    assert (await api.http.post("/v1/events", headers=api.agent_c1,
                                json=EVENT)).status_code == 201  # nobody was waiting
    start = time.monotonic()
    second = (await api.http.post("/v1/agent/claim", headers=api.agent_c1, json={
        **claim_body(30), "poll_since": first["at"]})).json()
    assert second["poll"] is True and time.monotonic() - start < 10  # at once
    third = await asyncio.wait_for(api.http.post("/v1/agent/claim", headers=api.agent_c1, json={
        **claim_body(0.5), "poll_since": second["at"]}), 10)
    assert third.json()["poll"] is False  # that event was told already


@pytest.mark.parametrize("who, body, status, words", [
    ("agent_c2", EVENT, 403, "agent token of that cluster"),
    ("client", EVENT, 403, "agent token of that cluster"),
    ("agent_c1", {**EVENT, "source": "watch/host"}, 403, "only its cluster's scheduler"),
    ("agent_c1", {**EVENT, "tenant": "tenA"}, 403, "tenant"),
    ("agent_c1", {**EVENT, "type": "bridgehead.job.finished"}, 400, "bridgehead"),
    ("admin", {**EVENT, "source": "slurm/../x y"}, 403, "agent token of that cluster"),
])
async def test_only_the_clusters_agent_posts_as_its_scheduler(
        api: Api, who: str, body: dict, status: int, words: str) -> None:  # noqa: F811
    r = await api.http.post("/v1/events", headers=getattr(api, who), json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert (await api.http.get("/v1/events", headers=api.admin)).json()["events"] == []


async def test_an_admin_may_post_as_a_scheduler(api: Api) -> None:  # noqa: F811
    r = await api.http.post("/v1/events", headers=api.admin, json=EVENT)
    assert r.status_code == 201, r.text


async def test_the_event_wakes_an_agent_waiting_on_another_replica(pg_database: str) -> None:
    """Two servers on one PostgreSQL: the hook posts to one, the agent waits on the other."""
    stores = [create_store(pg_database) for _ in range(2)]
    for store in stores:
        await store.open()
    _, secret = await stores[0].create_token(name="a", role=Role.AGENT, cluster="c1",
                                             tenant=None)
    settings = ServerSettings.load(store=pg_database)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app(
                settings, stores[0])), base_url="http://one") as one, httpx.AsyncClient(
                transport=httpx.ASGITransport(create_app(settings, stores[1])),
                base_url="http://two") as two:
            claim = asyncio.create_task(two.post("/v1/agent/claim", headers=bearer(secret),
                                                 json=claim_body(30)))
            await asyncio.sleep(0.5)
            assert (await one.post("/v1/events", headers=bearer(secret),
                                   json=EVENT)).status_code == 201
            answer = await asyncio.wait_for(claim, 10)
            assert answer.json()["poll"] is True
    finally:
        for store in stores:
            await store.close()
