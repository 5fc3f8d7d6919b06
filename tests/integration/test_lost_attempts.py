"""An attempt the infrastructure lost (the backend knows its node, worker or cluster died)
queues its job again for exactly one new attempt, up to ``[server] max_lost_attempts``; a job
merely missing from the scheduler, one being cancelled, or a repeated report never does.
The new attempt's log goes on after the lost one's. Real stores, through the API."""

from __future__ import annotations

import base64

from bridgehead.domain.jobs import attempt_tag
from tests.integration.test_api import JOB, Api, api, claim, report  # noqa: F401 - fixture


async def lost(api: Api, job_id: str, **more: object) -> list[bool]:  # noqa: F811
    r = await report(api, {"job_id": job_id, "state": "lost", "reason": "worker w1 died",
                           "infrastructure": True, **more})
    assert r.status_code == 200, r.text
    return r.json()["applied"]


async def running(api: Api, job_id: str, native: str) -> None:  # noqa: F811
    for t in ({"job_id": job_id, "state": "submitting"},
              {"job_id": job_id, "state": "submitted", "native_id": native},
              {"job_id": job_id, "state": "running"}):
        r = await report(api, t)
        assert r.json()["applied"] == [True], (t, r.text)


async def log(api: Api, job_id: str, pos: int, data: bytes) -> None:  # noqa: F811
    r = await api.http.post("/v1/agent/report", headers=api.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "logs": [
            {"job_id": job_id, "stream": "stdout", "pos": pos,
             "data": base64.b64encode(data).decode()}]})
    assert r.status_code == 200, r.text


async def job_of(api: Api, job_id: str) -> dict:  # noqa: F811
    r = await api.http.get(f"/v1/jobs/{job_id}", headers=api.client)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_lost_attempt_gets_one_new_attempt_whose_log_follows(api: Api) -> None:  # noqa: F811
    job_id = (await api.http.post("/v1/jobs", headers=api.client, json=JOB)).json()["job"]["id"]
    [first] = (await claim(api)).json()["jobs"]
    assert first["attempt"] == 1 and first["log_base"] is None
    await running(api, job_id, "n1")
    await log(api, job_id, 0, b"first try\n")
    assert await lost(api, job_id) == [True]
    job = await job_of(api, job_id)
    assert (job["state"], job["attempt"], job["native_id"], job["agent_id"]) == (
        "queued", 2, None, None)
    assert job["reason"] == "attempt 1 lost: worker w1 died; queued for attempt 2"
    assert await lost(api, job_id) == [False]  # the same report again: no second new attempt
    assert (await job_of(api, job_id))["attempt"] == 2
    [second] = (await claim(api)).json()["jobs"]
    marker = b"\n[bridgehead] attempt 1 was lost: worker w1 died; attempt 2 follows\n"
    assert second["attempt"] == 2
    assert second["log_base"] == {"stdout": 10 + len(marker), "stderr": len(marker)}
    await running(api, job_id, "n2")
    await log(api, job_id, second["log_base"]["stdout"], b"second try\n")
    assert (await report(api, {"job_id": job_id, "state": "succeeded", "exit_code": 0})
            ).json()["applied"] == [True]
    text = (await api.http.get(f"/v1/jobs/{job_id}/logs", headers=api.client)).content
    assert text == b"first try\n" + marker + b"second try\n"
    events = (await api.http.get("/v1/events", headers=api.client,
                                 params={"after": 0, "limit": 100})).json()["events"]
    queued = [e["data"] for e in events if e["subject"] == f"jobs/{job_id}"
              and e["data"]["state"] == "queued"]
    assert [q["attempt"] for q in queued] == [1, 2]
    assert attempt_tag(job_id, 1) == job_id and attempt_tag(job_id, 2) == f"{job_id}.a2"


async def test_lost_attempts_stop_at_the_cap_and_say_so(api: Api) -> None:  # noqa: F811
    job_id = (await api.http.post("/v1/jobs", headers=api.client, json=JOB)).json()["job"]["id"]
    for attempt in (1, 2, 3, 4):  # max_lost_attempts is 3 by default
        [job] = (await claim(api)).json()["jobs"]
        assert job["attempt"] == attempt
        await running(api, job_id, f"n{attempt}")
        assert await lost(api, job_id) == [True]
    job = await job_of(api, job_id)
    assert (job["state"], job["attempt"]) == ("lost", 4)
    assert job["reason"] == ("worker w1 died (no new attempt: 4 attempts lost, [server] "
                             "max_lost_attempts is 3)")


async def test_missing_or_cancelled_jobs_are_never_run_again(api: Api) -> None:  # noqa: F811
    plain = (await api.http.post("/v1/jobs", headers=api.client, json=JOB)).json()["job"]["id"]
    cancelled = (await api.http.post("/v1/jobs", headers=api.client, json=JOB)).json()["job"]["id"]
    assert len((await claim(api)).json()["jobs"]) == 2
    await running(api, plain, "n1")
    await running(api, cancelled, "n2")
    # missing from the scheduler: it may have run, so it is never run again
    r = await report(api, {"job_id": plain, "state": "lost",
                           "reason": "the scheduler no longer knows this job"})
    assert r.json()["applied"] == [True]
    assert (await api.http.post(f"/v1/jobs/{cancelled}/cancel", headers=api.client)
            ).status_code == 200
    assert await lost(api, cancelled) == [True]
    for job_id in (plain, cancelled):
        job = await job_of(api, job_id)
        assert (job["state"], job["attempt"]) == ("lost", 1), job


async def test_only_the_agent_holding_the_job_can_lose_its_attempt(api: Api) -> None:  # noqa: F811
    job_id = (await api.http.post("/v1/jobs", headers=api.client, json=JOB)).json()["job"]["id"]
    await claim(api)
    await running(api, job_id, "n1")
    r = await api.http.post("/v1/agent/report", headers=api.agent_c1, json={
        "cluster": "c1", "agent_id": "someone-else", "transitions": [
            {"job_id": job_id, "state": "lost", "infrastructure": True}]})
    assert r.json()["applied"] == [False]
    assert (await job_of(api, job_id))["state"] == "running"
    r = await report(api, {"job_id": job_id, "state": "lost", "infrastructure": "yes"})
    assert r.status_code == 422  # strict: a flag, not a word
