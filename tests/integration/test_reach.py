"""Who reaches what: an agent id reaches only its own cluster's jobs (an agent token of
another cluster that sends it, as GET /v1/clusters shows it, moves no lease and sees no
cancel); /metrics is for admins; the embedded SQLite file is its owner's alone; cluster,
tenant and agent names are names; the last admin token stays."""

from __future__ import annotations

import pytest

from bridgehead.domain.jobs import JobSpec
from tests.integration.test_api import Api, api  # noqa: F401 - the fixture


@pytest.fixture
def bh(api: Api) -> Api:  # noqa: F811 - the fixture imported above
    return api


async def test_another_clusters_token_cannot_act_with_this_agents_id(bh: Api) -> None:
    [job] = [r.job for r in await bh.store.submit([JobSpec(cluster="c1", command=("x",))])]
    claimed = await bh.http.post("/v1/agent/claim", headers=bh.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "max_jobs": 1})
    assert [j["id"] for j in claimed.json()["jobs"]] == [job.id]
    for state in ("submitting", "submitted"):
        r = await bh.http.post("/v1/agent/report", headers=bh.agent_c1, json={
            "cluster": "c1", "agent_id": "a1",
            "transitions": [{"job_id": job.id, "state": state, "native_id": "n1"}]})
        assert r.json()["applied"] == [True], r.text
    before = await bh.store.get(job.id)
    await bh.http.post(f"/v1/jobs/{job.id}/cancel", headers=bh.client)
    # agent of c2 poses with c1's agent id, on its own cluster
    r = await bh.http.post("/v1/agent/heartbeat", headers=bh.agent_c2,
                           json={"cluster": "c2", "agent_id": "a1", "backend": "local"})
    assert r.status_code == 200
    r = await bh.http.post("/v1/agent/claim", headers=bh.agent_c2,
                           json={"cluster": "c2", "agent_id": "a1", "max_jobs": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["jobs"], r.json()["cancel"], r.json()["poll"]) == ([], [], False), r.text
    after = await bh.store.get(job.id)
    assert after.agent_id == "a1" and before.lease_expires_at is not None
    assert after.lease_expires_at == before.lease_expires_at  # not renewed by the impostor
    r = await bh.http.post("/v1/agent/claim", headers=bh.agent_c1,
                           json={"cluster": "c1", "agent_id": "a1", "max_jobs": 1})
    assert r.json()["cancel"] == [job.id]  # its own agent still sees the cancel


async def test_metrics_are_for_admins_only(bh: Api) -> None:
    for who in (bh.client, bh.agent_c1):
        r = await bh.http.get("/metrics", headers=who)
        assert r.status_code == 403, r.text
    assert (await bh.http.get("/metrics", headers=bh.admin)).status_code == 200


async def test_the_embedded_store_file_is_the_owners_alone(tmp_path: object) -> None:
    import stat
    from pathlib import Path

    from bridgehead.store import create_store

    path = Path(str(tmp_path)) / "bh.db"
    store = create_store(f"sqlite:///{path}")
    await store.open()
    await store.submit([JobSpec(cluster="c1", command=("x",))])
    await store.close()
    for f in path.parent.glob("bh.db*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


@pytest.mark.parametrize("path, body", [
    ("/v1/tokens", {"name": "t", "role": "client", "tenant": ""}),
    ("/v1/tokens", {"name": "t", "role": "agent", "cluster": "../x y"}),
    ("/v1/agent/heartbeat", {"cluster": "../x y", "agent_id": "a1"}),
    ("/v1/agent/claim", {"cluster": "c1", "agent_id": "a b"}),
    ("/v1/workflows/runs", {"spec": "name: f", "tenant": ""}),
])
async def test_names_are_validated(bh: Api, path: str, body: dict) -> None:
    r = await bh.http.post(path, headers=bh.admin, json=body)
    assert r.status_code == 422, r.text


async def test_the_last_admin_token_cannot_be_revoked(bh: Api) -> None:
    [admin] = [t for t in (await bh.http.get("/v1/tokens", headers=bh.admin)).json()
               if t["role"] == "admin"]
    r = await bh.http.delete(f"/v1/tokens/{admin['id']}", headers=bh.admin)
    assert r.status_code == 409 and "last admin token" in r.json()["detail"], r.text
    other = await bh.http.post("/v1/tokens", headers=bh.admin,
                               json={"name": "ops2", "role": "admin"})
    assert other.status_code == 201
    assert (await bh.http.delete(f"/v1/tokens/{admin['id']}",
                                 headers=bh.admin)).status_code == 204
