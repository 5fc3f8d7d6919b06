"""Event sources are bound to tokens and rules act in their event's tenant: a client token of
one tenant posts only the sources named after it (a watcher gets a token named after its
source), so a tenant cannot pose as another's watcher; and what a rule does for an event (a
job, a workflow run) belongs to the event's tenant, so an admin's rule never carries one
tenant's data into another. The real rule engine on real stores."""

from __future__ import annotations

from typing import Any

import pytest

from bridgehead.controllers.rules import RuleEngine
from bridgehead.domain.clusters import Role
from bridgehead.store import JobFilter
from tests.integration.test_api import Api, api, bearer  # noqa: F401 - the fixture

WATCH = "bridgehead.watch/host1"
FLOW = ("name: f\nparams: {path: none}\ndefaults: {cluster: c1}\n"
        "steps:\n  - id: a\n    command: [x, '{{ params.path }}']\n")


async def token(bh: Api, name: str, tenant: str | None) -> dict[str, str]:
    _, secret = await bh.store.create_token(name=name, role=Role.CLIENT, cluster=None,
                                            tenant=tenant)
    return bearer(secret)


async def post(bh: Api, who: dict[str, str], **event: Any) -> Any:
    return await bh.http.post("/v1/events", headers=who, json={
        "type": "file.created", "subject": "f", **event})


async def test_a_tenants_token_posts_only_the_sources_named_after_it(
        api: Api) -> None:  # noqa: F811
    b = await token(api, "tenB", "tenB")
    watcher = await token(api, WATCH, "tenA")
    posed = await post(api, b, source=WATCH, id="1")
    assert posed.status_code == 403, posed.text
    assert f"'tenB' (tenant 'tenB') posts only the sources 'tenB' and 'tenB/...', not " \
           f"'{WATCH}'" in posed.json()["detail"]
    assert (await post(api, b, id="2")).json()["source"] == "tenB"  # its name by default
    assert (await post(api, b, source="tenB/sensor-7", id="3")).status_code == 201
    assert (await post(api, b, source="tenBee", id="4")).status_code == 403
    assert (await post(api, watcher, source=WATCH, id="5")).json()["tenant"] == "tenA"
    assert (await post(api, watcher, source="bridgehead.watch/host2", id="6")).status_code == 403
    for every_tenant in (api.admin, api.client):  # they may act in every tenant anyway
        r = await post(api, every_tenant, source=WATCH, id="7")
        assert r.status_code in (200, 201), r.text
    assert (await post(api, api.admin, id="8")).json()["source"] == "external"


@pytest.fixture
async def fired(api: Api) -> dict[str, Any]:  # noqa: F811
    """Rules on a watcher's files; the same file event from tenant A's watcher and from
    tenant B's (a token of B's named alike), acted on by the rule engine."""
    rules = [
        {"name": "follow", "match": {"type": "file.created", "source": WATCH},
         "actions": [{"submit_job": {"cluster": "c1", "command": ["reduce", "{{ data.path }}"]}},
                     {"start_workflow": {"spec": FLOW, "params": {"path": "{{ data.path }}"}}}]},
        {"name": "pinned", "match": {"type": "file.created", "source": WATCH},
         "actions": [{"submit_job": {"cluster": "c1", "tenant": "tenA",
                                     "command": ["reduce", "{{ data.path }}"]}}]},
    ]
    assert (await api.http.put("/v1/rules", headers=api.admin,
                               json={"rules": rules})).status_code == 200
    for tenant in ("tenA", "tenB"):
        r = await post(api, await token(api, WATCH, tenant), source=WATCH, id="same",
                       data={"path": f"/data/{tenant}.csv"})
        assert r.status_code == 201, r.text
    engine = RuleEngine(api.store)
    await engine.handle(await api.store.events(after=0, limit=100))
    jobs = await api.store.list_jobs(JobFilter(labels=(("rule", "follow"),)))
    pinned = await api.store.list_jobs(JobFilter(labels=(("rule", "pinned"),)))
    runs = await api.store.list_runs()
    return {"jobs": jobs, "pinned": pinned, "runs": runs,
            "events": await api.store.events(after=0, limit=100)}


async def test_a_rules_job_and_run_belong_to_the_events_tenant(fired: dict[str, Any]) -> None:
    by_tenant = {j.spec.tenant: j.spec.command for j in fired["jobs"]}
    assert by_tenant == {"tenA": ("reduce", "/data/tenA.csv"),
                         "tenB": ("reduce", "/data/tenB.csv")}
    assert sorted((r.tenant, r.params["path"]) for r in fired["runs"]) == [
        ("tenA", "/data/tenA.csv"), ("tenB", "/data/tenB.csv")]


async def test_a_template_naming_a_tenant_acts_for_that_tenants_events_only(
        fired: dict[str, Any]) -> None:
    assert [(j.spec.tenant, j.spec.command[1]) for j in fired["pinned"]] == [
        ("tenA", "/data/tenA.csv")]
    [failed] = [e for e in fired["events"] if e.type == "bridgehead.rule.failed"]
    assert failed.tenant == "tenB" and failed.data["rule"] == "pinned"
    assert "submits into tenant 'tenA': an event of tenant 'tenB' may not act there" \
        in failed.data["error"]
