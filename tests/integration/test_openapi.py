"""The OpenAPI document tells the truth: the errors each route sends, 422's shape as sent, the
Allow header of a 405, and agent reports' numbers taken as numbers only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.server.app import create_app
from bridgehead.store import create_store


@dataclass
class Api:
    http: httpx.AsyncClient
    doc: dict[str, Any]
    admin: dict[str, str]
    agent: dict[str, str]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    store = create_store(dsn)
    await store.open()
    app = create_app(ServerSettings.load(store=dsn), store)
    tokens = {}
    for role, cluster in ((Role.ADMIN, None), (Role.AGENT, "c1")):
        _, secret = await store.create_token(name=role.value, role=role, cluster=cluster,
                                             tenant=None)
        tokens[role.value] = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bh") as http:
        doc = (await http.get("/openapi.json")).json()
        yield Api(http=http, doc=doc, **tokens)
    await store.close()


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, ops in doc["paths"].items()
            for method, op in ops.items()}


async def test_each_route_documents_the_errors_it_sends(api: Api) -> None:
    ops = _operations(api.doc)
    assert {"401", "403", "404", "413", "422", "503"} <= set(ops["DELETE", "/v1/rules/{name}"]
                                                             ["responses"])
    assert {"400", "401", "403", "409", "413"} <= set(ops["POST", "/v1/jobs"]["responses"])
    assert {"400", "403"} <= set(ops["GET", "/v1/jobs"]["responses"])  # label filter, tenant
    assert "409" in ops["DELETE", "/v1/tokens/{token_id}"]["responses"]  # the last admin
    assert {"200", "201", "409"} <= set(ops["POST", "/v1/workflows/runs/{run_id}/retry"]
                                        ["responses"])  # 201: from_failed false, a new run
    assert "403" in ops["POST", "/v1/events"]["responses"]  # another tenant's source
    assert set(ops["GET", "/health"]["responses"]) == {"200", "400", "503"}  # 400: NUL in URL
    for (method, path), op in ops.items():
        responses = op["responses"]
        if path != "/health":
            assert "401" in responses and op["security"] == [{"bearer": []}], (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if method in ("POST", "PUT", "DELETE"):
            assert "413" in responses, (method, path)
    assert api.doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in api.doc["components"]["schemas"]


async def test_a_422_is_shaped_as_documented(api: Api) -> None:
    r = await api.http.get("/v1/jobs?limit=0", headers=api.admin)
    assert r.status_code == 422
    documented = _operations(api.doc)["GET", "/v1/jobs"]["responses"]["422"]
    ref = documented["content"]["application/json"]["schema"]["$ref"]
    schema = api.doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    body = r.json()
    assert set(schema["required"]) == set(body) == {"detail", "errors"}
    assert isinstance(body["detail"], str) and "limit" in body["detail"]
    assert body["errors"] == 1
    error = _operations(api.doc)["GET", "/v1/jobs/{job_id}"]["responses"]["404"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")


@pytest.mark.parametrize(("body", "field"), [
    ({"wait_s": "5"}, "wait_s"), ({"wait_s": True}, "wait_s"),
    ({"max_jobs": "3"}, "max_jobs"), ({"max_jobs": 2.0}, "max_jobs"),
    ({"poll_since": False}, "poll_since"), ({"poll_since": "1700000000.5"}, "poll_since"),
])
async def test_a_claim_takes_numbers_only_as_numbers(api: Api, body: dict[str, Any],
                                                     field: str) -> None:
    r = await api.http.post("/v1/agent/claim", headers=api.agent,
                            json={"cluster": "c1", "agent_id": "a1", **body})
    assert r.status_code == 422 and field in r.json()["detail"], r.text


@pytest.mark.parametrize(("body", "field"), [
    ({"logs": [{"job_id": "j1", "stream": "stdout", "pos": "5", "data": ""}]}, "pos"),
    ({"logs": [{"job_id": "j1", "stream": "stdout", "pos": True, "data": ""}]}, "pos"),
    ({"logs": [{"job_id": "j1", "stream": "stdout", "pos": 5.0, "data": ""}]}, "pos"),
    ({"transitions": [{"job_id": "j1", "state": "running", "at": False}]}, "at"),
    ({"transitions": [{"job_id": "j1", "state": "failed", "exit_code": True}]}, "exit_code"),
    ({"transitions": [{"job_id": "j1", "state": "running", "usage": {"cores": "4"}}]}, "cores"),
])
async def test_a_report_takes_numbers_only_as_numbers(api: Api, body: dict[str, Any],
                                                      field: str) -> None:
    r = await api.http.post("/v1/agent/report", headers=api.agent,
                            json={"cluster": "c1", "agent_id": "a1", **body})
    assert r.status_code == 422 and field in r.json()["detail"], r.text


@pytest.mark.parametrize("value", [0, 1, "true", None])
async def test_a_retry_takes_only_a_boolean(api: Api, value: Any) -> None:
    r = await api.http.post("/v1/workflows/runs/r-1/retry", headers=api.admin,
                            json={"from_failed": value})
    assert r.status_code == 422 and "from_failed" in r.json()["detail"], r.text


async def test_numbers_as_numbers_are_still_taken(api: Api) -> None:
    r = await api.http.post("/v1/agent/claim", headers=api.agent,
                            json={"cluster": "c1", "agent_id": "a1", "wait_s": 0, "max_jobs": 1,
                                  "poll_since": 1700000000.5})
    assert r.status_code == 200, r.text
    r = await api.http.post("/v1/agent/report", headers=api.agent, json={
        "cluster": "c1", "agent_id": "a1", "transitions": [
            {"job_id": "j1", "state": "running", "at": 1700000000, "exit_code": 0,
             "usage": {"elapsed_s": 2, "cores": 1, "nodes": 1, "max_rss_mb": 1.5}}]})
    assert r.status_code == 200 and r.json() == {"applied": [False]}, r.text


@pytest.mark.parametrize(("path", "allow"), [
    ("/v1/jobs", "GET, POST"), ("/v1/jobs/batch", "POST"), ("/v1/rules", "GET, PUT"),
    ("/v1/tokens/t1", "DELETE"), ("/v1/events", "GET, POST"),
])
async def test_a_405_allows_every_method_of_its_path(api: Api, path: str, allow: str) -> None:
    r = await api.http.request("PATCH", path, headers=api.admin)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert "PATCH" in r.json()["detail"]
