"""API additions for the web UI, on SQLite and PostgreSQL: ``GET /v1/jobs`` by name prefix
and creation time (each on an index), label filters through ``job_labels``, and ``GET
/v1/events?subject=`` (scoped by tenant as every event read)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.server.app import create_app
from bridgehead.store import create_store


@pytest.fixture
async def http(store_dsn: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    store = create_store(store_dsn)
    await store.open()
    app = create_app(ServerSettings.load(store=store_dsn), store)
    tokens = {}
    for name, tenant in (("admin", None), ("a", "a"), ("b", "b")):
        role = Role.ADMIN if tenant is None else Role.CLIENT
        _, secret = await store.create_token(name=name, role=role, cluster=None, tenant=tenant)
        tokens[name] = secret
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bh") as client:
        yield client, tokens
    await store.close()


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def submit(http: httpx.AsyncClient, secret: str, name: str, tenant: str,
                 **extra: object) -> str:
    r = await http.post("/v1/jobs", headers=auth(secret), json={
        "cluster": "c1", "command": ["/bin/true"], "name": name, "tenant": tenant, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["job"]["id"])


async def names(http: httpx.AsyncClient, secret: str, **params: object) -> list[str]:
    r = await http.get("/v1/jobs", headers=auth(secret), params=params)
    assert r.status_code == 200, r.text
    return [j["name"] for j in r.json()["jobs"]]


async def test_jobs_by_name_prefix_time_range_and_label(
        http: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, tokens = http
    await submit(client, tokens["a"], "etl-1", "a", labels={"team": "red"})
    await asyncio.sleep(0.05)
    middle = datetime.fromtimestamp(time.time(), UTC)
    await submit(client, tokens["a"], "etl-2", "a")
    await submit(client, tokens["a"], "report", "a", labels={"team": "red"})
    await submit(client, tokens["b"], "etl-b", "b")
    assert await names(client, tokens["a"], name="etl") == ["etl-1", "etl-2"]
    assert await names(client, tokens["admin"], name="etl") == ["etl-1", "etl-2", "etl-b"]
    assert await names(client, tokens["a"], created_after=middle.isoformat()) == [
        "etl-2", "report"]
    naive = middle.replace(tzinfo=None).isoformat()  # no zone: UTC
    assert await names(client, tokens["a"], created_before=naive) == ["etl-1"]
    assert await names(client, tokens["a"], label="team=red") == ["etl-1", "report"]
    assert await names(client, tokens["a"], label="team=red", name="rep") == ["report"]
    for bad, status in (("yesterday", 422), ("0.5", 422), ("2026-13-01T00:00", 400)):
        r = await client.get("/v1/jobs", headers=auth(tokens["a"]),
                             params={"created_after": bad})
        assert r.status_code == status and "created_after" in r.json()["detail"], bad


async def test_events_by_subject_are_scoped_by_tenant(
        http: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, tokens = http
    mine = await submit(client, tokens["a"], "mine", "a")
    other = await submit(client, tokens["b"], "other", "b")
    await client.post(f"/v1/jobs/{mine}/cancel", headers=auth(tokens["a"]))
    r = await client.get("/v1/events", headers=auth(tokens["a"]),
                         params={"subject": f"jobs/{mine}"})
    assert [e["data"]["state"] for e in r.json()["events"]] == ["queued", "cancelled"]
    assert {e["subject"] for e in r.json()["events"]} == {f"jobs/{mine}"}
    after = r.json()["events"][0]["seq"]
    r = await client.get("/v1/events", headers=auth(tokens["a"]),
                         params={"subject": f"jobs/{mine}", "after": after})
    assert [e["data"]["state"] for e in r.json()["events"]] == ["cancelled"]
    r = await client.get("/v1/events", headers=auth(tokens["a"]),
                         params={"subject": f"jobs/{other}"})
    assert r.json()["events"] == []  # tenant b's job: not a's to see
    r = await client.get("/v1/events", headers=auth(tokens["admin"]),
                         params={"subject": f"jobs/{other}"})
    assert [e["data"]["state"] for e in r.json()["events"]] == ["queued"]


async def test_validate_gives_every_error_at_its_field(
        http: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, tokens = http
    bad = ("name: w\ndefaults: {cluster: local}\nsteps:\n"
           "  - {id: a, command: [echo], resources: {cores: 0}}\n"
           "  - {id: b, comand: [echo]}\n")
    r = await client.post("/v1/workflows/validate", headers=auth(tokens["a"]),
                          json={"spec": bad, "filename": "w.yaml"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is False
    assert [(e["line"], e["loc"]) for e in body["errors"]] == [
        (4, "steps[0].resources.cores"), (5, "steps[1].comand")]
    assert body["errors"][1]["message"] == (
        "w.yaml:5: steps[1].comand: Extra inputs are not permitted")
    good = bad.replace(", resources: {cores: 0}", "").replace("comand", "command")
    r = await client.post("/v1/workflows/validate", headers=auth(tokens["a"]),
                          json={"spec": good})
    assert {k: v for k, v in r.json().items() if k in ("valid", "name", "steps", "errors")} == {
        "valid": True, "name": "w", "steps": ["a", "b"], "errors": []}


async def test_ui_session_length_is_a_setting(store_dsn: str) -> None:
    """``[server] ui_session_s`` (BRIDGEHEAD_UI_SESSION_S): the cookie's Max-Age and the
    session's end in the store."""
    store = create_store(store_dsn)
    await store.open()
    try:
        app = create_app(ServerSettings.load(store=store_dsn, ui_session_s=90), store)
        _, secret = await store.create_token(name="web", role=Role.CLIENT, cluster=None,
                                             tenant="a")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bh") as client:
            r = await client.post("/ui/login", data={"token": secret},
                                  headers={"Origin": "http://bh"})
        assert r.status_code == 303 and "Max-Age=90;" in r.headers["set-cookie"]
        session = await store.session(r.cookies["bh_session"])  # type: ignore[attr-defined]
        assert 80 < session.expires_at - time.time() <= 90
    finally:
        await store.close()
