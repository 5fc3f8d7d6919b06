"""Event rules end to end: a real server (its rule engine) and a real local agent.

Rules are stored through the API (admin only; bad rules refused with the field named;
secrets never shown), fire on external and job events, submit jobs and start workflows
from the event's data, deliver signed webhooks with retries, and record an action's failure
as an event without stopping other rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.client import Client
from bridgehead.domain.rules import verify
from tests.integration.test_webhook import Behaviour, receiver  # noqa: F401 - a fixture
from tests.procs import eventually, make_token, stack

pytestmark = pytest.mark.slow

SECRET = "hook-secret-123"
LOOPBACK = '[server]\nwebhook_allow = ["127.0.0.1"]\n'
"""config.toml of a server whose webhooks may reach the test receivers on 127.0.0.1."""


def put_rules(url: str, token: str, rules: list[dict[str, Any]]) -> httpx.Response:
    return httpx.put(f"{url}/v1/rules", json={"rules": rules}, timeout=10,
                     headers={"Authorization": f"Bearer {token}"})


def rule_events(bh: Client, kind: str) -> list[dict[str, Any]]:
    page = bh.events(after=0, limit=1000)
    return [e for e in page["events"] if e["type"] == f"bridgehead.rule.{kind}"]


def test_rules_api_needs_admin_names_bad_fields_and_masks_secrets(tmp_path: Path) -> None:
    hook = {"name": "hook", "match": {"type": "x.y"},
            "actions": [{"webhook": {"url": "http://127.0.0.1:9/h", "secret": SECRET}}]}
    (tmp_path / "config.toml").write_text(LOOPBACK)
    with stack(tmp_path, agent=False) as s:
        client = make_token(s.dsn, "client")
        assert put_rules(s.server.url, client, [hook]).status_code == 403
        bad = {**hook, "name": "bad", "match": {"data": {"size": {"numeric": [">", "x"]}}}}
        refused = put_rules(s.server.url, s.admin, [hook, bad])
        assert refused.status_code == 400
        detail = refused.json()["detail"]
        assert detail == "rules[1].match.data.size.numeric[1]: 'x' is not a number"
        twice = put_rules(s.server.url, s.admin, [hook, hook])
        assert twice.status_code == 400 and "'hook' is given twice" in twice.json()["detail"]
        with Client(s.server.url, client) as bh:
            assert bh.list_rules() == []  # all or none: the good one was not stored either
        stored = put_rules(s.server.url, s.admin, [hook])
        assert stored.status_code == 200 and SECRET not in stored.text
        with Client(s.server.url, client) as bh:
            [shown] = bh.list_rules()
        assert shown["actions"][0]["webhook"]["secret"] == "***"
        assert SECRET not in s.server.output()


def test_a_signed_webhook_is_retried_and_a_failing_action_stops_no_other_rule(
    tmp_path: Path, receiver: tuple[str, Behaviour],  # noqa: F811
) -> None:
    url, behaviour = receiver
    behaviour.statuses = [503, 502]  # two failures, then 200
    rules = [
        {"name": "notify", "match": {"type": "run.ended", "data": {"ok": True}},
         "actions": [{"webhook": {"url": url, "secret": SECRET, "retries": 3,
                                  "backoff": 0.05}}]},
        {"name": "broken", "match": {"type": "run.ended"},
         "actions": [{"submit_job": {"cluster": "local", "command": ["echo", "{{ data.nope }}"]}},
                     {"submit_job": {"cluster": "local", "name": "after-broken",
                                     "command": ["echo", "{{ data.run }}"]}}]},
    ]
    (tmp_path / "config.toml").write_text(LOOPBACK)
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        assert put_rules(s.server.url, s.admin, rules).status_code == 200
        sent = bh.post_event("run.ended", "runs/7", {"ok": True, "run": "r7"},
                             source="ci", id="ended-7")
        fired = eventually(lambda: len(rule_events(bh, "fired")) == 2 and
                           rule_events(bh, "fired"), 30, what="both fired actions")
        [failed] = rule_events(bh, "failed")
        echo = eventually(lambda: [j for j in bh.list_jobs(labels={"rule": "broken"})[0]
                                   if j.state.value == "succeeded"], 30, what="the job")
        metrics = httpx.get(f"{s.server.url}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {s.admin}"}).text
    assert 'bridgehead_rule_actions_total{outcome="fired",rule="notify"} 1.0' in metrics
    assert 'bridgehead_rule_actions_total{outcome="failed",rule="broken"} 1.0' in metrics
    assert 'bridgehead_consumer_leading{consumer="rule-engine"} 1.0' in metrics
    assert 'bridgehead_consumer_leading{consumer="workflow-runner"} 1.0' in metrics
    by_rule = {e["data"]["rule"]: e["data"] for e in fired}
    assert by_rule["notify"]["attempts"] == 3 and by_rule["notify"]["status"] == 200
    assert failed["data"]["rule"] == "broken" and failed["data"]["action"] == 0
    assert "data.nope" in failed["data"]["error"]
    assert [j.spec.command for j in echo] == [("echo", "r7")]  # action 1 still ran
    assert len(behaviour.received) == 3
    deliveries = {r.headers["X-Bridgehead-Delivery"] for r in behaviour.received}
    assert len(deliveries) == 1  # one delivery id on every attempt
    last = behaviour.received[-1]
    assert verify(SECRET, last.body, last.headers["X-Bridgehead-Signature"])
    assert json.loads(last.body)["id"] == sent["id"] == "ended-7"


WORKFLOW = """
name: per-file
params: {path: none, copies: 1}
defaults: {cluster: local}
steps:
  - id: copy
    foreach: {param: copies}
    command: [echo, "copy {{ item }} of {{ params.path }}"]
"""


def test_an_event_starts_a_workflow_with_params_from_its_data_once(tmp_path: Path) -> None:
    rule = {"name": "start-per-file", "match": {"type": "file.created",
                                                "data": {"name": {"suffix": ".h5"}}},
            "actions": [{"start_workflow": {"spec": WORKFLOW, "filename": "per-file.yaml",
                                            "params": {"path": "{{ data.path }}",
                                                       "copies": "{{ data.copies }}"}}}]}
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        assert put_rules(s.server.url, s.admin, [rule]).status_code == 200
        data = {"path": "/data/run 1.h5", "name": "run 1.h5", "copies": 3}
        for _ in range(2):  # a source re-sending the same event starts nothing new
            bh.post_event("file.created", data["path"], data, source="watch", id="f-1")
        bh.post_event("file.created", "/data/x.txt", {**data, "name": "x.txt"}, source="watch")
        runs = eventually(lambda: bh.list_runs()["runs"], 30, what="the run")
        done = bh.wait_run(runs[0]["id"], timeout=60)
        assert len(bh.list_runs()["runs"]) == 1
    assert done["state"] == "succeeded"
    assert done["params"] == {"path": "/data/run 1.h5", "copies": 3}
    assert [t["item"] for t in done["tasks"]] == [0, 1, 2]
