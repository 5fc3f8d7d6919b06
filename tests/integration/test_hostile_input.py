"""Hostile and malformed input at the edge, on real stores: text that cannot be stored and
served back (unpaired surrogates, NUL), nesting deeper than any real request, integers past
64 bits, bad base64, oversized chunked bodies and re-used idempotency keys get a 4xx naming
the field; and a row that got in anyway (stored before these checks) never breaks a listing,
a claim, an adoption or the event log for anyone else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import JobSpec
from bridgehead.server.app import create_app
from tests.integration.test_api import Api, api  # noqa: F401 - the fixture


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
    claimed = await bh.http.post("/v1/agent/claim", headers=bh.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "max_jobs": 10})
    assert claimed.status_code == 200, claimed.text
    assert {j["id"] for j in claimed.json()["jobs"]} == {bad_job.id, good_job.id}
    adopted = await bh.http.post("/v1/agent/adopt", headers=bh.agent_c1,
                                 json={"cluster": "c1", "agent_id": "a1"})
    assert adopted.status_code == 200, adopted.text
    events = await bh.http.get("/v1/events", headers=bh.admin)
    assert events.status_code == 200, events.text
    [logged] = [e for e in events.json()["events"] if e["type"] == "x.y"]
    assert logged["data"] == {"t": "\ufffd"}


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
