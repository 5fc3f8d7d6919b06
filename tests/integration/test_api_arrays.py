"""Job arrays through the HTTP API (SQLite and PostgreSQL): submit with ``array``, the parent
and its elements in JobOut, ``GET /v1/jobs?parent=``, and what is refused."""

from __future__ import annotations

# ruff: noqa: F811  (the api fixture is imported, then named by the tests)
from tests.integration.test_api import Api, api, claim  # noqa: F401

ARRAY = {"cluster": "c1", "script": "#!/bin/sh\necho $SLURM_ARRAY_TASK_ID\n", "array": "0-4%2"}


async def heartbeat(api: Api, backend: str) -> None:
    r = await api.http.post("/v1/agent/heartbeat", headers=api.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "backend": backend})
    assert r.status_code in (200, 204), r.text


async def test_an_array_job_is_a_parent_with_one_job_per_element(api: Api) -> None:
    await heartbeat(api, "slurm_cli")
    r = await api.http.post("/v1/jobs", headers=api.client, json=ARRAY)
    assert r.status_code == 201, r.text
    parent = r.json()["job"]
    assert parent["elements"] == 5 and parent["parent_id"] is None
    assert parent["spec"]["array"] == "0-4%2"
    page = (await api.http.get("/v1/jobs", headers=api.client,
                               params={"parent": parent["id"]})).json()
    assert [(j["id"], j["parent_id"], j["array_index"]) for j in page["jobs"]] == [
        (f"{parent['id']}_{i}", parent["id"], i) for i in range(5)]
    claimed = (await claim(api)).json()["jobs"]
    assert [j["id"] for j in claimed] == [parent["id"]]  # never an element
    element = (await api.http.get(f"/v1/jobs/{parent['id']}_3", headers=api.client)).json()
    assert element["state"] == "queued" and element["array_index"] == 3


async def test_both_slurm_backends_take_an_array(api: Api) -> None:
    for backend in ("slurm_rest", "slurm_cli"):
        await heartbeat(api, backend)
        r = await api.http.post("/v1/jobs", headers=api.client, json=ARRAY)
        assert r.status_code == 201, (backend, r.text)
        assert r.json()["job"]["elements"] == 5


async def test_a_bad_array_is_400_naming_it(api: Api) -> None:
    for bad in ("5-1", "0-99%0", "a-b", "0-20000"):
        r = await api.http.post("/v1/jobs", headers=api.client, json={**ARRAY, "array": bad})
        assert r.status_code in (400, 422) and "array" in r.text, (bad, r.text)


async def test_an_array_for_a_cluster_that_cannot_run_arrays_is_400(api: Api) -> None:
    await heartbeat(api, "livy")
    r = await api.http.post("/v1/jobs", headers=api.client, json=ARRAY)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "array" in detail and "livy" in detail
    assert "these do: local, slurm_cli, slurm_rest" in detail
    r = await api.http.post("/v1/jobs", headers=api.client,
                            json={k: v for k, v in ARRAY.items() if k != "array"})
    assert r.status_code == 201
