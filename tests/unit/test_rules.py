"""Event rules: pattern matching (a table), templates, actions, masking, signing, and errors
that name the field."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bridgehead.domain.event_templates import render, trial_render
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import Resources
from bridgehead.domain.patterns import InvalidPattern, Pattern
from bridgehead.domain.rules import (
    InvalidRule,
    Rule,
    StartWorkflow,
    SubmitJob,
    Webhook,
    idempotency_key,
    rule_from_dict,
    sign,
    verify,
)
from bridgehead.errors import InvalidSpec

FILE = Event(
    type="file.created", source="watch", subject="/data/incoming/run7/a.csv", id="ev-1",
    time=1_700_000_000.0,
    data={"path": "/data/incoming/run7/a.csv", "name": "a.csv", "size": 2048, "ratio": 0.5,
          "flag": True, "none": None, "state": "failed", "count": "5",
          "labels": {"pipeline": "reduce", "site": "onprem"},
          "tags": ["raw", "night"], "sizes": [1, 50, 900],
          "files": [{"name": "x.h5", "size": 3}, {"name": "y.txt", "size": 99}],
          "kind": "real"},
)

# (pattern, expected) against FILE
MATCHING: list[tuple[dict[str, Any], bool]] = [
    # scalars: exact, strict types
    ({"type": "file.created"}, True),
    ({"type": "file.deleted"}, False),
    ({"type": "File.created"}, False),
    ({"data": {"size": 2048}}, True),
    ({"data": {"size": 2048.0}}, True),
    ({"data": {"size": "2048"}}, False),
    ({"data": {"count": 5}}, False),
    ({"data": {"count": "5"}}, True),
    ({"data": {"flag": True}}, True),
    ({"data": {"flag": 1}}, False),
    ({"data": {"none": None}}, True),
    ({"data": {"missing": None}}, False),
    # lists: any of
    ({"source": ["watch", "external"]}, True),
    ({"source": ["external", "cron"]}, False),
    ({"source": ["cron", {"prefix": "wat"}]}, True),
    # prefix / suffix / wildcard
    ({"subject": {"prefix": "/data/"}}, True),
    ({"subject": {"prefix": "/scratch/"}}, False),
    ({"data": {"name": {"suffix": ".csv"}}}, True),
    ({"data": {"size": {"prefix": "2"}}}, False),
    ({"data": {"name": {"wildcard": "*.csv"}}}, True),
    ({"data": {"name": {"wildcard": "?.csv"}}}, True),
    ({"data": {"name": {"wildcard": "??.csv"}}}, False),
    ({"data": {"name": {"wildcard": "*.CSV"}}}, False),
    ({"data": {"path": {"wildcard": "/data/*/run?/*.csv"}}}, True),
    ({"data": {"name": {"wildcard": "a.c"}}}, False),
    ({"data": {"name": {"wildcard": "a.c*"}}}, True),
    ({"data": {"name": {"wildcard": "a+csv"}}}, False),
    ({"data": {"name": {"prefix": "a", "suffix": ".csv"}}}, True),
    ({"data": {"name": {"prefix": "a", "suffix": ".h5"}}}, False),
    # numeric
    ({"data": {"size": {"numeric": [">", 0, "<=", 2048]}}}, True),
    ({"data": {"size": {"numeric": [">", 2048]}}}, False),
    ({"data": {"ratio": {"numeric": ["=", 0.5]}}}, True),
    ({"data": {"ratio": {"numeric": [">=", 0, "<", 0.5]}}}, False),
    ({"data": {"count": {"numeric": [">", 0]}}}, False),
    ({"data": {"flag": {"numeric": [">", 0]}}}, False),
    # exists
    ({"data": {"state": {"exists": True}}}, True),
    ({"data": {"none": {"exists": True}}}, True),
    ({"data": {"nope": {"exists": True}}}, False),
    ({"data": {"nope": {"exists": False}}}, True),
    ({"data": {"state": {"exists": False}}}, False),
    ({"data": {"deep": {"er": {"exists": False}}}}, True),
    ({"data": {"nope": ["x", {"exists": False}]}}, True),
    # anything-but
    ({"data": {"kind": {"anything-but": ["test", "tmp"]}}}, True),
    ({"data": {"kind": {"anything-but": "real"}}}, False),
    ({"data": {"nope": {"anything-but": "real"}}}, False),
    ({"data": {"size": {"anything-but": "2048"}}}, True),
    ({"data": {"labels": {"anything-but": "x"}}}, False),
    # nesting
    ({"data": {"labels": {"pipeline": "reduce"}}}, True),
    ({"data": {"labels": {"pipeline": "reduce", "site": "cloud"}}}, False),
    ({"data": {"labels": {"missing": "x"}}}, False),
    ({"data": {"state": {"inner": "x"}}}, False),
    # list-valued event fields: any element
    ({"data": {"tags": "night"}}, True),
    ({"data": {"tags": ["day", "raw"]}}, True),
    ({"data": {"tags": "day"}}, False),
    ({"data": {"tags": {"prefix": "ni"}}}, True),
    ({"data": {"sizes": {"numeric": [">", 100, "<", 1000]}}}, True),
    ({"data": {"sizes": {"numeric": [">", 1000]}}}, False),
    ({"data": {"files": {"name": {"suffix": ".h5"}}}}, True),
    ({"data": {"files": {"name": "x.h5", "size": 3}}}, True),
    ({"data": {"files": {"name": "x.h5", "size": 99}}}, False),
    # all keys: AND
    ({"type": "file.created", "source": "watch", "id": "ev-1",
      "data": {"state": ["succeeded", "failed"]}}, True),
    ({"type": "file.created", "source": "cron"}, False),
]


@pytest.mark.parametrize(("pattern", "expected"), MATCHING,
                         ids=[json.dumps(p)[:70] for p, _ in MATCHING])
def test_pattern_matches(pattern: dict[str, Any], expected: bool) -> None:
    assert Pattern(source=pattern).matches(FILE) is expected


def test_wildcard_is_linear_on_adversarial_input() -> None:
    pattern = Pattern(source={"subject": {"wildcard": "*a*a*a*a*a*a*a*a*a*a*b"}})
    assert not pattern.matches(Event(type="t", subject="a" * 20_000))


# -- invalid patterns ----------------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "message"), [
    ({"data": {"size": {"numeric": [">>", 0]}}}, "data.size.numeric[0]: '>>' is not a comparison"),
    ({"data": {"size": {"numeric": [">", "0"]}}}, "data.size.numeric[1]: '0' is not a number"),
    ({"data": {"size": {"numeric": [">", True]}}}, "data.size.numeric[1]: True is not a number"),
    ({"data": {"size": {"numeric": [">", 0, "<"]}}}, "data.size.numeric: must be one or two"),
    ({"data": {"x": {"prefix": "a", "startswith": "b"}}},
     "data.x.startswith: unknown operator 'startswith' (known: anything-but, exists, numeric, "
     "prefix, suffix, wildcard)"),
    ({"subject": {"prefx": "/data"}}, "subject.prefx: unknown operator 'prefx'"),
    ({"data": {"x": {"exists": "yes"}}}, "data.x.exists: must be true or false"),
    ({"data": {"x": {"exists": True, "prefix": "a"}}}, "data.x: exists cannot be combined"),
    ({"data": {"x": {"prefix": 3}}}, "data.x.prefix: must be a string"),
    ({"data": {"x": []}}, "data.x: an empty list matches nothing"),
    ({"data": {"x": {}}}, "data.x: an empty mapping matches nothing"),
    ({"data": {"x": ["a", ["b"]]}}, "data.x[1]: must be a string, number, boolean or null"),
    ({"data": {"x": {"anything-but": []}}}, "data.x.anything-but: the list is empty"),
    ({"time": "now"}, "time: unknown event field 'time'"),
    ({}, "name at least one event field"),
])
def test_invalid_patterns_name_the_place(pattern: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidPattern) as caught:
        Pattern(source=pattern)
    assert message in caught.value.message


# -- templates -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("{{ data.path }}", "/data/incoming/run7/a.csv"),
    ("{{data.path|basename}}", "a.csv"),
    ("{{ data.path | dirname }}", "/data/incoming/run7"),
    ("{{ data.path | stem }}", "a"),
    ("{{ data.path | suffix }}", ".csv"),
    ("{{ data.path | dirname | basename }}", "run7"),
    ("{{ data.labels.site }}-{{ data.size }}", "onprem-2048"),
    ("{{ data.tags.1 }} {{ data.flag }} {{ data.none }} {{ data.ratio }}", "night true null 0.5"),
    ("{{ data.labels }}", '{"pipeline": "reduce", "site": "onprem"}'),
    ("{{ event.id }} {{ event.type }} {{ event.source }}", "ev-1 file.created watch"),
    ("{{ event.time }}", "2023-11-14T22:13:20+00:00"),
    ("no templates {", "no templates {"),
])
def test_render(text: str, expected: str) -> None:
    assert render(text, FILE) == expected


def test_rendered_values_are_inserted_verbatim_never_rescanned() -> None:
    nasty = "$(rm -rf /); ls `id` {{ event.id }} \"'"
    event = Event(type="t", subject="s", data={"path": nasty})
    job = SubmitJob(template={"cluster": "local", "command": ["echo", "{{ data.path }}"]})
    assert job.job_spec(event, "r", 0).command == ("echo", nasty)


@pytest.mark.parametrize(("text", "message"), [
    ("{{ data.nope }}", "{{ data.nope }}: the event has no data.nope"),
    ("{{ data.labels.nope }}", "the event has no data.labels.nope"),
    ("{{ data.path.x }}", "the event has no data.path.x"),
    ("{{ data.tags.7 }}", "the event has no data.tags.7"),
])
def test_render_missing_path_is_an_error(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        render(text, FILE)


@pytest.mark.parametrize(("text", "message"), [
    ("{{ params.x }}", "unsupported template"),
    ("{{ event.seq }}", "unsupported template"),
    ("{{ data.path | upper }}", "unknown filter 'upper'"),
    ("{{ data.x.__class__() }}", "unsupported template"),
])
def test_template_syntax_is_checked(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        trial_render(text)


# -- actions -------------------------------------------------------------------------------
def test_job_spec_renders_and_keys_the_job() -> None:
    action = SubmitJob(template={
        "cluster": "local", "name": "reduce-{{ data.path | stem }}",
        "command": ["python3", "reduce.py", "{{ data.path }}", 3],
        "env": {"INPUT": "{{ data.path }}", "N": 4}, "labels": {"pipeline": "reduce"},
        "working_dir": "{{ data.path | dirname }}", "scheduler_options": ["--qos=low"],
        "resources": {"cores": 2, "memory": "1G", "walltime": "10m"}})
    spec = action.job_spec(FILE, "reduce-new-data", 2)
    assert spec.command == ("python3", "reduce.py", "/data/incoming/run7/a.csv", "3")
    assert spec.env == {"INPUT": "/data/incoming/run7/a.csv", "N": "4"}
    assert spec.name == "reduce-a"
    assert spec.working_dir == "/data/incoming/run7"
    assert spec.resources == Resources(cores=2, memory_mb=1024, walltime_s=600)
    assert spec.labels == {"pipeline": "reduce", "rule": "reduce-new-data"}
    assert spec.idempotency_key == "rule:reduce-new-data:watch:ev-1:2"
    assert action.job_spec(FILE, "reduce-new-data", 2) == spec


def test_idempotency_key_is_bounded() -> None:
    event = Event(type="t", subject="s", id="x" * 600)
    key = idempotency_key("r" * 128, event, 15)
    assert len(key) <= 512 and key.startswith("rule:" + "r" * 128 + ":sha256-")
    assert key == idempotency_key("r" * 128, event, 15) != idempotency_key("r" * 128, event, 14)


def test_start_workflow_params_and_key() -> None:
    action = StartWorkflow(spec="name: w\n", params={"sample": "{{ data.path | stem }}"})
    assert action.params_for(FILE) == {"sample": "a"}
    assert action.idempotency_key("r", FILE, 1) == "rule:r:watch:ev-1:1"
    other = Event(type=FILE.type, subject=FILE.subject, id=FILE.id, source="elsewhere")
    assert action.idempotency_key("r", other, 1) != action.idempotency_key("r", FILE, 1)
    with pytest.raises(InvalidSpec, match=r"the event has no data\.path"):
        action.params_for(Event(type="t", subject="s"))


def test_webhook_body_and_headers() -> None:
    hook = Webhook(url="https://example.org/hook", secret="s3cret", headers={"X-Team": "hpc"})
    body = hook.body(FILE, "notify")
    sent = json.loads(body)
    assert sent == {**FILE.to_cloudevent(), "rule": "notify"}
    assert b" " not in body.replace(b"run7/a", b"")  # compact
    headers = hook.headers_for(FILE, "notify", body)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Bridgehead-Event"] == "file.created"
    assert headers["X-Bridgehead-Delivery"] == "notify:ev-1"
    assert headers["X-Team"] == "hpc"
    assert verify("s3cret", body, headers["X-Bridgehead-Signature"])
    assert "X-Bridgehead-Signature" not in Webhook(url="http://h/").headers_for(FILE, "n", body)


def test_sign_and_verify() -> None:
    body = b'{"a":1}'
    signature = sign("k", body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify("k", body, signature)
    assert not verify("k", b'{"a":2}', signature)
    assert not verify("other", body, signature)
    tampered = signature[:-1] + ("1" if signature.endswith("0") else "0")
    assert not verify("k", body, tampered)
    assert not verify("k", body, None)
    assert not verify("k", body, "sha256=é")


def test_webhook_delay_doubles_up_to_the_cap() -> None:
    hook = Webhook(url="http://h/", backoff_s=1, max_backoff_s=5)
    assert [hook.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


# -- rules: dict form, masking, errors -------------------------------------------------------
RULE: dict[str, Any] = {
    "name": "reduce-new-data", "description": "reduce", "match": {"type": "file.created"},
    "actions": [
        {"submit_job": {"cluster": "local", "command": ["reduce", "{{ data.path }}"]}},
        {"start_workflow": {"spec": "name: w\n", "params": {"sample": "{{ data.name }}"}}},
        {"webhook": {"url": "https://example.org/hook", "secret": "s3cret",
                     "headers": {"Authorization": "Bearer tok", "X-Team": "hpc"},
                     "retries": 2, "backoff": "2s", "timeout": 5}},
    ],
}


def test_rule_round_trips_through_its_stored_form() -> None:
    rule = rule_from_dict(RULE)
    assert isinstance(rule, Rule) and rule.enabled and len(rule.actions) == 3
    hook = rule.actions[2]
    assert isinstance(hook, Webhook)
    assert (hook.retries, hook.backoff_s, hook.timeout_s, hook.max_backoff_s) == (2, 2, 5, 60)
    assert rule_from_dict(rule.to_dict()) == rule
    assert rule_from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert rule.matches(FILE)
    assert not rule_from_dict({**RULE, "enabled": False}).matches(FILE)


def test_public_dict_never_echoes_secrets() -> None:
    rule = rule_from_dict(RULE)
    public = rule.public_dict()
    text = json.dumps(public)
    assert "s3cret" not in text and "Bearer tok" not in text
    assert public["actions"][2]["webhook"]["secret"] == "***"
    assert public["actions"][2]["webhook"]["headers"] == {"Authorization": "***", "X-Team": "hpc"}
    assert rule.to_dict()["actions"][2]["webhook"]["secret"] == "s3cret"


def with_action(action: dict[str, Any]) -> dict[str, Any]:
    return {**RULE, "actions": [RULE["actions"][0], action]}


@pytest.mark.parametrize(("data", "message"), [
    ({**RULE, "name": "-bad"}, "name: '-bad' is not a rule name"),
    ({**RULE, "name": "a" * 129}, "is not a rule name"),
    ({**RULE, "enabled": "yes"}, "enabled: must be true or false"),
    ({**RULE, "extra": 1}, "extra: unknown field 'extra'"),
    ({k: v for k, v in RULE.items() if k != "match"}, "match: is required"),
    ({**RULE, "actions": []}, "actions: must be a list of 1 to 16 actions"),
    ({**RULE, "actions": RULE["actions"] * 6}, "actions: must be a list of 1 to 16"),
    ({**RULE, "match": {"data": {"size": {"numeric": [">", "x"]}}}},
     "match.data.size.numeric[1]: 'x' is not a number"),
    (with_action({"run_job": {}}),
     "actions[1].run_job: unknown action 'run_job' (known: submit_job, start_workflow, webhook)"),
    (with_action({"webhook": {"url": "ftp://example.org/"}}),
     "actions[1].webhook.url: must be an http or https URL"),
    (with_action({"webhook": {"url": "https://u:p@example.org/"}}),
     "actions[1].webhook.url: may not contain credentials"),
    (with_action({"webhook": {"url": "https://h/", "retries": 21}}),
     "actions[1].webhook.retries: must be an integer from 0 to 20"),
    (with_action({"webhook": {"url": "https://h/", "timeout": "soon"}}),
     "actions[1].webhook.timeout: 'soon' is not a duration"),
    (with_action({"webhook": {"url": "https://h/",
                              "headers": {"X-Bridgehead-Signature": "x"}}}),
     "actions[1].webhook.headers.X-Bridgehead-Signature: is set by Bridgehead"),
    (with_action({"webhook": {"url": "https://h/", "headers": {"X-A": "a\r\nB: b"}}}),
     "actions[1].webhook.headers.X-A: must be printable ASCII"),
    (with_action({"submit_job": {"cluster": "local", "command": "rm -rf /"}}),
     "actions[1].submit_job.command: must be a list of words (argv), not a shell string"),
    (with_action({"submit_job": {"cluster": "local", "command": ["a"], "env": {"A-B": "x"}}}),
     "actions[1].submit_job: env name 'A-B' is not a valid variable name"),
    (with_action({"submit_job": {"cluster": "local", "command": ["a"],
                                 "scheduler_options": ["-p debug"]}}),
     "actions[1].submit_job: scheduler option '-p debug'"),
    (with_action({"submit_job": {"cluster": "local", "command": ["{{ data.x | up }}"]}}),
     "actions[1].submit_job: unknown filter 'up'"),
    (with_action({"submit_job": {"cluster": "local", "command": ["a"],
                                 "resources": {"memory": "lots"}}}),
     "actions[1].submit_job.resources.memory: memory 'lots'"),
    (with_action({"submit_job": {"cluster": "local", "command": ["a"],
                                 "resources": {"cores": True}}}),
     "actions[1].submit_job.resources.cores: must be an integer"),
    (with_action({"submit_job": {"cluster": "local", "command": ["a"],
                                 "idempotency_key": "k"}}),
     "actions[1].submit_job.idempotency_key: is set by the rule"),
    (with_action({"submit_job": {"command": ["a"]}}),
     "actions[1].submit_job: give a cluster, or cluster_labels"),
    (with_action({"start_workflow": {"file": "w.yaml"}}),
     "actions[1].start_workflow.file: is only for rules files"),
    (with_action({"start_workflow": {"spec": "name: w\n", "params": {"a-b": "x"}}}),
     "actions[1].start_workflow.params: 'a-b' is not a param name"),
    (with_action({"start_workflow": {"spec": "name: w\n", "params": {"a": "{{ x }}"}}}),
     "actions[1].start_workflow.params.a: unsupported template"),
])
def test_invalid_rules_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRule) as caught:
        rule_from_dict(data)
    assert message in caught.value.message
    assert isinstance(caught.value, InvalidSpec)
