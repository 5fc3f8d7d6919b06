"""The HTTP API on a real store (SQLite and PostgreSQL): auth, scoping, bad input, CAS."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.domain.runs import Plan, RunState, TaskState, run_event
from bridgehead.server.app import create_app
from bridgehead.store import JobFilter, JobStore, create_store

JOB = {"cluster": "c1", "command": ["/bin/echo", "hi"]}


@dataclass
class Api:
    http: httpx.AsyncClient
    store: JobStore
    admin: dict[str, str]
    client: dict[str, str]
    agent_c1: dict[str, str]
    agent_c2: dict[str, str]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def api(store_dsn: str) -> AsyncIterator[Api]:
    store = create_store(store_dsn)
    await store.open()
    settings = ServerSettings.load(store=store_dsn, max_body_bytes=64 * 1024)
    app = create_app(settings, store)  # the store is open: no lifespan needed
    tokens = {}
    for name, role, cluster in (("admin", Role.ADMIN, None), ("client", Role.CLIENT, None),
                                ("agent_c1", Role.AGENT, "c1"), ("agent_c2", Role.AGENT, "c2")):
        _, secret = await store.create_token(name=name, role=role, cluster=cluster, tenant=None)
        tokens[name] = bearer(secret)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bh") as http:
        yield Api(http=http, store=store, **tokens)
    await store.close()


async def claim(api: Api, cluster: str = "c1", headers: dict | None = None) -> httpx.Response:
    return await api.http.post("/v1/agent/claim", headers=headers or api.agent_c1,
                               json={"cluster": cluster, "agent_id": "a1", "max_jobs": 10})


async def report(api: Api, *transitions: dict, headers: dict | None = None) -> httpx.Response:
    return await api.http.post("/v1/agent/report", headers=headers or api.agent_c1,
                               json={"cluster": "c1", "agent_id": "a1",
                                     "transitions": list(transitions)})


async def test_health_is_open_and_everything_else_needs_a_token(api: Api) -> None:
    assert (await api.http.get("/health")).json()["status"] == "ok"
    for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/metrics"),
                         ("GET", "/v1/clusters"), ("POST", "/v1/agent/claim")):
        r = await api.http.request(method, path, json=JOB)
        assert r.status_code == 401 and "bearer" in r.json()["detail"].lower()
    r = await api.http.get("/v1/jobs", headers=bearer("bh_not-a-real-token"))
    assert r.status_code == 401


async def test_idempotent_submit_returns_the_same_job(api: Api) -> None:
    body = {**JOB, "idempotency_key": "dag.run.task.0.1"}
    first = await api.http.post("/v1/jobs", headers=api.client, json=body)
    again = await api.http.post("/v1/jobs", headers=api.client, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["job"]["id"] == again.json()["job"]["id"]
    assert again.json()["created"] is False


async def test_agent_token_reaches_only_its_cluster(api: Api) -> None:
    await api.http.post("/v1/jobs", headers=api.client, json=JOB)
    assert (await claim(api, "c1", api.agent_c2)).status_code == 403
    assert (await claim(api, "c1", api.client)).status_code == 403  # clients cannot claim
    [job] = (await claim(api)).json()["jobs"]
    # agent of c2 reporting on a c1 job, while naming its own cluster: refused, nothing changes
    r = await api.http.post("/v1/agent/report", headers=api.agent_c2, json={
        "cluster": "c2", "agent_id": "a2",
        "transitions": [{"job_id": job["id"], "state": "submitting"}]})
    assert r.status_code == 403
    assert (await api.store.get(job["id"])).state.value == "claimed"
    r = await api.http.get("/v1/jobs", headers=api.agent_c2, params={"cluster": "c1"})
    assert r.status_code == 403


async def test_stale_and_duplicate_reports_are_ignored(api: Api) -> None:
    await api.http.post("/v1/jobs", headers=api.client, json=JOB)
    [job] = (await claim(api)).json()["jobs"]
    jid = job["id"]
    steps = [{"job_id": jid, "state": "submitting"},
             {"job_id": jid, "state": "submitted", "native_id": "42"},
             {"job_id": jid, "state": "running"},
             {"job_id": jid, "state": "succeeded", "exit_code": 0}]
    assert (await report(api, *steps)).json()["applied"] == [True] * 4
    replay = await report(api, *steps, {"job_id": jid, "state": "failed", "exit_code": 1})
    assert replay.json()["applied"] == [False] * 5
    got = (await api.http.get(f"/v1/jobs/{jid}", headers=api.client)).json()
    assert got["state"] == "succeeded" and got["exit_code"] == 0 and got["native_id"] == "42"


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 422, "json"),
    (b'{"cluster": "c1"}', 400, "exactly one of command"),
    (b'{"cluster": "c1", "command": ["x"], "resources": {"cores": 0}}', 422, "cores"),
    (b'{"cluster": "c1", "script": "echo no shebang"}', 400, "#!"),
    (b'{"cluster": "c1", "command": ["x"], "working_dir": "relative/dir"}', 400, "absolute"),
    (b'{"cluster": "c1", "command": ["x"], "working_dir": "/data/../etc"}', 400, ".."),
    (b'{"cluster": "c1", "command": ["x"], "scheduler_options": ["; rm -rf /"]}', 400,
     "--name"),
    (b'{"cluster": "c1", "command": ["x"], "env": {"A B": "1"}}', 400, "variable"),
    (b'{"cluster": "c1", "command": ["x"], "surprise": 1}', 422, "surprise"),
    (b'{"cluster": "bad name!", "command": ["x"]}', 400, "cluster"),
])
async def test_bad_submissions_get_a_clear_4xx(api: Api, body: bytes, status: int,
                                               words: str) -> None:
    r = await api.http.post("/v1/jobs", headers={**api.client,
                                                 "Content-Type": "application/json"},
                            content=body)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["detail"].lower()
    assert (await api.store.list_jobs(JobFilter())) == []  # nothing half-stored


async def test_oversized_body_is_refused_with_413(api: Api) -> None:
    big = {**JOB, "env": {"BIG": "x" * 100_000}}
    r = await api.http.post("/v1/jobs", headers=api.client, json=big)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


async def test_shell_metacharacters_are_stored_verbatim(api: Api) -> None:
    argv = ["/bin/echo", "$(touch /tmp/pwned); `id`; rm -rf / && echo | cat > x"]
    r = await api.http.post("/v1/jobs", headers=api.client,
                            json={"cluster": "c1", "command": argv})
    assert r.json()["job"]["spec"]["command"] == argv


async def test_wait_long_polls_until_the_job_changes(api: Api) -> None:
    jid = (await api.http.post("/v1/jobs", headers=api.client, json=JOB)).json()["job"]["id"]
    waiter = asyncio.create_task(api.http.get(f"/v1/jobs/{jid}/wait", headers=api.client,
                                              params={"timeout": 20}))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await claim(api)
    r = await asyncio.wait_for(waiter, 10)
    assert r.json()["state"] == "claimed"
    quick = await api.http.get(f"/v1/jobs/{jid}/wait", headers=api.client,
                               params={"timeout": 0.2})
    assert quick.json()["state"] == "claimed"  # nothing new: answers at the timeout


async def test_logs_by_offset_and_bad_chunks_refused(api: Api) -> None:
    await api.http.post("/v1/jobs", headers=api.client, json=JOB)
    [job] = (await claim(api)).json()["jobs"]
    chunk = {"job_id": job["id"], "stream": "stdout", "pos": 0,
             "data": base64.b64encode(b"hello\nworld\n").decode()}
    r = await api.http.post("/v1/agent/report", headers=api.agent_c1,
                            json={"cluster": "c1", "agent_id": "a1", "logs": [chunk]})
    assert r.status_code == 200
    r = await api.http.get(f"/v1/jobs/{job['id']}/logs", headers=api.client,
                           params={"offset": 6})
    assert r.content == b"world\n" and r.headers["x-next-offset"] == "12"
    bad = {**chunk, "data": "***not base64***"}
    r = await api.http.post("/v1/agent/report", headers=api.agent_c1,
                            json={"cluster": "c1", "agent_id": "a1", "logs": [bad]})
    assert r.status_code == 400 and "base64" in r.json()["detail"]


async def test_cancel_queued_and_events_by_cursor(api: Api) -> None:
    jid = (await api.http.post("/v1/jobs", headers=api.client, json=JOB)).json()["job"]["id"]
    r = await api.http.post(f"/v1/jobs/{jid}/cancel", headers=api.client)
    assert r.json()["state"] == "cancelled"
    page = (await api.http.get("/v1/events", headers=api.client)).json()
    assert [e["type"] for e in page["events"]] == ["bridgehead.job.queued",
                                                   "bridgehead.job.finished"]
    assert page["events"][1]["data"]["state"] == "cancelled"
    empty = await api.http.get("/v1/events", headers=api.client, params={"after": page["next"]})
    assert empty.json()["events"] == []
    assert (await api.http.post("/v1/jobs/nope/cancel", headers=api.client)).status_code == 404


async def test_tokens_need_admin_and_metrics_are_exposed(api: Api) -> None:
    body = {"name": "ci", "role": "agent", "cluster": "c9"}
    assert (await api.http.post("/v1/tokens", headers=api.client, json=body)).status_code == 403
    r = await api.http.post("/v1/tokens", headers=api.admin, json=body)
    assert r.status_code == 201 and r.json()["token"].startswith("bh_")
    listed = (await api.http.get("/v1/tokens", headers=api.admin)).json()
    assert all(t["token"] is None for t in listed)  # secrets are never shown again
    await api.http.post("/v1/jobs", headers=api.client, json=JOB)
    metrics = (await api.http.get("/metrics", headers=api.admin)).text
    assert 'bridgehead_jobs{cluster="c1",state="queued"} 1.0' in metrics
    assert "bridgehead_jobs_submitted_total 1.0" in metrics
    assert "/openapi.json" in (await api.http.get("/docs")).text


async def test_a_tenant_token_sees_and_submits_only_its_tenant(api: Api) -> None:
    _, secret = await api.store.create_token(name="t1", role=Role.CLIENT, cluster=None,
                                             tenant="t1")
    t1 = bearer(secret)
    other = (await api.http.post("/v1/jobs", headers=api.client,
                                 json={**JOB, "tenant": "t2"})).json()["job"]["id"]
    r = await api.http.post("/v1/jobs", headers=t1, json={**JOB, "tenant": "t2"})
    assert r.status_code == 403
    assert (await api.http.post("/v1/jobs", headers=t1,
                                json={**JOB, "tenant": "t1"})).status_code == 201
    assert (await api.http.get(f"/v1/jobs/{other}", headers=t1)).status_code == 404
    assert (await api.http.post(f"/v1/jobs/{other}/cancel", headers=t1)).status_code == 404
    listed = (await api.http.get("/v1/jobs", headers=t1)).json()["jobs"]
    assert [j["tenant"] for j in listed] == ["t1"]


async def test_jobs_routed_by_labels_go_to_the_least_busy_matching_cluster(api: Api) -> None:
    for cluster, headers, labels in (("c1", api.agent_c1, {"site": "onprem", "gpu": "a100"}),
                                     ("c2", api.agent_c2, {"site": "onprem"})):
        r = await api.http.post("/v1/agent/heartbeat", headers=headers, json={
            "cluster": cluster, "agent_id": f"a-{cluster}", "backend": "slurm_cli",
            "labels": labels})
        assert r.status_code in (200, 204), r.text
    await api.http.post("/v1/jobs", headers=api.client, json=JOB)  # c1 now has a queued job
    routed = {"command": ["true"], "cluster_labels": {"site": "onprem"}}
    r = await api.http.post("/v1/jobs", headers=api.client, json=routed)
    assert r.status_code == 201 and r.json()["job"]["cluster"] == "c2"
    r = await api.http.post("/v1/jobs", headers=api.client,
                            json={**routed, "cluster_labels": {"gpu": "a100"}})
    assert r.json()["job"]["cluster"] == "c1"
    r = await api.http.post("/v1/jobs", headers=api.client,
                            json={**routed, "cluster_labels": {"site": "mars"}})
    assert r.status_code == 400 and "no cluster has the labels site=mars" in r.json()["detail"]
    r = await api.http.post("/v1/jobs", headers=api.client, json={"command": ["true"]})
    assert r.status_code == 400 and "cluster_labels" in r.json()["detail"]


async def test_external_events_are_deduped_and_may_not_pose_as_bridgeheads(api: Api) -> None:
    body = {"type": "file.created", "subject": "/d/a.h5", "source": "watch", "id": "a-1",
            "data": {"size": 3}}
    first = await api.http.post("/v1/events", headers=api.client, json=body)
    again = await api.http.post("/v1/events", headers=api.client, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["seq"] == again.json()["seq"]
    for forged in ({"type": "bridgehead.job.finished"}, {"source": "bridgehead"},
                   {"source": "bridgehead.rules"}):
        refused = await api.http.post("/v1/events", headers=api.client,
                                      json={**body, "id": "a-2", **forged})
        assert refused.status_code == 400 and "may not pose" in refused.json()["detail"]
    bad_id = await api.http.post("/v1/events", headers=api.client,
                                 json={**body, "id": "$(rm -rf /)"})
    assert bad_id.status_code == 422


async def test_a_page_names_a_next_only_when_more_follows(api: Api) -> None:
    for _ in range(4):
        await api.http.post("/v1/jobs", headers=api.client, json=JOB)
    for _ in range(3):
        r = await api.http.post("/v1/workflows/runs", headers=api.client, json={"spec": FAN})
        assert r.status_code == 201, r.text

    async def pages(path: str, items: str, limit: int) -> list[int]:
        """The size of each page, following ``next`` until there is none."""
        sizes, after = [], None
        while True:
            params = {"limit": limit, **({"after": after} if after else {})}
            r = await api.http.get(path, headers=api.client, params=params)
            assert r.status_code == 200, r.text
            sizes.append(len(r.json()[items]))
            if (after := r.json()["next"]) is None:
                return sizes

    assert await pages("/v1/jobs", "jobs", 2) == [2, 2]  # no empty third page
    assert await pages("/v1/jobs", "jobs", 4) == [4]
    assert await pages("/v1/jobs", "jobs", 3) == [3, 1]
    assert await pages("/v1/workflows/runs", "runs", 3) == [3]
    assert await pages("/v1/workflows/runs", "runs", 1) == [1, 1, 1]
    assert await pages("/v1/workflows/runs", "runs", 1000) == [3]


FAN = """\
name: fan
params: {n: 2}
defaults: {cluster: c1}
steps:
  - {id: fan, foreach: {param: n}, command: [echo, "{{ item }}"]}
"""


async def test_a_retried_runs_durations_leave_out_its_wait_for_the_retry(api: Api) -> None:
    created = (await api.http.post("/v1/workflows/runs", headers=api.client,
                                   json={"spec": FAN})).json()
    run = await api.store.get_run(created["id"])
    failed = await api.store.apply_plan(run, Plan(state=RunState.FAILED, events=[
        run_event(replace(run, state=RunState.FAILED))]))  # as the planner ends a run
    assert failed is not None
    r = await api.http.post(f"/v1/workflows/runs/{run.id}/retry", headers=api.client,
                            json={"from_failed": True})
    assert r.status_code == 200, r.text
    retried = await api.store.get_run(run.id)
    [(ended, again)] = retried.idle
    assert ended - run.created_at <= r.json()["duration_s"] <= (
        time.time() - run.created_at - (again - ended))
    # One item ran in the 1 s before the run failed, the other in the 1 s after the retry.
    tasks = await api.store.run_tasks(run.id)
    done = [replace(t, state=TaskState.SUCCEEDED, started_at=at, finished_at=at + 1)
            for t, at in zip(tasks, (ended - 1, again), strict=True)]
    finished = await api.store.apply_plan(retried, Plan(tasks=done, state=RunState.SUCCEEDED))
    assert finished is not None and finished.finished_at is not None

    body = (await api.http.get(f"/v1/workflows/runs/{run.id}", headers=api.client)).json()
    [step] = body["steps"]
    assert step["duration_s"] == pytest.approx(2, abs=1e-5)  # not 2 s + the wait
    wall = finished.finished_at - run.created_at
    assert body["duration_s"] == pytest.approx(wall - (again - ended), abs=1e-5)
    [listed] = (await api.http.get("/v1/workflows/runs", headers=api.client)).json()["runs"]
    assert listed["duration_s"] == body["duration_s"]
