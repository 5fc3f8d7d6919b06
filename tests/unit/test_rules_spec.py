"""Rules files: the contract's example, start_workflow files inlined, and errors that name the
file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent, indent

import pytest

from bridgehead.domain.events import Event
from bridgehead.domain.rules import StartWorkflow, SubmitJob, Webhook
from bridgehead.errors import InvalidSpec
from bridgehead.rules import (
    load_rules,
    parse_rules,
    rules_json_schema,
    validate_rule,
)
from bridgehead.workflows import MAX_FILE_BYTES

WORKFLOW = dedent("""\
    name: reduce
    params: {sample: none}
    defaults: {cluster: local}
    steps:
      - id: reduce
        command: [reduce, "{{ params.sample }}"]
    """)

# The contract's example, verbatim but for the start_workflow spec (a real workflow file).
CONTRACT = dedent("""\
    rules:
      - name: reduce-new-data          # [A-Za-z0-9][A-Za-z0-9_.-]{0,127}; unique; the id
        description: optional text
        enabled: true                  # default true
        match:                         # an event pattern, like cloud event-bus patterns
          type: file.created           # scalar: exact match
          source: [watch, external]    # list: any of (each element a scalar or an operator)
          subject: {prefix: "/data/"}
          data:                        # nested mapping: recurse into the event's data
            path: {prefix: "/data/incoming/"}
            name: {wildcard: "*.csv"}  # * and ? glob-style, whole string, case-sensitive
            size: {numeric: [">", 0, "<=", 1000000000]}   # 1 or 2 comparisons: > >= < <= =
            state: [succeeded, failed]
            labels: {pipeline: reduce}
            note: {exists: true}       # or false: key absent
            kind: {anything-but: [test, tmp]}   # scalar or list
            other: {suffix: ".h5"}
        actions:                       # 1..16, executed in order, each failure isolated
          - submit_job:                # a job template: JobIn fields (see server/schemas.py)
              cluster: local           #   (or cluster_labels)
              name: reduce
              command: [python3, reduce.py, "{{ data.path }}"]   # or script: "#!..."
              env: {INPUT: "{{ data.path }}"}
              labels: {pipeline: reduce}
              resources: {cores: 1, memory: 1G, walltime: 10m}  # same units as workflow files
          - start_workflow:
              file: workflows/reduce.yaml
              params: {sample: "{{ data.stem }}"}
          - webhook:
              url: https://example.org/hook    # http or https only
              secret: "s3cret"                 # optional; HMAC-SHA256 of the body
              headers: {X-Team: hpc}           # optional
              retries: 5                       # default 5 (after the first try), 0..20
              backoff: 1s                      # default 1s, doubles each retry, max 60s
              timeout: 10s                     # per attempt, default 10s
    """)

EVENT = Event(type="file.created", source="watch", subject="/data/incoming/a.csv", id="e1",
              data={"path": "/data/incoming/a.csv", "name": "a.csv", "stem": "a", "size": 10,
                    "state": "succeeded", "labels": {"pipeline": "reduce"}, "note": "",
                    "kind": "real", "other": "x.h5"})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "reduce.yaml").write_text(WORKFLOW)
    return tmp_path


def parse_error(text: str, base_dir: Path | None = None) -> str:
    with pytest.raises(InvalidSpec) as caught:
        parse_rules(text, "rules.yaml", base_dir)
    return caught.value.message


def rule(body: str, name: str = "r") -> str:
    """A rules file whose rule's first action starts on line 5."""
    return (f"rules:\n  - name: {name}\n    match: {{type: file.created}}\n    actions:\n"
            + indent(dedent(body), "      "))


# -- the contract's example ------------------------------------------------------------------
def test_the_contract_example_loads(folder: Path) -> None:
    (folder / "rules.yaml").write_text(CONTRACT)
    (loaded,) = load_rules(folder / "rules.yaml")
    assert loaded.name == "reduce-new-data" and loaded.description == "optional text"
    submit, start, hook = loaded.actions
    assert isinstance(submit, SubmitJob) and isinstance(start, StartWorkflow)
    assert isinstance(hook, Webhook)
    assert (start.spec, start.filename) == (WORKFLOW, "workflows/reduce.yaml")
    assert (hook.retries, hook.backoff_s, hook.timeout_s, hook.secret) == (5, 1, 10, "s3cret")
    assert loaded.matches(EVENT)
    assert not loaded.matches(Event(type="file.created", source="watch", subject="/data/x",
                                    data={**EVENT.data, "kind": "tmp"}))
    job = submit.job_spec(EVENT, loaded.name, 0)
    assert job.command == ("python3", "reduce.py", "/data/incoming/a.csv")
    assert (job.resources.memory_mb, job.resources.walltime_s) == (1024, 600)
    assert start.params_for(EVENT) == {"sample": "a"}


def test_inline_spec_and_the_api_form(folder: Path) -> None:
    text = CONTRACT.replace("file: workflows/reduce.yaml",
                            "spec: " + json.dumps(WORKFLOW))
    (loaded,) = parse_rules(text, "rules.yaml")
    assert validate_rule(loaded.to_dict()) == loaded
    start = loaded.actions[1]
    assert isinstance(start, StartWorkflow) and start.spec == WORKFLOW


def test_base_dir_defaults_to_the_files_folder(folder: Path) -> None:
    assert parse_rules(CONTRACT, str(folder / "rules.yaml"))
    assert parse_rules(CONTRACT, "rules.yaml", base_dir=folder)
    assert "workflows/reduce.yaml: cannot read" in parse_error(CONTRACT)


def test_an_empty_list_of_rules_is_fine() -> None:
    assert parse_rules("rules: []\n") == []


# -- errors: file:line: field: message -------------------------------------------------------
def test_bad_operator_is_located() -> None:
    text = dedent("""\
        rules:
          - name: r
            match:
              type: file.created
              data:
                size: {numeric: [">", 0], bigger: 3}
            actions: [{webhook: {url: "https://h/"}}]
        """)
    assert parse_error(text) == (
        "rules.yaml:6: rules[0].match.data.size.bigger: unknown operator 'bigger' (known: "
        "anything-but, exists, numeric, prefix, suffix, wildcard)")


def test_unknown_action() -> None:
    assert parse_error(rule("""\
          - webhook: {url: "https://h/"}
          - run_shell: {command: ls}
        """)) == ("rules.yaml:6: rules[0].actions[1].run_shell: unknown action 'run_shell' "
                  "(known: submit_job, start_workflow, webhook)")


def test_duplicate_rule_name() -> None:
    one = rule("""\
          - webhook: {url: "https://h/"}
        """)
    text = one + one.removeprefix("rules:\n")
    assert parse_error(text) == \
        "rules.yaml:6: rules[1].name: duplicate rule name 'r' (also rules[0])"


def test_bad_url_scheme() -> None:
    assert parse_error(rule("""\
          - webhook:
              url: file:///etc/passwd
        """)) == "rules.yaml:6: rules[0].actions[0].webhook.url: must be an http or https URL"


def test_missing_workflow_file(tmp_path: Path) -> None:
    message = parse_error(rule("""\
          - start_workflow:
              file: nope.yaml
        """), tmp_path)
    assert message.startswith("rules.yaml:6: rules[0].actions[0].start_workflow.file: ")
    assert "nope.yaml: cannot read" in message


def test_invalid_workflow_file_gives_its_error(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text("name: w\nsteps:\n  - id: a\n    command: ls\n")
    assert parse_error(rule("""\
          - start_workflow: {file: w.yaml}
        """), tmp_path) == (
        "rules.yaml:5: rules[0].actions[0].start_workflow.file: w.yaml:4: steps[0].command: "
        "command must be a list of words (argv), not a shell string")


def test_params_must_be_declared_by_the_workflow(folder: Path) -> None:
    assert parse_error(rule("""\
          - start_workflow:
              file: workflows/reduce.yaml
              params:
                sampel: x
        """), folder) == ("rules.yaml:8: rules[0].actions[0].start_workflow.params.sampel: "
                          "workflow 'reduce' has no param 'sampel' (it has: sample)")


def test_spec_and_file_together(folder: Path) -> None:
    assert "give spec or file, not both" in parse_error(rule("""\
          - start_workflow: {file: workflows/reduce.yaml, spec: "name: w"}
        """), folder)


def test_invalid_inline_spec_is_located() -> None:
    message = parse_error(rule("""\
          - start_workflow:
              spec: "name: w\\n"
        """))
    assert message.startswith("rules.yaml:6: rules[0].actions[0].start_workflow.spec: <spec>:")
    with pytest.raises(InvalidSpec, match=r"^actions\[0\]\.start_workflow\.spec: <spec>:1"):
        validate_rule({"name": "r", "match": {"type": "t"},
                       "actions": [{"start_workflow": {"spec": "name: w\n"}}]})


def test_template_error_in_a_job() -> None:
    assert parse_error(rule("""\
          - submit_job:
              cluster: local
              command: [echo, "{{ data.path | upper }}"]
        """)).startswith("rules.yaml:5: rules[0].actions[0].submit_job: unknown filter 'upper'")


@pytest.mark.parametrize(("text", "message"), [
    ("- a\n", "rules.yaml:1: the top level must be a mapping: rules: [...]"),
    ("rule: []\n", "rules.yaml:1: rule: unknown field 'rule' (known: rules)"),
    ("rules: {}\n", "rules.yaml:1: rules: must be a list of rules"),
    ("rules:\n  - name: r\n    match: {type: t}\n", "rules.yaml:2: rules[0].actions: is required"),
    ("rules:\n  - &a {name: r}\n  - *a\n", "rules.yaml:3: invalid YAML: aliases"),
    ("rules:\n  - name: r\n    name: s\n", "rules.yaml:3: invalid YAML: duplicate key 'name'"),
    ("rules: [\n", "rules.yaml:2: invalid YAML"),
    ("", "rules.yaml:1: the file is empty"),
])
def test_file_shape_errors(text: str, message: str) -> None:
    assert parse_error(text).startswith(message)


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    big = "rules: []\n" + "#" * MAX_FILE_BYTES
    assert parse_error(big) == f"rules.yaml: larger than {MAX_FILE_BYTES} bytes"
    (tmp_path / "rules.yaml").write_text(big)
    with pytest.raises(InvalidSpec, match="larger than"):
        load_rules(tmp_path / "rules.yaml")
    (tmp_path / "w.yaml").write_text(WORKFLOW + "#" * MAX_FILE_BYTES)
    assert "w.yaml: larger than" in parse_error(rule("""\
          - start_workflow: {file: w.yaml}
        """), tmp_path)


def test_json_schema_describes_the_file() -> None:
    schema = rules_json_schema()
    item = schema["properties"]["rules"]["items"]
    assert item["required"] == ["name", "match", "actions"]
    assert set(item["properties"]["actions"]["items"]["properties"]) == {
        "submit_job", "start_workflow", "webhook"}


# -- a Spark application as a rule's job -------------------------------------------------------
def test_a_rule_submits_a_spark_application_with_the_event_in_its_words() -> None:
    (loaded,) = parse_rules(rule("""\
          - submit_job:
              cluster: spark
              resources: {max_cores: 5}
              spark:
                application: /apps/ingest.py
                arguments: ["{{ data.path }}", --stem, "{{ data.stem }}"]
                conf: {spark.sql.shuffle.partitions: "{{ data.size }}"}
                driver_memory: 2G
                executor_memory: 512
                executors: 8
        """), "rules.yaml")
    (submit,) = loaded.actions
    assert isinstance(submit, SubmitJob) and validate_rule(loaded.to_dict()) == loaded
    job = submit.job_spec(EVENT, loaded.name, 0)
    assert job.spark is not None and job.command == () and job.script is None
    assert job.spark.arguments == ("/data/incoming/a.csv", "--stem", "a")
    assert job.spark.conf == {"spark.sql.shuffle.partitions": "10"}
    assert (job.spark.driver_memory_mb, job.spark.executor_memory_mb) == (2048, 512)
    assert job.spark.executors == 4  # max_cores 5 = 1 driver core + 4 executors x 1 core
    assert (job.resources.cores, job.resources.memory_mb) == (5, 2048 + 4 * 512)


@pytest.mark.parametrize(("body", "message"), [
    ("spark: {arguments: [x]}", "submit_job.spark.application: is required"),
    ("spark: {application: /a.py, arguments: 'a b'}",
     "submit_job.spark.arguments: must be a list of words (argv), not a shell string"),
    ("spark: {application: /a.py, executors: many}", "submit_job.spark.executors: must be an "
                                                     "integer"),
    ("spark: {application: /a.py, driver_memory: true}",
     "submit_job.spark.driver_memory: must be MB (an integer) or a size (2G)"),
    ("spark: {application: /a.py, deploy_mode: client}",
     "submit_job.spark.deploy_mode: unknown field 'deploy_mode'"),
    ("spark: {application: /a.py, conf: {hadoop.x: y}}",
     "submit_job: spark.conf name 'hadoop.x' is not a spark.* setting"),
    ("spark: {application: /a.py}\ncommand: [echo]",
     "submit_job: give exactly one of command (argv list), script or spark"),
])
def test_a_bad_spark_template_is_refused_at_its_field(body: str, message: str) -> None:
    text = rule("- submit_job:\n    cluster: spark\n    " + body.replace("\n", "\n    ") + "\n")
    line = 7 if message.startswith("submit_job.spark.") else 5  # the field's line, or the job's
    assert parse_error(text).startswith(f"rules.yaml:{line}: rules[0].actions[0].{message}"), \
        parse_error(text)
