"""The event log is scoped by tenant exactly as jobs are: a client token of one tenant reads
its tenant's job, workflow and external events only (GET /v1/events and the SSE stream), posts
only as its tenant, and cannot pre-empt another tenant's event ids (dedupe is per tenant).
Admins and clients of every tenant read everything. Real stores."""

from __future__ import annotations

import pytest

from bridgehead.domain.clusters import Role
from tests.integration.test_api import Api, api, bearer  # noqa: F401 - the fixture

FLOW = "name: f\ndefaults: {cluster: c1}\nsteps:\n  - id: a\n    command: [x]\n"


@pytest.fixture
async def bh(api: Api) -> Api:  # noqa: F811 - the fixture imported above
    for tenant in ("tenA", "tenB"):
        _, secret = await api.store.create_token(name=tenant, role=Role.CLIENT, cluster=None,
                                                 tenant=tenant)
        setattr(api, tenant, bearer(secret))
    return api


async def events(bh: Api, who: dict[str, str]) -> list[dict]:
    r = await bh.http.get("/v1/events", headers=who, params={"limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["events"]


async def test_each_tenant_reads_its_own_events(bh: Api) -> None:
    a, b = bh.tenA, bh.tenB  # type: ignore[attr-defined]
    for who, tenant in ((a, "tenA"), (b, "tenB")):
        r = await bh.http.post("/v1/jobs", headers=who, json={
            "cluster": "c1", "tenant": tenant, "command": ["x"], "name": f"secret-{tenant}",
            "labels": {"owner": tenant}})
        assert r.status_code == 201, r.text
    r = await bh.http.post("/v1/workflows/runs", headers=a,
                           json={"spec": FLOW, "tenant": "tenA", "params": {}})
    assert r.status_code == 201, r.text
    assert (await bh.http.post("/v1/events", headers=b, json={
        "type": "file.created", "subject": "b.csv", "data": {"path": "/b"}})).status_code == 201
    seen_a, seen_b = await events(bh, a), await events(bh, b)
    assert seen_a and all(e["tenant"] == "tenA" for e in seen_a)
    assert seen_b and all(e["tenant"] == "tenB" for e in seen_b)
    assert "secret-tenB" not in str(seen_a) and "secret-tenA" not in str(seen_b)
    assert any(e["type"].startswith("bridgehead.workflow.") for e in seen_a)
    assert not any(e["type"].startswith("bridgehead.workflow.") for e in seen_b)
    everything = await events(bh, bh.admin)
    assert len(everything) == len(seen_a) + len(seen_b)
    assert await events(bh, bh.client) == everything  # a client of every tenant


async def test_event_ids_are_deduped_per_tenant_and_tenants_cannot_pose(bh: Api) -> None:
    a, b = [bearer((await bh.store.create_token(  # each tenant's watcher, one source
        name="watch/host", role=Role.CLIENT, cluster=None, tenant=t))[1]) for t in ("tenA", "tenB")]
    event = {"type": "file.created", "subject": "x", "source": "watch/host", "id": "f1"}
    first = await bh.http.post("/v1/events", headers=b, json=event)
    again = await bh.http.post("/v1/events", headers=b, json=event)
    theirs = await bh.http.post("/v1/events", headers=a, json=event)
    assert (first.status_code, again.status_code, theirs.status_code) == (201, 200, 201)
    assert theirs.json()["tenant"] == "tenA" and first.json()["tenant"] == "tenB"
    posed = await bh.http.post("/v1/events", headers=b, json={**event, "tenant": "tenA"})
    assert posed.status_code == 403, posed.text
    unscoped = await bh.http.post("/v1/events", headers=b, json={**event, "tenant": ""})
    assert unscoped.status_code == 403, unscoped.text
    [mine] = [e for e in await events(bh, a) if e["type"] == "file.created"]
    assert mine["seq"] == theirs.json()["seq"]
