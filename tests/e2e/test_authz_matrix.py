"""Who may call what: every route of the live app x six principals -> the expected status.

The route list comes from the app itself, so a new route without a row in ``MATRIX`` fails
``test_every_route_has_a_row``. The principals: anonymous, an admin, clients of tenants A and
B, and agents of clusters alpha and beta. A real server process on loopback (SQLite and
PostgreSQL) holds tenant A's job (claimed by alpha, running, with a log), a second queued job,
a workflow run, an event and a rule; each cell calls the route on tenant A's objects (or with
a body naming tenant A and cluster alpha). Beyond status codes, the isolation tests check
what B and beta do see: no job, log, event (also over SSE) or run of tenant A, and no report
or claim on alpha's jobs.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from bridgehead.cli.tokens import create_in_store
from bridgehead.config import ServerSettings
from bridgehead.server.app import create_app
from tests.procs import Server, eventually

pytestmark = pytest.mark.slow

WHO = ("anonymous", "admin", "client A", "client B", "agent alpha", "agent beta")
ALPHA_AGENT = "agent-alpha-1"
FLOW = "name: hello\nsteps:\n  - id: greet\n    cluster: alpha\n    command: [/bin/echo, hi]\n"
SCHEDULED = FLOW.replace("hello", "matrix-flow") + \
    "schedule: {every: 1d, paused: true, tenant: tenA}\n"
"""Tenant A's schedule (paused: it never starts a run here)."""
RULE = {"name": "matrix-rule", "match": {"type": "matrix.never"},
        "actions": [{"submit_job": {"cluster": "alpha", "tenant": "tenA",
                                    "command": ["/bin/true"]}},
                    {"webhook": {"url": "https://93.184.216.34/hook/secret-path",
                                 "secret": "secret-key", "headers": {"X-Key": "secret-hdr"}}}]}
JOB_A = {"cluster": "alpha", "tenant": "tenA", "command": ["/bin/echo", "secret-of-A"],
         "name": "job-of-A", "labels": {"owner": "tenA"}}
AGENT_ALPHA = {"cluster": "alpha", "agent_id": ALPHA_AGENT}

MATRIX: dict[str, tuple[int, int, int, int, int, int]] = {
    #                                            anon admin  A    B  alpha beta
    "GET /health":                               (200, 200, 200, 200, 200, 200),
    "GET /openapi.json":                         (200, 200, 200, 200, 200, 200),
    "GET /docs":                                 (200, 200, 200, 200, 200, 200),
    "GET /docs/oauth2-redirect":                 (200, 200, 200, 200, 200, 200),
    "GET /redoc":                                (200, 200, 200, 200, 200, 200),
    "GET /metrics":                              (401, 200, 403, 403, 403, 403),
    "POST /v1/jobs":                             (401, 201, 201, 403, 403, 403),
    "POST /v1/jobs/batch":                       (401, 200, 200, 403, 403, 403),
    "GET /v1/jobs":                              (401, 200, 200, 200, 200, 200),
    "GET /v1/jobs/{job_id}":                     (401, 200, 200, 404, 200, 404),
    "POST /v1/jobs/{job_id}/cancel":             (401, 200, 200, 404, 403, 403),
    "GET /v1/jobs/{job_id}/wait":                (401, 200, 200, 404, 200, 404),
    "GET /v1/jobs/{job_id}/logs":                (401, 200, 200, 404, 200, 404),
    "POST /v1/agent/claim":                      (401, 200, 403, 403, 200, 403),
    "POST /v1/agent/adopt":                      (401, 200, 403, 403, 200, 403),
    "POST /v1/agent/report":                     (401, 200, 403, 403, 200, 403),
    "POST /v1/agent/heartbeat":                  (401, 200, 403, 403, 200, 403),
    "GET /v1/clusters":                          (401, 200, 200, 200, 200, 200),
    "GET /v1/events":                            (401, 200, 200, 200, 403, 403),
    "POST /v1/events":                           (401, 201, 201, 403, 403, 403),
    "GET /v1/events/stream":                     (401, 200, 200, 200, 403, 403),
    "GET /v1/tokens":                            (401, 200, 403, 403, 403, 403),
    "POST /v1/tokens":                           (401, 201, 403, 403, 403, 403),
    "DELETE /v1/tokens/{token_id}":              (401, 204, 403, 403, 403, 403),
    "POST /v1/workflows/runs":                   (401, 201, 201, 403, 403, 403),
    "GET /v1/workflows/runs":                    (401, 200, 200, 200, 403, 403),
    "GET /v1/workflows/runs/{run_id}":           (401, 200, 200, 404, 403, 403),
    "POST /v1/workflows/runs/{run_id}/cancel":   (401, 200, 200, 404, 403, 403),
    "POST /v1/workflows/runs/{run_id}/retry":    (401, 409, 409, 404, 403, 403),
    "GET /v1/rules":                             (401, 200, 200, 200, 403, 403),
    "PUT /v1/rules":                             (401, 200, 403, 403, 403, 403),
    "DELETE /v1/rules/{name}":                   (401, 204, 403, 403, 403, 403),
    "GET /v1/workflows/runs/{run_id}/log":       (401, 200, 200, 404, 403, 403),
    "GET /v1/costs":                             (401, 200, 200, 200, 403, 403),
    "POST /v1/workflows/validate":               (401, 200, 200, 200, 403, 403),
    "GET /v1/workflows/files":                   (401, 200, 200, 200, 403, 403),
    "GET /v1/workflows/files/{name}":            (401, 404, 404, 404, 403, 403),
    "POST /v1/workflows/files":                  (401, 201, 403, 403, 403, 403),
    "GET /v1/schedules":                         (401, 200, 200, 200, 403, 403),
    "POST /v1/schedules/{workflow}/pause":       (401, 200, 200, 404, 403, 403),
    "POST /v1/schedules/{workflow}/resume":      (401, 200, 200, 404, 403, 403),
    "GET /v1/pools":                             (401, 200, 200, 200, 200, 200),
    "POST /v1/pools/{name}/lift":                (401, 404, 403, 403, 403, 403),
    # The web UI: the same principals (a bearer token works there too and needs no CSRF,
    # as on the API); no credentials: a page or form sends the browser to log in (303).
    "MOUNT /ui/static":                          (200, 200, 200, 200, 200, 200),
    "GET /ui/login":                             (200, 200, 200, 200, 200, 200),
    "POST /ui/login":                            (403, 403, 403, 403, 403, 403),
    "POST /ui/logout":                           (303, 303, 303, 303, 403, 403),
    "GET /ui":                                   (303, 200, 200, 200, 403, 403),
    "GET /ui/jobs":                              (303, 200, 200, 200, 403, 403),
    "GET /ui/jobs/{job_id}":                     (303, 200, 200, 404, 403, 403),
    "POST /ui/jobs/{job_id}/cancel":             (303, 303, 303, 404, 403, 403),
    "GET /ui/runs":                              (303, 200, 200, 200, 403, 403),
    "GET /ui/runs/{run_id}":                     (303, 200, 200, 404, 403, 403),
    "GET /ui/runs/{run_id}/log":                 (303, 200, 200, 404, 403, 403),
    "POST /ui/runs/{run_id}/cancel":             (303, 303, 303, 404, 403, 403),
    "POST /ui/runs/{run_id}/retry":              (303, 409, 409, 404, 403, 403),
    "GET /ui/workflows":                         (303, 200, 200, 200, 403, 403),
    "GET /ui/workflows/edit":                    (303, 200, 200, 200, 403, 403),
    "POST /ui/workflows/edit":                   (303, 200, 200, 200, 403, 403),
    "POST /ui/workflows/save":                   (303, 201, 403, 403, 403, 403),
    "GET /ui/clusters":                          (303, 200, 200, 200, 403, 403),
    "GET /ui/events":                            (303, 200, 200, 200, 403, 403),
    "GET /ui/rules":                             (303, 200, 200, 200, 403, 403),
    "GET /ui/costs":                             (303, 200, 200, 200, 403, 403),
    "GET /ui/costs.csv":                         (303, 200, 200, 200, 403, 403),
    "POST /ui/rules/{name}/enabled":             (303, 303, 403, 403, 403, 403),
    "POST /ui/schedules/{workflow}/pause":       (303, 303, 303, 404, 403, 403),
    "POST /ui/schedules/{workflow}/resume":      (303, 303, 303, 404, 403, 403),
    "GET /ui/tokens":                            (303, 200, 403, 403, 403, 403),
    "POST /ui/tokens":                           (303, 201, 403, 403, 403, 403),
    "POST /ui/tokens/{token_id}/revoke":         (303, 303, 403, 403, 403, 403),
}
"""Expected status per route and principal (in ``WHO``'s order)."""


@dataclass
class World:
    """The running server, its tokens (by ``WHO``) and tenant A's objects."""

    http: httpx.Client
    tokens: dict[str, str]
    job: str = ""
    queued_job: str = ""
    run: str = ""
    other_run: str = ""
    spares: list[str] = field(default_factory=list)

    def headers(self, who: str) -> dict[str, str]:
        token = self.tokens.get(who)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, headers=self.headers(who), **kw)

    def ok(self, who: str, method: str, path: str, **kw: Any) -> Any:
        r = self.call(who, method, path, **kw)
        assert r.status_code < 300, f"{method} {path} as {who}: {r.status_code} {r.text}"
        return r.json() if r.content else None


Request = Callable[[World], tuple[str, dict[str, Any]]]
"""The path to call and httpx's keyword arguments (json, params), made per cell."""


def _spare_token(w: World) -> tuple[str, dict[str, Any]]:
    made = w.ok("admin", "POST", "/v1/tokens", json={"name": "spare", "role": "client",
                                                     "tenant": "tenA"})
    return f"/v1/tokens/{made['id']}", {}


def _rule_again(w: World) -> tuple[str, dict[str, Any]]:
    w.ok("admin", "PUT", "/v1/rules", json={"rules": [RULE]})
    return f"/v1/rules/{RULE['name']}", {}


REQUESTS: dict[str, Request] = {
    "POST /v1/jobs": lambda w: ("/v1/jobs", {"json": JOB_A}),
    "POST /v1/jobs/batch": lambda w: ("/v1/jobs/batch", {"json": {"jobs": [JOB_A]}}),
    "POST /v1/jobs/{job_id}/cancel": lambda w: (f"/v1/jobs/{w.queued_job}/cancel", {}),
    "GET /v1/jobs/{job_id}/wait": lambda w: (f"/v1/jobs/{w.job}/wait", {
        "params": {"timeout": 0}}),
    "POST /v1/agent/claim": lambda w: ("/v1/agent/claim", {
        "json": {**AGENT_ALPHA, "max_jobs": 0}}),
    "POST /v1/agent/adopt": lambda w: ("/v1/agent/adopt", {"json": AGENT_ALPHA}),
    "POST /v1/agent/report": lambda w: ("/v1/agent/report", {"json": AGENT_ALPHA}),
    "POST /v1/agent/heartbeat": lambda w: ("/v1/agent/heartbeat", {"json": AGENT_ALPHA}),
    "POST /v1/events": lambda w: ("/v1/events", {"json": {
        "type": "file.created", "subject": "a.csv", "tenant": "tenA"}}),
    "POST /v1/tokens": lambda w: ("/v1/tokens", {"json": {
        "name": "made", "role": "client", "tenant": "tenA"}}),
    "DELETE /v1/tokens/{token_id}": _spare_token,
    "POST /v1/workflows/runs": lambda w: ("/v1/workflows/runs", {"json": {
        "spec": FLOW, "tenant": "tenA"}}),
    "POST /v1/workflows/runs/{run_id}/cancel": lambda w: (
        f"/v1/workflows/runs/{w.other_run}/cancel", {}),
    "POST /v1/workflows/runs/{run_id}/retry": lambda w: (
        f"/v1/workflows/runs/{w.run}/retry", {"json": {}}),
    "PUT /v1/rules": lambda w: ("/v1/rules", {"json": {"rules": [RULE]}}),
    "DELETE /v1/rules/{name}": _rule_again,
    "POST /v1/workflows/validate": lambda w: ("/v1/workflows/validate", {"json": {
        "spec": FLOW}}),
    "GET /v1/workflows/files/{name}": lambda w: ("/v1/workflows/files/no-such-file", {}),
    "POST /v1/workflows/files": lambda w: ("/v1/workflows/files", {"json": {
        "name": "matrix-saved", "spec": FLOW, "overwrite": True}}),
    "MOUNT /ui/static": lambda w: ("/ui/static/ui.js", {}),
    "POST /ui/jobs/{job_id}/cancel": lambda w: (f"/ui/jobs/{w.queued_job}/cancel", {}),
    "POST /ui/runs/{run_id}/cancel": lambda w: (f"/ui/runs/{w.other_run}/cancel", {}),
    "POST /ui/rules/{name}/enabled": lambda w: (f"/ui/rules/{RULE['name']}/enabled", {
        "data": {"enabled": "true"}}),
    "POST /ui/workflows/save": lambda w: ("/ui/workflows/save", {"data": {
        "name": "matrix-ui-saved", "spec": FLOW.replace("name: hello", "name: hello-ui"),
        "overwrite": "yes"}}),  # (one workflow per file: the API's row saved "hello")
    "POST /ui/tokens": lambda w: ("/ui/tokens", {"data": {
        "name": "made", "role": "client", "tenant": "tenA"}}),
    "POST /ui/tokens/{token_id}/revoke": lambda w: (
        _spare_token(w)[0].replace("/v1/tokens/", "/ui/tokens/") + "/revoke", {}),
}
"""How to call a route when its path template, filled from the world, is not enough."""


def live_routes() -> set[str]:
    """``"METHOD /path"`` of every route the app serves (HEAD aside), mounts as ``MOUNT``."""
    app = create_app(ServerSettings.load(store="sqlite:///:memory:"))
    return set(_keys(app.routes))


def _keys(routes: list[BaseRoute]) -> Iterator[str]:
    for route in routes:
        if isinstance(route, Route):
            yield from (f"{m} {route.path}" for m in route.methods or () if m != "HEAD")
        elif isinstance(route, Mount):
            yield f"MOUNT {route.path}"
        else:
            yield f"{type(route).__name__} {getattr(route, 'path', route)}"


def _token(dsn: str, role: str, *, cluster: str | None = None,
           tenant: str | None = None) -> str:
    return asyncio.run(create_in_store(dsn, f"matrix-{role}", role, cluster, tenant))["token"]


@pytest.fixture
def world(store_dsn: str, tmp_path: Path) -> Iterator[World]:
    tokens = {
        "admin": _token(store_dsn, "admin"),
        "client A": _token(store_dsn, "client", tenant="tenA"),
        "client B": _token(store_dsn, "client", tenant="tenB"),
        "agent alpha": _token(store_dsn, "agent", cluster="alpha"),
        "agent beta": _token(store_dsn, "agent", cluster="beta"),
    }
    server = Server(store_dsn, tmp_path)
    server.env["BRIDGEHEAD_MAX_WAIT_S"] = "0.5"
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "scheduled.yaml").write_text(SCHEDULED)
    server.env["BRIDGEHEAD_WORKFLOWS_DIR"] = str(tmp_path / "workflows")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            w = World(http=http, tokens=tokens)
            _populate(w)
            yield w
    finally:
        server.kill()


def _populate(w: World) -> None:
    """Tenant A's running job with a log, a queued job, two runs, an event and a rule;
    tenant B's own job and event; both clusters heard from."""
    for who, cluster in (("agent alpha", "alpha"), ("agent beta", "beta")):
        w.ok(who, "POST", "/v1/agent/heartbeat",
             json={"cluster": cluster, "agent_id": f"agent-{cluster}-1"})
    w.job = w.ok("client A", "POST", "/v1/jobs", json=JOB_A)["job"]["id"]
    claimed = w.ok("agent alpha", "POST", "/v1/agent/claim", json={**AGENT_ALPHA, "max_jobs": 1})
    assert [j["id"] for j in claimed["jobs"]] == [w.job]
    for state in ("submitting", "submitted"):
        applied = w.ok("agent alpha", "POST", "/v1/agent/report", json={
            **AGENT_ALPHA, "transitions": [{"job_id": w.job, "state": state, "native_id": "1"}]})
        assert applied == {"applied": [True]}, state
    w.ok("agent alpha", "POST", "/v1/agent/report", json={
        **AGENT_ALPHA, "transitions": [{"job_id": w.job, "state": "running"}],
        "logs": [{"job_id": w.job, "stream": "stdout", "pos": 0,
                  "data": base64.b64encode(b"secret-log-of-A\n").decode()}]})
    w.queued_job = w.ok("client A", "POST", "/v1/jobs", json=JOB_A)["job"]["id"]
    w.run, w.other_run = (w.ok("client A", "POST", "/v1/workflows/runs",
                               json={"spec": FLOW, "tenant": "tenA"})["id"]
                          for _ in range(2))
    w.ok("client A", "POST", "/v1/events", json={"type": "file.created", "subject": "a.csv",
                                                 "data": {"path": "/secret/of/A"}})
    w.ok("client B", "POST", "/v1/jobs", json={**JOB_A, "tenant": "tenB", "name": "job-of-B"})
    w.ok("admin", "PUT", "/v1/rules", json={"rules": [RULE]})
    eventually(lambda: w.ok("admin", "GET", "/v1/schedules"), 30, what="the schedule")


def _cell(w: World, route: str, who: str) -> int:
    method, template = route.split(" ", 1)
    method = "GET" if method == "MOUNT" else method
    make = REQUESTS.get(route)
    if make is not None:
        path, kw = make(w)
    else:
        path, kw = template.format(job_id=w.job, run_id=w.run, name=RULE["name"],
                                   workflow="matrix-flow"), {}
    if route == "GET /v1/events/stream":  # an answer that never ends: its status only
        with w.http.stream(method, path, headers=w.headers(who), **kw) as r:
            return r.status_code
    return w.call(who, method, path, **kw).status_code


def test_every_route_has_a_row() -> None:
    live = live_routes()
    assert not live - set(MATRIX), f"routes with no row in MATRIX: {sorted(live - set(MATRIX))}"
    assert not set(MATRIX) - live, f"rows of routes that are gone: {sorted(set(MATRIX) - live)}"


def test_each_principal_gets_the_expected_status_on_each_route(world: World) -> None:
    wrong = []
    for route, expected in MATRIX.items():
        for who, want in zip(WHO, expected, strict=True):
            got = _cell(world, route, who)
            if got != want:
                wrong.append(f"{route} as {who}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong)


def test_tenant_b_and_agent_beta_see_nothing_of_tenant_a(world: World) -> None:
    w = world
    mine = w.ok("client A", "GET", "/v1/jobs", params={"limit": 1000})["jobs"]
    assert w.job in {j["id"] for j in mine}
    seen_b = w.ok("client B", "GET", "/v1/jobs", params={"limit": 1000})["jobs"]
    assert seen_b and {j["tenant"] for j in seen_b} == {"tenB"}
    assert w.ok("agent beta", "GET", "/v1/jobs", params={"limit": 1000})["jobs"] == []
    assert w.call("client B", "GET", "/v1/jobs", params={"tenant": "tenA"}).status_code == 403
    assert w.call("agent beta", "GET", "/v1/jobs", params={"cluster": "alpha"}).status_code == 403
    runs_b = w.ok("client B", "GET", "/v1/workflows/runs")["runs"]
    assert {r["tenant"] for r in runs_b} <= {"tenB"}
    assert w.run in {r["id"] for r in w.ok("client A", "GET", "/v1/workflows/runs")["runs"]}
    events_a = w.ok("client A", "GET", "/v1/events", params={"limit": 1000})["events"]
    assert any(e["subject"] == f"jobs/{w.job}" for e in events_a)
    events_b = w.ok("client B", "GET", "/v1/events", params={"limit": 1000})["events"]
    assert events_b and {e["tenant"] for e in events_b} == {"tenB"}
    assert "secret" not in json.dumps(events_b) and w.job not in json.dumps(events_b)
    assert [s["workflow"] for s in w.ok("client A", "GET", "/v1/schedules")] == ["matrix-flow"]
    assert w.ok("client B", "GET", "/v1/schedules") == []


def test_clusters_show_tenant_b_shared_state_and_nothing_of_tenant_a(world: World) -> None:
    """Clusters are shared infrastructure: every token sees each cluster's health and queue
    depth (as ``squeue`` shows every user's jobs by default), never a job, tenant, label or
    secret of another tenant."""
    w = world
    for who in ("client B", "agent beta"):
        seen = w.ok(who, "GET", "/v1/clusters")
        text = json.dumps(seen)
        assert {c["name"] for c in seen} >= {"alpha"}, seen
        assert "tenA" not in text and w.job not in text and "secret" not in text, text


def test_the_event_stream_of_tenant_b_holds_none_of_tenant_a(world: World) -> None:
    w = world
    marker = w.ok("client B", "POST", "/v1/events", json={"type": "matrix.marker",
                                                          "subject": "end-of-b"})
    seen: list[dict[str, Any]] = []
    with w.http.stream("GET", "/v1/events/stream", headers=w.headers("client B")) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["id"] == marker["id"]:
                    break
    assert seen and {e["tenant"] for e in seen} == {"tenB"}, seen
    assert w.job not in json.dumps(seen)


def test_agent_beta_cannot_claim_report_or_write_logs_for_alphas_jobs(world: World) -> None:
    w = world
    as_alpha = w.call("agent beta", "POST", "/v1/agent/claim",
                      json={**AGENT_ALPHA, "max_jobs": 10})
    assert as_alpha.status_code == 403
    report = {"cluster": "beta", "agent_id": "agent-beta-1"}
    for body in ({"transitions": [{"job_id": w.job, "state": "failed", "exit_code": 1}]},
                 {"logs": [{"job_id": w.job, "stream": "stdout", "pos": 16,
                            "data": base64.b64encode(b"forged\n").decode()}]}):
        r = w.call("agent beta", "POST", "/v1/agent/report", json={**report, **body})
        assert r.status_code == 403 and w.job in r.text, r.text
    claimed = w.ok("agent beta", "POST", "/v1/agent/claim",
                   json={"cluster": "beta", "agent_id": "agent-beta-1", "max_jobs": 10})
    assert (claimed["jobs"], claimed["cancel"]) == ([], [])
    job = w.ok("admin", "GET", f"/v1/jobs/{w.job}")
    assert (job["state"], job["agent_id"]) == ("running", ALPHA_AGENT)
    log = w.call("admin", "GET", f"/v1/jobs/{w.job}/logs")
    assert log.content == b"secret-log-of-A\n"


def test_rules_show_webhook_urls_to_admins_only_and_secrets_to_nobody(world: World) -> None:
    w = world
    [rule] = w.ok("admin", "GET", "/v1/rules")
    assert "secret-path" in json.dumps(rule) and "secret-key" not in json.dumps(rule)
    for who in ("client A", "client B"):
        [rule] = w.ok(who, "GET", "/v1/rules")
        assert "93.184.216.34" in json.dumps(rule), rule
        assert "secret" not in json.dumps(rule).replace('"secret"', ""), (who, rule)


def test_metrics_and_token_lists_are_for_admins_only(world: World) -> None:
    w = world
    r = w.call("admin", "GET", "/metrics")
    assert r.status_code == 200 and "bridgehead_" in r.text
    for who in WHO[2:]:
        for path in ("/metrics", "/v1/tokens"):
            r = w.call(who, "GET", path)
            assert r.status_code == 403 and "matrix-" not in r.text, (who, path, r.text)


def test_the_stream_resumes_after_last_event_id_and_refuses_a_bad_one(world: World) -> None:
    w = world
    first, second = (w.ok("client B", "POST", "/v1/events", json={
        "type": "matrix.marker", "subject": f"m{i}"}) for i in range(2))
    headers = {**w.headers("client B"), "Last-Event-ID": str(first["seq"])}
    with w.http.stream("GET", "/v1/events/stream", headers=headers) as r:
        data = next(line for line in r.iter_lines() if line.startswith("data: "))
    assert json.loads(data[6:])["id"] == second["id"]
    for bad in ("99999999999999999999999", "-1", "x"):  # past 64 bits was a broken stream
        r = w.http.get("/v1/events/stream",
                       headers={**w.headers("client B"), "Last-Event-ID": bad})
        assert r.status_code == 422 and "last-event-id" in r.json()["detail"].lower(), r.text
