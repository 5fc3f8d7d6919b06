"""The cost ledger and GET /v1/costs on real stores: every attempt that ran is a row (a lost
attempt and its new attempt are two), priced by its cluster's [server.prices] over its exact
start and end; roll-ups by DAG, workflow run, tenant and cluster add up to the same total;
waste is what lost and failed attempts cost; an unpriced cluster is named; a tenant's client
sees its own costs only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.errors import ConfigError
from bridgehead.server.app import create_app
from bridgehead.store import create_store
from tests.integration.test_api import Api, bearer

T0 = 1_700_006_400.0  # a UTC midnight
HOUR = 3600.0


@pytest.fixture
async def bh(store_dsn: str) -> AsyncIterator[Api]:
    store = create_store(store_dsn)
    await store.open()
    settings = ServerSettings.load(store=store_dsn, prices={
        "c1": {"core_hour": 0.5, "node_hour": 1.0}})
    app = create_app(settings, store)
    tokens = {}
    for name, role, cluster, tenant in (
            ("admin", Role.ADMIN, None, None), ("client", Role.CLIENT, None, "tenA"),
            ("agent_c1", Role.AGENT, "c1", None), ("agent_c2", Role.AGENT, "c2", None)):
        _, secret = await store.create_token(name=name, role=role, cluster=cluster,
                                             tenant=tenant)
        tokens[name] = bearer(secret)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bh") as http:
        yield Api(http=http, store=store, **tokens)
    await store.close()


async def run(bh: Api, cluster: str, body: dict, *spans: tuple[float, float, str]) -> str:
    """Submit a job and play its attempts: (start, end, how it ended) each."""
    agent = bh.agent_c1 if cluster == "c1" else bh.agent_c2
    r = await bh.http.post("/v1/jobs", headers=bh.admin, json={"cluster": cluster, **body})
    job_id = r.json()["job"]["id"]
    for start, end, state in spans:
        claimed = await bh.http.post("/v1/agent/claim", headers=agent, json={
            "cluster": cluster, "agent_id": "a1", "max_jobs": 1})
        assert [j["id"] for j in claimed.json()["jobs"]] == [job_id]
        lost = state == "lost"
        for t in ({"state": "submitting"}, {"state": "submitted", "native_id": "n"},
                  {"state": "running", "at": start},
                  {"state": state, "at": end, "infrastructure": lost,
                   **({"exit_code": 0} if state == "succeeded" else {})}):
            r = await bh.http.post("/v1/agent/report", headers=agent, json={
                "cluster": cluster, "agent_id": "a1", "transitions": [{"job_id": job_id, **t}]})
            assert r.json()["applied"] == [True], (t, r.text)
    return job_id


async def costs(bh: Api, who: dict[str, str] | None = None, **params: object) -> dict:
    r = await bh.http.get("/v1/costs", headers=who or bh.admin,
                          params={"since": T0, "until": T0 + 2 * 86400, **params})
    assert r.status_code == 200, r.text
    return r.json()


async def test_costs_roll_up_from_every_attempt(bh: Api) -> None:
    etl = {"command": ["x"], "resources": {"cores": 2}, "tenant": "tenA",
           "labels": {"airflow.dag_id": "etl"}}
    await run(bh, "c1", etl, (T0, T0 + HOUR, "succeeded"))  # 2 cores x 0.5 + 1 node x 1 = 2
    await run(bh, "c1", {**etl, "resources": {"cores": 4}},
              (T0 + HOUR, T0 + 1.5 * HOUR, "lost"),  # (2 + 1) x 0.5 h = 1.5, waste
              (T0 + 2 * HOUR, T0 + 3 * HOUR, "succeeded"))  # 3
    await run(bh, "c1", {"command": ["y"], "tenant": "tenB", "labels": {"workflow": "nightly"}},
              (T0 + 86400, T0 + 86400 + 2 * HOUR, "failed"))  # (0.5 + 1) x 2 = 3, waste
    await run(bh, "c2", {"command": ["z"], "tenant": "tenB"},
              (T0, T0 + HOUR, "succeeded"))  # c2 has no price
    ledger = await bh.store.attempts(since=T0, until=T0 + 2 * 86400)
    assert [(a.attempt, a.state) for a in ledger if a.cores == 4] == [(1, "lost"),
                                                                       (2, "succeeded")]
    by_dag = await costs(bh, by="dag", bucket="day")
    assert [(r["group"], r["bucket"][:10], r["cost"], r["waste"], r["attempts"])
            for r in by_dag["rows"]] == [("etl", "2023-11-15", 6.5, 1.5, 3),
                                         ("-", "2023-11-15", 0.0, 0.0, 1),
                                         ("nightly", "2023-11-16", 3.0, 3.0, 1)]
    assert by_dag["unpriced"] == ["c2"]
    assert (by_dag["total"], by_dag["waste"]) == (9.5, 4.5)
    for by in ("tenant", "cluster", "job", "run", "total"):
        rolled = await costs(bh, by=by, bucket="none")
        assert sum(r["cost"] for r in rolled["rows"]) == pytest.approx(9.5), by
    tenants = {r["group"]: r["cost"] for r in (await costs(bh, by="tenant",
                                                           bucket="none"))["rows"]}
    assert tenants == {"tenA": 6.5, "tenB": 3.0}
    mine = await costs(bh, bh.client, by="tenant", bucket="none")  # a client of tenant A
    assert [(r["group"], r["cost"]) for r in mine["rows"]] == [("tenA", 6.5)]


async def test_bad_cost_queries_are_refused(bh: Api) -> None:
    for params, status in (({"by": "colour"}, 422), ({"bucket": "week"}, 422),
                           ({"since": T0, "until": T0}, 400),
                           ({"since": 0, "until": 400 * 86400}, 400),
                           ({"since": "yesterday"}, 422)):
        r = await bh.http.get("/v1/costs", headers=bh.admin, params=params)
        assert r.status_code == status, (params, r.text)
    assert (await bh.http.get("/v1/costs")).status_code == 401
    assert (await bh.http.get("/v1/costs", headers=bh.agent_c1)).status_code == 403


def test_a_bad_price_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError,
                       match=r"^bad setting prices\.c1\.core_hour: .*greater than or equal to 0"):
        ServerSettings.load(prices={"c1": {"core_hour": -1}})
    with pytest.raises(ConfigError, match=r"^bad setting prices\.c1\.per_cpu: "):
        ServerSettings.load(prices={"c1": {"per_cpu": 1}})
