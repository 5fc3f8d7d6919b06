"""A log with a gap (bytes never stored before bytes that were: chunks lost with an agent's
state) stays readable to its end by a sequential reader: the answer at the gap holds the
bytes after it, ``X-Log-Gap`` says how many were skipped, and a follower never waits on the
gap. Chunks sent again (an agent's outbox retrying) change nothing. Real stores."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from bridgehead.client import AsyncClient
from tests.integration.test_api import JOB, Api, api, claim  # noqa: F401 - the fixture


async def send(bh: Api, job_id: str, *chunks: tuple[int, bytes]) -> None:
    logs = [{"job_id": job_id, "stream": "stdout", "pos": pos,
             "data": base64.b64encode(data).decode()} for pos, data in chunks]
    r = await bh.http.post("/v1/agent/report", headers=bh.agent_c1,
                            json={"cluster": "c1", "agent_id": "a1", "logs": logs})
    assert r.status_code == 200, r.text


async def read(bh: Api, job_id: str, offset: int, **params: object) -> httpx.Response:
    r = await bh.http.get(f"/v1/jobs/{job_id}/logs", headers=bh.client,
                           params={"offset": offset, **params})
    assert r.status_code == 200, r.text
    return r


async def test_a_sequential_reader_reads_past_a_gap_and_is_told_its_size(
        api: Api) -> None:  # noqa: F811
    await api.http.post("/v1/jobs", headers=api.client, json=JOB)
    [job] = (await claim(api)).json()["jobs"]
    await send(api, job["id"], (0, b"one\n"))
    await send(api, job["id"], (10, b"three\n"), (16, b"four\n"))  # 4..10 never came
    await send(api, job["id"], (0, b"one\n"), (10, b"three\n"))  # a retry: no change
    first = await read(api, job["id"], 0)
    assert first.content == b"one\n" and first.headers["x-next-offset"] == "4"
    assert "x-log-gap" not in first.headers
    after = await read(api, job["id"], 4, wait=30)  # not held until the wait ends
    assert after.content == b"three\nfour\n" and after.headers["x-log-gap"] == "6"
    assert after.headers["x-next-offset"] == "21"
    inside = await read(api, job["id"], 7)  # an offset inside the gap: the rest of it
    assert inside.content == b"three\nfour\n" and inside.headers["x-log-gap"] == "3"
    end = await read(api, job["id"], 21)
    assert end.content == b"" and end.headers["x-next-offset"] == "21"
    assert "x-log-gap" not in end.headers
    assert await api.store.read_log_span(job["id"], "stdout", 4, 100) == (10, b"three\nfour\n")
    assert await api.store.read_logs(job["id"], "stdout", 4, 100) == b""  # contiguous only


async def test_the_sdk_reads_every_stored_byte_and_warns_of_the_gap(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    await api.http.post("/v1/jobs", headers=api.client, json=JOB)
    [job] = (await claim(api)).json()["jobs"]
    await send(api, job["id"], (0, b"a\n"), (5, b"b\n"))
    token = api.client["Authorization"].removeprefix("Bearer ")
    async with AsyncClient("http://bh", token, transport=api.http._transport) as bh:
        out, offset = b"", 0
        with caplog.at_level(logging.WARNING, logger="bridgehead.client.core"):
            while True:
                data, offset, _ = await bh.read_logs(job["id"], offset=offset)
                if not data:
                    break
                out += data
    assert out == b"a\nb\n" and offset == 7
    warnings = [r.getMessage() for r in caplog.records if r.name == "bridgehead.client.core"]
    assert len(warnings) == 1, [(r.name, r.getMessage()) for r in caplog.records]
    [warning] = warnings
    assert job["id"] in warning and "3 bytes" in warning and "offset 2" in warning
