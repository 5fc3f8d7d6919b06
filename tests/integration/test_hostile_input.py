"""Hostile and malformed input at the edge, on real stores: text that cannot be stored and
served back (unpaired surrogates, NUL), nesting deeper than any real request, integers past
64 bits, bad base64, oversized chunked bodies and re-used idempotency keys get a 4xx naming
the field; and a row that got in anyway (stored before these checks) never breaks a listing,
a claim, an adoption or the event log for anyone else."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.runs import Run, new_run_id
from bridgehead.server.app import create_app
from tests.integration.test_api import Api, api, bearer  # noqa: F401 - the fixture


@pytest.fixture
def bh(api: Api) -> Api:  # noqa: F811 - the fixture imported above
    return api


def raw(text: str) -> bytes:
    """A JSON body written by hand: the escapes reach the server as sent."""
    return text.encode()


@pytest.mark.parametrize("body, where", [
    ('{"cluster": "c1", "command": ["/bin/echo", "\\ud800"]}', "command[1]"),
    ('{"cluster": "c1", "command": ["x"], "env": {"A": "a\\u0000b"}}', "env.A"),
    ('{"cluster": "c1", "command": ["x"], "labels": {"\\udfff": "v"}}', "labels"),
    ('{"cluster": "c1", "command": ["x"], "name": "\\ude00\\ud83d"}', "name"),
])
async def test_unstorable_text_is_refused_naming_the_field(bh: Api, body: str,
                                                           where: str) -> None:
    r = await bh.http.post("/v1/jobs", headers={**bh.client, "content-type":
                                                "application/json"}, content=raw(body))
    assert r.status_code == 400, r.text
    assert where in r.json()["detail"], r.json()
    assert (await bh.http.get("/v1/jobs", headers=bh.admin)).json()["jobs"] == []


@pytest.mark.parametrize("path, body, where", [
    ("/v1/jobs", '{"cluster": "c1", "command": ["x"], "name": "a\\u0000b"}', "name"),
    ("/v1/jobs", '{"cluster": "c1", "command": ["x"], "labels": {"k\\u0000": "v"}}', "labels"),
    ("/v1/jobs", '{"cluster": "c1", "command": ["x"], "labels": {"k": "v\\u0000"}}', "labels.k"),
    ("/v1/events", '{"type": "x.y", "subject": "s", "data": {"p": ["\\u0000"]}}', "data.p[0]"),
    ("/v1/events", '{"type": "x.y", "subject": "s", "data": {"\\u0000": 1}}', "data"),
])
async def test_nul_is_refused_naming_the_field(bh: Api, path: str, body: str,
                                               where: str) -> None:
    r = await bh.http.post(path, headers={**bh.client, "content-type": "application/json"},
                           content=raw(body))
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert where in detail and "NUL" in detail, detail
    assert (await bh.http.get("/v1/jobs", headers=bh.admin)).json()["jobs"] == []
    assert [e for e in (await bh.http.get("/v1/events", headers=bh.admin)).json()["events"]
            if e["type"] == "x.y"] == []


async def test_a_surrogate_pair_is_text_and_round_trips(bh: Api) -> None:
    body = '{"cluster": "c1", "command": ["/bin/echo", "\\ud83d\\ude00 ok"]}'
    r = await bh.http.post("/v1/jobs", headers={**bh.client, "content-type":
                                                "application/json"}, content=raw(body))
    assert r.status_code == 201, r.text
    assert r.json()["job"]["spec"]["command"][1] == "\U0001F600 ok"


async def test_deep_event_data_is_refused_and_ordinary_data_is_not(bh: Api) -> None:
    deep: dict[str, object] = {}
    for _ in range(900):
        deep = {"a": deep}
    r = await bh.http.post("/v1/events", headers=bh.client,
                           json={"type": "x.y", "subject": "s", "data": deep})
    assert r.status_code == 400 and "deeper than 32" in r.json()["detail"], r.text
    nested: dict[str, object] = {"leaf": 1}
    for _ in range(10):
        nested = {"a": nested}
    r = await bh.http.post("/v1/events", headers=bh.client,
                           json={"type": "x.y", "subject": "s", "data": nested})
    assert r.status_code == 201, r.text
    page = (await bh.http.get("/v1/events", headers=bh.admin)).json()
    assert page["events"][-1]["data"] == nested


async def test_rows_stored_before_the_checks_never_break_reads(bh: Api) -> None:
    poison = JobSpec(cluster="c1", tenant="tenA", command=("/bin/echo", "\ud800"),
                     labels={"k": "\udfff"})
    good = JobSpec(cluster="c1", tenant="tenB", command=("/bin/echo", "fine"))
    [bad_job, good_job] = [r.job for r in await bh.store.submit([poison, good])]
    await bh.store.append_events([Event(type="x.y", subject="s", data={"t": "\ud800"})])
    listed = await bh.http.get("/v1/jobs", headers=bh.admin)
    assert listed.status_code == 200, listed.text
    ids = [j["id"] for j in listed.json()["jobs"]]
    assert ids == [bad_job.id, good_job.id]
    one = await bh.http.get(f"/v1/jobs/{bad_job.id}", headers=bh.admin)
    assert one.status_code == 200 and one.json()["spec"]["command"][1] == "\ufffd"
    _, secret = await bh.store.create_token(name="tenA", role=Role.CLIENT, cluster=None,
                                            tenant="tenA")
    mine = await bh.http.get("/v1/jobs", headers=bearer(secret))  # the bad job's own tenant
    assert mine.status_code == 200, mine.text
    [shown] = mine.json()["jobs"]
    assert shown["id"] == bad_job.id and shown["spec"]["labels"] == {"k": "\ufffd"}
    claimed = await bh.http.post("/v1/agent/claim", headers=bh.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "max_jobs": 10})
    assert claimed.status_code == 200, claimed.text
    assert {j["id"] for j in claimed.json()["jobs"]} == {bad_job.id, good_job.id}
    adopted = await bh.http.post("/v1/agent/adopt", headers=bh.agent_c1,
                                 json={"cluster": "c1", "agent_id": "a1"})
    assert adopted.status_code == 200, adopted.text
    again = {j["id"]: j for j in adopted.json()["jobs"]}
    assert set(again) == {bad_job.id, good_job.id}  # an agent restart takes both back
    assert again[bad_job.id]["spec"]["command"] == ["/bin/echo", "\ufffd"]
    events = await bh.http.get("/v1/events", headers=bh.admin)
    assert events.status_code == 200, events.text
    [logged] = [e for e in events.json()["events"] if e["type"] == "x.y"]
    assert logged["data"] == {"t": "\ufffd"}


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        data = {"a": data}
    return data


async def test_stored_deep_and_surrogate_events_never_break_the_event_log(bh: Api) -> None:
    """A 900-deep event and one holding unpaired surrogates, stored before the checks, are
    read back (cut, and with U+FFFD) through ``GET /v1/events`` and the SSE stream; the
    events around them are intact."""
    await bh.store.append_events([
        Event(type="x.before", subject="s", data={"n": 1}),
        Event(type="x.deep", subject="s", data=nested(900)),
        Event(type="x.bad", subject="s", data={"t\udfff": ["\ud800"]}),
        Event(type="x.after", subject="s", data={"n": 2})])
    r = await bh.http.get("/v1/events", headers=bh.admin)
    assert r.status_code == 200, r.text
    _read_back(r.json()["events"])
    app = create_app(ServerSettings.load(store="sqlite:///unused.db"), bh.store)
    sent = await sse_until(app, bh.admin, "x.after")
    _read_back([json.loads(line[6:]) for line in sent.splitlines()
                if line.startswith("data: ")])


def _read_back(events: list[dict[str, Any]]) -> None:
    assert [e["type"] for e in events] == ["x.before", "x.deep", "x.bad", "x.after"]
    before, deep, bad, after = (e["data"] for e in events)
    assert (before, after) == ({"n": 1}, {"n": 2})
    depth = 0
    while isinstance(deep, dict) and "a" in deep:
        deep, depth = deep["a"], depth + 1
    assert depth > 32 and deep in ({"leaf": 1}, "…")  # served: whole or cut, never a 500
    assert bad == {"t\ufffd": ["\ufffd"]}


async def sse_until(app: ASGIApp, headers: dict[str, str], last_type: str) -> str:
    """What ``GET /v1/events/stream`` sends until an event of ``last_type`` (the answer never
    ends by itself, so it is read straight from the app, which is then cancelled)."""
    sent: list[bytes] = []
    done = asyncio.Event()
    status: list[int] = []

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client never leaves: the task is cancelled
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            sent.append(message.get("body", b""))
            if f"event: {last_type}\n".encode() in b"".join(sent):
                done.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/v1/events/stream",
             "raw_path": b"/v1/events/stream", "root_path": "", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 1), "server": ("bh", 80)}
    task = asyncio.create_task(app(scope, receive, send))
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert status == [200]
    return b"".join(sent).decode()


async def test_rows_stored_before_the_checks_never_break_a_page(bh: Api) -> None:
    """The web UI shows a job, a run and an event holding unpaired surrogates (stored before
    the checks) with U+FFFD, and the other rows as they are."""
    [bad_job, good_job] = [r.job for r in await bh.store.submit([
        JobSpec(cluster="c1", name="n\udfff", command=("/bin/echo", "\ud800"),
                labels={"k": "v\udfff"}),
        JobSpec(cluster="c1", name="fine-job", command=("/bin/echo", "fine"))])]
    flow = "name: flow\nparams: {who: x}\ndefaults: {cluster: c1}\nsteps:\n  - id: a\n" \
           "    command: [echo, a]\n"
    run, _ = await bh.store.create_run(Run(
        id=new_run_id(), workflow="flow", spec_text=flow, filename="flow.yaml",
        params={"who": "\udfff", "deep": nested(900)}), [])
    await bh.store.append_events([Event(type="x.bad", subject="s", data={"t": "\ud800"}),
                                  Event(type="x.fine", subject="fine-event")])
    admin = bh.admin["Authorization"].removeprefix("Bearer ")
    r = await bh.http.post("/ui/login", data={"token": admin}, headers={"Origin": "http://bh"})
    assert r.status_code == 303, r.text
    for path, shown in (("/ui/jobs", ("n\ufffd", "fine-job", good_job.id)),
                        (f"/ui/jobs/{bad_job.id}", ("n\ufffd", "v\ufffd")),
                        (f"/ui/jobs/{good_job.id}", ("fine-job",)),
                        ("/ui/runs", (run.id,)),
                        (f"/ui/runs/{run.id}", ("who: \ufffd", "deep:")),
                        ("/ui/events", ("x.bad", "fine-event")),
                        ("/ui", ())):
        page = await bh.http.get(path)
        assert page.status_code == 200, (path, page.text[-2000:])
        for text in shown:
            assert text in page.text, (path, text)


async def test_a_stored_label_never_breaks_the_costs(bh: Api) -> None:
    """Costs roll up by labels (a workflow's name, a dag_id): one holding an unpaired surrogate
    (stored before the checks) shows as U+FFFD in ``GET /v1/costs``, the costs page and its
    CSV, beside the other rows."""
    app = create_app(ServerSettings.load(store="sqlite:///unused.db",
                                         prices={"c1": {"core_hour": 1.0}}), bh.store)
    jobs = [r.job for r in await bh.store.submit([
        JobSpec(cluster="c1", command=("x",), labels={"workflow": f"w{i}"}) for i in "\udfff1"])]
    admin = bh.admin["Authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bh") as http:
        claimed = await http.post("/v1/agent/claim", headers=bh.agent_c1, json={
            "cluster": "c1", "agent_id": "a1", "max_jobs": 10})
        assert len(claimed.json()["jobs"]) == 2, claimed.text
        for job in jobs:
            await _play_to_success(http, bh, job.id)
        r = await http.get("/v1/costs", headers=bh.admin, params={"by": "workflow"})
        assert r.status_code == 200, r.text
        assert sorted(row["group"] for row in r.json()["rows"]) == ["w1", "w\ufffd"]
        r = await http.post("/ui/login", data={"token": admin}, headers={"Origin": "http://bh"})
        assert r.status_code == 303, r.text
        for path in ("/ui/costs?by=workflow", "/ui/costs.csv?by=workflow"):
            page = await http.get(path)
            assert page.status_code == 200, (path, page.text[-2000:])
            assert "w\ufffd" in page.text and "w1" in page.text, path


async def _play_to_success(http: httpx.AsyncClient, bh: Api, job_id: str) -> None:
    end = time.time()
    for t in ({"state": "submitting"}, {"state": "submitted", "native_id": "n"},
              {"state": "running", "at": end - 3600},
              {"state": "succeeded", "at": end, "exit_code": 0}):
        r = await http.post("/v1/agent/report", headers=bh.agent_c1, json={
            "cluster": "c1", "agent_id": "a1", "transitions": [{"job_id": job_id, **t}]})
        assert r.status_code == 200 and r.json()["applied"] == [True], r.text


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/events?after=9223372036854775808", None),
    ("GET", "/v1/jobs/x/logs?offset=9223372036854775808", None),
    ("GET", "/v1/jobs/x/wait?after_version=9223372036854775808&timeout=0", None),
    ("POST", "/v1/agent/report", {"cluster": "c1", "agent_id": "a1", "logs": [
        {"job_id": "x", "stream": "stdout", "pos": 1 << 63, "data": ""}]}),
    ("POST", "/v1/agent/report", {"cluster": "c1", "agent_id": "a1", "transitions": [
        {"job_id": "x", "state": "failed", "exit_code": 1 << 40}]}),
])
async def test_integers_past_64_bits_are_refused(bh: Api, method: str, path: str,
                                                 body: dict | None) -> None:
    r = await bh.http.request(method, path, headers=bh.admin, json=body)
    assert r.status_code == 422, r.text


async def test_non_ascii_base64_is_a_400(bh: Api) -> None:
    [job] = [r.job for r in await bh.store.submit([JobSpec(cluster="c1", command=("x",))])]
    r = await bh.http.post("/v1/agent/report", headers=bh.agent_c1, json={
        "cluster": "c1", "agent_id": "a1",
        "logs": [{"job_id": job.id, "stream": "stdout", "pos": 0, "data": "é"}]})
    assert r.status_code == 400 and "base64" in r.json()["detail"], r.text


async def test_an_oversized_chunked_body_is_a_413(bh: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"cluster": "c1", "command": ["'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"]}'

    r = await bh.http.post("/v1/jobs", headers={**bh.client, "content-type":
                                                "application/json"}, content=chunks())
    assert r.status_code == 413 and "larger than" in r.json()["detail"], r.text


async def test_a_reused_idempotency_key_with_another_body_is_a_409(bh: Api) -> None:
    first = {"cluster": "c1", "command": ["echo", "1"], "idempotency_key": "k1"}
    r1 = await bh.http.post("/v1/jobs", headers=bh.client, json=first)
    again = await bh.http.post("/v1/jobs", headers=bh.client, json=first)
    assert (r1.status_code, again.status_code) == (201, 200)
    assert again.json()["job"]["id"] == r1.json()["job"]["id"]
    other = await bh.http.post("/v1/jobs", headers=bh.client,
                               json={**first, "command": ["echo", "2"]})
    assert other.status_code == 409 and "'k1'" in other.json()["detail"], other.text
    batch = await bh.http.post("/v1/jobs/batch", headers=bh.client, json={"jobs": [
        {"cluster": "c1", "command": ["new"]}, {**first, "command": ["echo", "3"]}]})
    assert batch.status_code == 409, batch.text
    listed = (await bh.http.get("/v1/jobs", headers=bh.admin)).json()["jobs"]
    assert [j["spec"]["command"] for j in listed] == [["echo", "1"]]  # all or nothing
    flow = "name: f\nparams: {n: 1}\ndefaults: {cluster: c1}\nsteps:\n  - id: a\n    command: [x]\n"
    run = {"spec": flow, "params": {"n": 1}, "idempotency_key": "r1"}
    assert (await bh.http.post("/v1/workflows/runs", headers=bh.client,
                               json=run)).status_code == 201
    assert (await bh.http.post("/v1/workflows/runs", headers=bh.client,
                               json=run)).status_code == 200
    changed = await bh.http.post("/v1/workflows/runs", headers=bh.client,
                                 json={**run, "params": {"n": 2}})
    assert changed.status_code == 409 and "'r1'" in changed.json()["detail"], changed.text


async def test_reserved_event_types_in_any_case(bh: Api) -> None:
    for kind in ("Bridgehead.job.finished", "BRIDGEHEAD.workflow.succeeded"):
        r = await bh.http.post("/v1/events", headers=bh.client,
                               json={"type": kind, "subject": "jobs/x"})
        assert r.status_code == 400, (kind, r.text)


async def test_fields_are_capped_and_event_pages_by_size(bh: Api) -> None:
    app = create_app(ServerSettings.load(store="sqlite:///unused.db"), bh.store)  # 8 MiB bodies
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bh") as http:
        await _capped(replace(bh, http=http))


async def _capped(bh: Api) -> None:
    word = "x" * ((128 << 10) + 1)
    for body, where in (({"command": ["echo", word]}, "command[1]"),
                        ({"command": ["x"], "env": {"BIG": word}}, "env BIG")):
        r = await bh.http.post("/v1/jobs", headers=bh.client, json={"cluster": "c1", **body})
        assert r.status_code == 400 and where in r.json()["detail"], r.text
    r = await bh.http.post("/v1/events", headers=bh.client, json={
        "type": "x.y", "subject": "s", "data": {"blob": "y" * (64 << 10)}})
    assert r.status_code == 400 and "larger than" in r.json()["detail"], r.text
    for i in range(80):  # 80 x 60 KiB: more than one 4 MiB page
        r = await bh.http.post("/v1/events", headers=bh.client, json={
            "type": "x.y", "subject": f"s{i}", "data": {"blob": "y" * (60 << 10)}})
        assert r.status_code == 201, r.text
    seen, after, pages = [], 0, 0
    while True:
        page = (await bh.http.get("/v1/events", headers=bh.admin,
                                  params={"after": after, "limit": 1000})).json()
        if not page["events"]:
            break
        pages += 1
        assert len(str(page)) < (5 << 20)
        seen += [e["subject"] for e in page["events"]]
        after = page["next"]
    assert seen == [f"s{i}" for i in range(80)] and pages >= 2
