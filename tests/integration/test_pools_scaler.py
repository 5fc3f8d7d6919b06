"""The scaler and the pools wire on real stores (SQLite and PostgreSQL), through the real app:
an agent's heartbeats (what its providers list) and scaler passes, as the server runs them.

A pass is called directly (``app.state.scaler.scale_pass``) instead of waiting for the leased
loop; a ``now`` later than the clock stands for time passing (idle grace, boot timeout,
backoff), so nothing here sleeps or races a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.controllers.scaler import Scaler
from bridgehead.domain.clusters import Role
from bridgehead.server.app import create_app
from bridgehead.store import create_store
from bridgehead.store.pools_sql import PoolStore

POOL = {"name": "elastic", "cluster": "c1", "provider": "sim",
        "shape": {"cpus": 2, "memory_mb": 4096}, "max_nodes": 3, "idle_grace_s": 120.0,
        "boot_timeout_s": 300.0, "backoff_s": 60.0, "quarantine_after": 2,
        "expected_boot_s": 100.0,
        "price_per_hour": 1.0, "options": {"boot_s": 5}}
JOB = {"cluster": "c1", "command": ["/bin/true"], "resources": {"cores": 2}}


@dataclass
class Pools:
    http: httpx.AsyncClient
    store: PoolStore
    scaler: Scaler
    admin: dict[str, str]
    client: dict[str, str]
    agent: dict[str, str]
    agent_c2: dict[str, str]

    async def beat(self, *nodes: dict[str, Any], errors: list[dict[str, Any]] | None = None,
                   cluster: str = "c1") -> dict[str, Any]:
        """One heartbeat listing ``nodes``; the answer."""
        r = await self.http.post("/v1/agent/heartbeat",
                                 headers=self.agent if cluster == "c1" else self.agent_c2,
                                 json={"cluster": cluster, "agent_id": "a1",
                                       "nodes": list(nodes), "node_errors": errors or []})
        assert r.status_code == 200, r.text
        return r.json()

    async def nodes(self) -> dict[str, str]:
        """Every node's state (ended ones too)."""
        return {s.node.id: s.node.state.value for s in await self.store.pool_nodes(live=False)}

    async def pool(self) -> dict[str, Any]:
        r = await self.http.get("/v1/pools", headers=self.client)
        assert r.status_code == 200, r.text
        [pool] = r.json()
        return pool

    async def submit(self, **more: Any) -> str:
        r = await self.http.post("/v1/jobs", headers=self.client, json={**JOB, **more})
        assert r.status_code == 201, r.text
        return r.json()["job"]["id"]

    async def run(self, job_id: str, *, until: str = "running") -> None:
        r = await self.http.post("/v1/agent/claim", headers=self.agent,
                                 json={"cluster": "c1", "agent_id": "a1", "max_jobs": 10})
        assert job_id in [j["id"] for j in r.json()["jobs"]], r.text
        steps = ({"state": "submitting"}, {"state": "submitted", "native_id": job_id},
                 {"state": "running"})
        for t in steps[:[s["state"] for s in steps].index(until) + 1]:
            r = await self.http.post("/v1/agent/report", headers=self.agent, json={
                "cluster": "c1", "agent_id": "a1", "transitions": [{"job_id": job_id, **t}]})
            assert r.json()["applied"] == [True], r.text

    async def events(self, type_: str) -> list[dict[str, Any]]:
        r = await self.http.get("/v1/events", headers=self.admin, params={"limit": 1000})
        return [e for e in r.json()["events"] if e["type"] == type_]


@pytest.fixture
async def pools(store_dsn: str) -> AsyncIterator[Pools]:
    store = create_store(store_dsn)
    await store.open()
    settings = ServerSettings.load(store=store_dsn, pools=[POOL], orphan_grace_s=30.0)
    app = create_app(settings, store)  # the store is open: no lifespan, no background loops
    tokens = {}
    for name, role, cluster in (("admin", Role.ADMIN, None), ("client", Role.CLIENT, None),
                                ("agent", Role.AGENT, "c1"), ("agent_c2", Role.AGENT, "c2")):
        _, secret = await store.create_token(name=name, role=role, cluster=cluster, tenant=None)
        tokens[name] = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bh") as http:
        yield Pools(http=http, store=store, scaler=app.state.scaler, **tokens)  # type: ignore[arg-type]
    await store.close()


def listed(key: str, *, ready: bool = True, jobs: int = 0, job_ids: tuple[str, ...] = (),
           pid: str | None = None) -> dict[str, Any]:
    return {"provider_id": pid or f"vm-{key}", "pool": "elastic", "key": key, "ready": ready,
            "jobs": jobs, "job_ids": list(job_ids)}


async def booted(p: Pools) -> str:
    """A queued job, a pass, and the node it bought launched, listed and ready: its id."""
    await p.submit()
    await p.scaler.scale_pass()
    [node] = await p.nodes()
    answer = await p.beat()
    assert answer["scale"] == [{"op": "launch", "pool": "elastic", "key": node,
                                "provider_id": None}]
    await p.beat(listed(node, ready=False))
    await p.beat(listed(node))
    assert (await p.nodes())[node] == "idle"
    return node


async def running(p: Pools) -> tuple[str, str]:
    """A booted node with the job it was bought for running on it: (node, job)."""
    node = await booted(p)
    [job] = [j["id"] for j in (await p.http.get("/v1/jobs", headers=p.client)).json()["jobs"]]
    await p.run(job)
    await p.beat(listed(node, jobs=1, job_ids=(job,)))
    return node, job


async def test_scale_from_zero_buys_one_node_and_follows_its_boot(pools: Pools) -> None:
    p = pools
    assert (await p.beat())["pools"][0]["options"] == {"boot_s": 5}
    await p.scaler.scale_pass()
    assert await p.nodes() == {}  # no demand, min_nodes 0: nothing bought
    await p.submit()
    await p.scaler.scale_pass()
    [(node, state)] = (await p.nodes()).items()
    assert state == "requested"
    first = await p.beat()
    assert first["scale"] == [{"op": "launch", "pool": "elastic", "key": node,
                               "provider_id": None}]
    again = await p.beat()  # not listed yet: asked again (launch is idempotent by key)
    assert again["scale"] == first["scale"]
    assert (await p.nodes())[node] == "launching"
    assert (await p.beat(listed(node, ready=False)))["scale"] == []
    assert (await p.nodes())[node] == "booting"
    await p.beat(listed(node))
    pool = await p.pool()
    assert pool["states"] == {"idle": 1} and pool["nodes"][0]["provider_id"] == f"vm-{node}"
    await p.scaler.scale_pass()  # the job fits the idle node: nothing more is bought
    assert list(await p.nodes()) == [node]
    metrics = (await p.http.get("/metrics", headers=p.admin)).text
    for line in ('bridgehead_pool_nodes{pool="elastic",state="idle"} 1.0',
                 'bridgehead_pool_nodes{pool="elastic",state="busy"} 0.0',
                 'bridgehead_scale_decisions_total{op="launch",pool="elastic"} 1.0',
                 'bridgehead_pool_boot_seconds_count{pool="elastic"} 1.0',
                 'bridgehead_pool_idle_share{pool="elastic"} 1.0'):
        assert line in metrics, line
    steps = [(e["data"]["from"], e["data"]["state"])
             for e in await p.events("bridgehead.pool.node")]
    assert steps == [(None, "requested"), ("requested", "launching"), ("launching", "booting"),
                     ("booting", "idle")]


async def test_a_node_with_a_job_is_never_cordoned_or_terminated(pools: Pools) -> None:
    p = pools
    node = await booted(p)
    job = (await p.http.get("/v1/jobs", headers=p.client)).json()["jobs"][0]["id"]
    await p.run(job)
    for later in (0, 200, 10_000, 100_000):  # idle grace long past, many times over
        answer = await p.beat(listed(node, jobs=1))
        assert answer["scale"] == [], answer
        await p.scaler.scale_pass(time.time() + later)
        assert (await p.nodes())[node] == "busy"
    assert (await p.beat(listed(node, jobs=1)))["scale"] == []


async def test_a_report_of_a_job_on_a_cordoned_node_wins_over_the_terminate(
        pools: Pools) -> None:
    p = pools
    node = await booted(p)
    [job] = [j["id"] for j in (await p.http.get("/v1/jobs", headers=p.client)).json()["jobs"]]
    await p.http.post(f"/v1/jobs/{job}/cancel", headers=p.client)
    await p.scaler.scale_pass(time.time() + 200)  # idle past its grace: cordoned
    assert (await p.nodes())[node] == "cordoned"
    [before] = [s for s in await p.store.pool_nodes() if s.node.id == node]
    await p.beat(listed(node, jobs=1))  # the scheduler put a job there meanwhile
    assert (await p.nodes())[node] == "busy"
    from bridgehead.domain.pools import NodeState
    from bridgehead.store.pools_sql import NodeWrite
    stale = NodeWrite(node=before.node.to(NodeState.TERMINATING, time.time()),
                      cluster="c1", version=before.version, empty=True)
    assert await p.store.scale([stale], {}, time.time()) == [False]  # planned before the report
    await p.scaler.scale_pass(time.time() + 400)
    assert (await p.nodes())[node] == "busy"
    assert (await p.beat(listed(node, jobs=1)))["scale"] == []


async def test_an_idle_node_is_released_after_its_grace(pools: Pools) -> None:
    p = pools
    node = await booted(p)
    [job] = [j["id"] for j in (await p.http.get("/v1/jobs", headers=p.client)).json()["jobs"]]
    await p.http.post(f"/v1/jobs/{job}/cancel", headers=p.client)
    await p.scaler.scale_pass(time.time() + 60)  # within the 120 s grace: kept
    assert (await p.nodes())[node] == "idle"
    await p.scaler.scale_pass(time.time() + 121)
    assert (await p.nodes())[node] == "cordoned"
    await p.scaler.scale_pass(time.time() + 122)
    assert (await p.nodes())[node] == "terminating"
    answer = await p.beat(listed(node))
    assert answer["scale"] == [{"op": "terminate", "pool": "elastic", "key": node,
                                "provider_id": f"vm-{node}"}]
    await p.beat()  # the provider no longer has it
    assert (await p.nodes())[node] == "terminated"
    assert (await p.pool())["states"] == {}


async def test_a_boot_nothing_wants_is_cancelled_after_its_grace(pools: Pools) -> None:
    """The job a node was bought for is cancelled while the node boots: past the pool's
    120 s idle grace (and its 60 s billing minimum), not yet slow (2 x its 100 s expected
    boot), the node is terminated through the same guarded write, and the agent is told to
    stop it."""
    p = pools
    job = await p.submit()
    await p.scaler.scale_pass()
    [node] = await p.nodes()
    await p.beat()
    await p.beat(listed(node, ready=False))
    assert (await p.nodes())[node] == "booting"
    await p.http.post(f"/v1/jobs/{job}/cancel", headers=p.client)
    decided = await p.scaler.scale_pass(time.time() + 100)  # within its grace: kept
    assert decided is not None and decided.cancel == ()
    assert (await p.nodes())[node] == "booting"
    decided = await p.scaler.scale_pass(time.time() + 121)
    assert decided is not None and decided.cancel == (node,)
    assert (await p.nodes())[node] == "terminating"
    answer = await p.beat(listed(node, ready=False))
    assert answer["scale"] == [{"op": "terminate", "pool": "elastic", "key": node,
                                "provider_id": f"vm-{node}"}]
    await p.beat()  # the provider no longer has it
    assert (await p.nodes())[node] == "terminated"


async def test_a_failed_boot_is_replaced_then_the_pool_backs_off_and_is_quarantined(
        pools: Pools) -> None:
    p = pools
    await p.submit()
    await p.scaler.scale_pass()
    [first] = await p.nodes()
    await p.beat()
    await p.beat(listed(first, ready=False))
    t0 = time.time() + 301  # past the 300 s boot timeout
    await p.scaler.scale_pass(t0)
    [second] = set(await p.nodes()) - {first}
    assert await p.nodes() == {first: "failed_boot", second: "requested"}  # replaced at once
    pool = await p.pool()
    assert pool["failures_in_row"] == 1 and pool["backoff_until"] is not None
    await p.submit()  # more demand while the pool backs off: it waits
    await p.scaler.scale_pass(t0 + 1)
    assert len(await p.nodes()) == 2
    assert "backing off" in " ".join(p.scaler.last_plan.waiting.values())  # type: ignore[union-attr]
    await p.scaler.scale_pass(t0 + 61)  # the backoff is over: bought
    [third] = set(await p.nodes()) - {first, second}
    answer = await p.beat(listed(first, ready=False))  # the provider still has it: stop it
    assert {"op": "terminate", "pool": "elastic", "key": first,
            "provider_id": f"vm-{first}"} in answer["scale"]
    await p.beat(listed(second, ready=False), listed(third, ready=False))
    await p.scaler.scale_pass(t0 + 10_000)  # both fail to boot: quarantined at the second
    assert (await p.pool())["quarantined"] is True
    [event] = await p.events("bridgehead.pool.quarantined")
    assert event["data"] == {"pool": "elastic", "failures_in_row": 2}
    live = {n for n, state in (await p.nodes()).items() if state != "failed_boot"}
    await p.scaler.scale_pass(t0 + 20_000)
    assert {n for n, state in (await p.nodes()).items() if state != "failed_boot"} <= live
    r = await p.http.post("/v1/pools/elastic/lift", headers=p.client)
    assert r.status_code == 403  # admins only
    r = await p.http.post("/v1/pools/elastic/lift", headers=p.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["quarantined"], r.json()["failures_in_row"]) == (False, 0)
    [lifted] = await p.events("bridgehead.pool.lifted")
    assert lifted["data"] == {"pool": "elastic", "was_quarantined": True, "failures_in_row": 3}
    await p.scaler.scale_pass(t0 + 20_001)  # the queue still waits: bought again
    assert {n for n, state in (await p.nodes()).items() if state == "requested"}
    assert (await p.http.post("/v1/pools/nope/lift", headers=p.admin)).status_code == 404


async def test_a_node_no_agent_launched_is_forgotten_after_the_boot_timeout(
        pools: Pools) -> None:
    """No heartbeat ever took the launch (no agent runs): past the 300 s boot timeout the node
    ends, unbilled, the pool counts no failure, and the job that still waits gets a new node
    (the one an agent that comes is told to launch)."""
    p = pools
    await p.submit()
    await p.scaler.scale_pass()
    [first] = await p.nodes()
    await p.scaler.scale_pass(time.time() + 100)
    assert await p.nodes() == {first: "requested"}
    await p.scaler.scale_pass(time.time() + 301)
    assert p.scaler.last_plan is not None and p.scaler.last_plan.forgotten == (first,)
    [second] = set(await p.nodes()) - {first}
    assert await p.nodes() == {first: "terminated", second: "requested"}  # the job's new one
    [ended] = [s.node for s in await p.store.pool_nodes(live=False) if s.node.id == first]
    assert ended.launched_at is None  # never billed
    pool = await p.pool()
    assert pool["failures_in_row"] == 0 and not pool["quarantined"]
    answer = await p.beat()
    assert answer["scale"] == [{"op": "launch", "pool": "elastic", "key": second,
                                "provider_id": None}]  # not the forgotten one


async def test_a_launch_refused_for_capacity_backs_the_pool_off(pools: Pools) -> None:
    p = pools
    await p.submit()
    await p.scaler.scale_pass()
    [node] = await p.nodes()
    await p.beat()
    await p.beat(errors=[{"pool": "elastic", "keys": [node], "op": "launch",
                          "error": "no capacity", "shortage": True}])
    assert (await p.nodes())[node] == "failed_boot"
    pool = await p.pool()  # backs off backoff_s; a shortage is no failure of the pool's
    assert pool["failures_in_row"] == 0 and pool["backoff_until"] is not None
    billed = await p.store.billed_nodes(since=0, until=time.time() + 1)
    assert billed == []  # nothing was made: nothing is billed


async def test_batches_refused_for_capacity_never_quarantine_the_pool(pools: Pools) -> None:
    """The agent launches a pool's nodes in one call; a shortage refuses them together.
    Refused twice in a row (quarantine_after is 2 here), the pool backs off but is not
    quarantined: a shortage ends on its own, and an admin should not have to lift it."""
    p = pools
    for _ in range(3):
        await p.submit()
    await p.scaler.scale_pass()
    nodes = sorted(await p.nodes())
    assert len(nodes) == 3
    await p.beat()
    await p.beat(errors=[{"pool": "elastic", "keys": nodes, "op": "launch",
                          "error": "no capacity", "shortage": True}])
    assert set((await p.nodes()).values()) == {"failed_boot"}
    await p.store.lift_quarantine("elastic")  # ends the backoff (an admin's call): it buys again
    await p.scaler.scale_pass()
    again = sorted(set(await p.nodes()) - set(nodes))
    assert len(again) == 1  # a probe: one node, not the three the queue wants
    await p.beat()
    await p.beat(errors=[{"pool": "elastic", "keys": again, "op": "launch",
                          "error": "no capacity", "shortage": True}])
    pool = await p.pool()
    assert pool["failures_in_row"] == 0 and pool["quarantined"] is False
    assert pool["backoff_until"] is not None and pool["shortage_since"] is not None


async def test_after_a_shortage_the_pool_probes_with_one_node_until_one_is_taken(
        pools: Pools) -> None:
    """Refused for a shortage, the pool asks for one node at a time; once the provider
    lists one launched since, the shortage is over and the next pass buys the rest."""
    p = pools
    for _ in range(3):
        await p.submit()
    await p.scaler.scale_pass()
    refused = sorted(await p.nodes())
    await p.beat()
    await p.beat(errors=[{"pool": "elastic", "keys": refused, "op": "launch",
                          "error": "no capacity", "shortage": True}])
    shortage = (await p.pool())["shortage_since"]
    assert shortage is not None
    await p.store.lift_quarantine("elastic")  # ends the backoff, not the shortage
    await p.scaler.scale_pass()
    await p.scaler.scale_pass()  # still one: the probe is not answered yet
    [probe] = sorted(set(await p.nodes()) - set(refused))
    assert "one node at a time" in " ".join(p.scaler.last_plan.waiting.values())  # type: ignore[union-attr]
    answer = await p.beat()
    assert [c["key"] for c in answer["scale"]] == [probe]
    await p.beat(listed(probe, ready=False))  # taken: booting
    pool = await p.pool()
    assert pool["shortage_since"] is None and pool["states"] == {"booting": 1}
    await p.scaler.scale_pass()
    assert len(set(await p.nodes()) - set(refused)) == 3  # the rest, at once


async def test_a_lost_node_gives_its_attempt_exactly_one_new_attempt(pools: Pools) -> None:
    p = pools
    node, job = await running(p)
    await p.beat()  # the provider lost it
    assert (await p.nodes())[node] == "lost"
    got = (await p.http.get(f"/v1/jobs/{job}", headers=p.client)).json()
    assert (got["state"], got["attempt"]) == ("queued", 2)
    await p.beat()  # the same report again: nothing more
    await p.run(job)  # the new attempt runs
    await p.beat()
    await p.beat(listed(node, jobs=1, job_ids=(job,)))  # the lost node comes back, ended
    await p.beat()
    got = (await p.http.get(f"/v1/jobs/{job}", headers=p.client)).json()
    assert (got["state"], got["attempt"]) == ("running", 2)


async def test_an_agent_reaches_only_its_own_clusters_pools(pools: Pools) -> None:
    p = pools
    node = await booted(p)
    answer = await p.beat(cluster="c2")  # c2 has no pool, and its report names none
    assert answer["pools"] == [] and answer["scale"] == []
    await p.beat(listed(node, jobs=1), cluster="c2")
    assert (await p.nodes())[node] == "idle"  # another cluster's report changes nothing


async def test_a_node_lost_after_its_job_moved_on_costs_that_job_nothing(pools: Pools) -> None:
    """The backend reported the attempt lost first (it was queued again and runs elsewhere):
    the node's loss, seen later, must not take the new attempt too."""
    p = pools
    node, job = await running(p)
    r = await p.http.post("/v1/agent/report", headers=p.agent, json={
        "cluster": "c1", "agent_id": "a1", "transitions": [{
            "job_id": job, "state": "lost", "reason": "worker died", "infrastructure": True}]})
    assert r.json()["applied"] == [True], r.text
    await p.run(job)  # attempt 2 runs on another node
    await p.beat()  # node lost now
    assert (await p.nodes())[node] == "lost"
    got = (await p.http.get(f"/v1/jobs/{job}", headers=p.client)).json()
    assert (got["state"], got["attempt"]) == ("running", 2)


async def test_costs_show_each_pools_idle_cost_apart(pools: Pools) -> None:
    p = pools
    node, job = await running(p)
    r = await p.http.post("/v1/agent/report", headers=p.agent, json={
        "cluster": "c1", "agent_id": "a1",
        "transitions": [{"job_id": job, "state": "succeeded", "exit_code": 0}]})
    assert r.json()["applied"] == [True]
    await p.beat(listed(node))
    await p.scaler.scale_pass(time.time() + 200)
    await p.scaler.scale_pass(time.time() + 201)
    await p.beat(listed(node))
    await p.beat()
    assert (await p.nodes())[node] == "terminated"
    costs = (await p.http.get("/v1/costs", headers=p.admin,
                              params={"by": "total", "bucket": "none"})).json()
    [line] = costs["pools"]
    assert line["pool"] == "elastic" and line["cluster"] == "c1"
    assert line["node_cost"] == pytest.approx(60 / 3600 * 1.0)  # the 60 s billing minimum
    assert 0 < line["attempts"] == pytest.approx(costs["total"])  # priced from the pool
    assert line["idle"] == pytest.approx(line["node_cost"] - line["attempts"], abs=1e-12)
    assert costs["idle"] == line["idle"] and costs["unpriced"] == []
    [record] = await p.store.attempts(since=0.0, until=time.time() + 10)
    assert record.job_id == job and record.pools == ("elastic",)  # the node it was seen on


async def test_a_node_that_booted_after_the_plan_is_no_failed_boot(pools: Pools) -> None:
    """The pass saw it booting past its timeout; the report that it is ready came first: the
    failed boot is not written and the pool does not back off."""
    p = pools
    await p.submit()
    await p.scaler.scale_pass()
    [node] = await p.nodes()
    await p.beat()
    await p.beat(listed(node, ready=False))
    [before] = [s for s in await p.store.pool_nodes() if s.node.id == node]
    await p.beat(listed(node))
    from bridgehead.domain.pools import NodeState, pool_from_dict
    from bridgehead.store.pools_sql import NodeWrite
    late = NodeWrite(node=before.node.to(NodeState.FAILED_BOOT, time.time()), cluster="c1",
                     version=before.version)
    assert await p.store.scale([late], {"elastic": pool_from_dict(POOL)}, time.time()) \
        == [False]
    pool = await p.pool()
    assert (pool["states"], pool["failures_in_row"], pool["backoff_until"]) \
        == ({"idle": 1}, 0, None)


async def test_a_job_the_scheduler_is_powering_a_node_up_for_buys_nothing(
        pools: Pools) -> None:
    """Slurm powers a CLOUD node up by itself for a pending job (the node is listed adopted,
    booting, with the job on it) while Bridgehead still has the job as submitted, not running:
    it is placed, not demand, and no spare node is bought for it."""
    p = pools
    job = await p.submit()
    await p.run(job, until="submitted")
    adopt = listed("ignored", ready=False, jobs=1, job_ids=(job,), pid="d1") | {
        "key": None, "adopted": True}
    await p.beat(adopt)
    [adopted] = await p.nodes()
    for later in (0, 10, 100):
        await p.scaler.scale_pass(time.time() + later)
        assert list(await p.nodes()) == [adopted], "a spare node was bought"
    assert (await p.beat(adopt))["scale"] == []


async def test_an_agent_cannot_lose_another_clusters_job_with_its_node(pools: Pools) -> None:
    p = pools
    node = await booted(p)
    r = await p.http.post("/v1/jobs", headers=p.client, json={**JOB, "cluster": "c2"})
    other = r.json()["job"]["id"]
    r = await p.http.post("/v1/agent/claim", headers=p.agent_c2,
                          json={"cluster": "c2", "agent_id": "a2", "max_jobs": 1})
    assert [j["id"] for j in r.json()["jobs"]] == [other]
    for t in ({"state": "submitting"}, {"state": "submitted", "native_id": "9"},
              {"state": "running"}):
        r = await p.http.post("/v1/agent/report", headers=p.agent_c2, json={
            "cluster": "c2", "agent_id": "a2", "transitions": [{"job_id": other, **t}]})
        assert r.json()["applied"] == [True], r.text
    await p.beat(listed(node, jobs=1, job_ids=(other,)))  # c1's agent names c2's job
    await p.beat()  # and loses the node
    assert (await p.nodes())[node] == "lost"
    got = (await p.http.get(f"/v1/jobs/{other}", headers=p.client)).json()
    assert (got["state"], got["attempt"]) == ("running", 1)


async def test_reports_and_passes_at_once_neither_fail_nor_release_a_busy_node(
        pools: Pools) -> None:
    """Heartbeats and scaler passes concurrently (several connections on PostgreSQL): no
    write fails (no deadlock), and a node every report calls busy is never released."""
    p = pools
    busy = await booted(p)
    for _ in range(3):
        await p.submit()
    await p.scaler.scale_pass()
    spare = [n for n in await p.nodes() if n != busy]
    for n in spare:
        await p.beat(listed(busy, jobs=1), listed(n, ready=False))
    rounds = []
    for i in range(12):
        nodes = [listed(busy, jobs=1), *(listed(n, ready=i % 2 == 0) for n in spare)]
        rounds += [p.beat(*nodes), p.scaler.scale_pass(time.time() + 100 * i)]
    for answer in await asyncio.gather(*rounds):
        if isinstance(answer, dict):
            assert all(c["key"] != busy for c in answer["scale"]), answer
    assert (await p.nodes())[busy] == "busy"


@pytest.mark.parametrize("bad", [
    {"nodes": [{"provider_id": "vm-1", "pool": "elastic", "ready": 1}]},
    {"nodes": [{"provider_id": "vm-1", "pool": "elastic", "jobs": "2"}]},
    {"nodes": [{"provider_id": "vm-1", "pool": "elastic", "adopted": "yes"}]},
    {"nodes": [{"provider_id": "", "pool": "elastic"}]},
    {"nodes": [{"provider_id": "vm-1", "pool": "elastic", "colour": "red"}]},
    {"node_errors": [{"pool": "elastic", "op": "launch", "error": "x", "shortage": 0}]},
    {"node_errors": [{"pool": "elastic", "op": "reboot", "error": "x"}]},
])
async def test_a_malformed_node_report_is_refused_and_changes_nothing(
        pools: Pools, bad: dict[str, Any]) -> None:
    """A report's fields are taken as written or refused: 0 is not false, "2" is not 2."""
    await pools.submit()
    await pools.scaler.scale_pass()
    before = await pools.nodes()
    r = await pools.http.post("/v1/agent/heartbeat", headers=pools.agent, json={
        "cluster": "c1", "agent_id": "a1", "nodes": [], **bad})
    assert r.status_code == 422, r.text
    assert await pools.nodes() == before
