"""Workflow files: parsing, defaults, the graph, fan-out, templates, and errors that name the
file, the line and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from bridgehead.domain.jobs import Resources
from bridgehead.domain.workflows import (
    Foreach,
    InvalidWorkflow,
    RetryPolicy,
    StepSpec,
    WorkflowSpec,
    render,
    step_job_spec,
)
from bridgehead.errors import InvalidSpec, NotFound
from bridgehead.workflows import (
    MAX_FILE_BYTES,
    load_workflow,
    load_workflows,
    parse_workflow,
    workflow_json_schema,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "workflows" / "crystallography.yaml"

PIPELINE = dedent("""\
    name: pipeline
    params: {bins: 3, sample: lysozyme}
    defaults:
      cluster: local
      resources: {cores: 1, memory: 512M, walltime: 10m}
      env: {OMP_NUM_THREADS: "1", MODE: fast}
      retries: {count: 2, backoff: 5s}
      options: ["--qos=low"]
    steps:
      - id: find_peaks
        command: [python3, -c, "print('peaks for {{ params.sample }}')"]
      - id: index
        needs: [find_peaks]
        foreach: {param: bins}
        command: [echo, "bin {{ item }}", 7]
        resources: {cores: 2, max_cores: 1}
        env: {MODE: slow}
      - id: merge
        needs: [index]
        cluster_labels: {site: onprem}
        script: |
          #!/bin/sh
          echo merging
        timeout: 1h
        options: ["--qos=high"]
        retries: 0
    """)


def parse_error(text: str) -> str:
    with pytest.raises(InvalidSpec) as caught:
        parse_workflow(text, "w.yaml")
    return caught.value.message


def one_step(body: str, head: str = "name: w\nparams: {n: 2}\ndefaults: {cluster: local}\n") -> str:
    """A workflow whose steps list starts on line 5 (the first step's ``- id`` line)."""
    return head + "steps:\n" + dedent(body)


# -- parsing and defaults -------------------------------------------------------------------
def test_defaults_are_merged_into_every_step() -> None:
    wf = parse_workflow(PIPELINE)
    peaks, index, merge = wf.steps
    assert peaks.cluster == "local" and peaks.cluster_labels == {}
    assert peaks.resources == Resources(cores=1, memory_mb=512, walltime_s=600)
    assert peaks.retries == RetryPolicy(count=2, backoff_s=5.0)
    assert peaks.scheduler_options == ("--qos=low",)
    assert index.resources == Resources(cores=2, max_cores=1, memory_mb=512, walltime_s=600)
    assert index.env == {"OMP_NUM_THREADS": "1", "MODE": "slow"}
    assert index.command == ("echo", "bin {{ item }}", "7")
    assert index.foreach == Foreach(param="bins")
    # a step's cluster_labels replace the defaults' cluster (where a step runs is one choice)
    assert merge.cluster == "" and merge.cluster_labels == {"site": "onprem"}
    assert merge.script is not None and merge.script.startswith("#!/bin/sh\n")
    assert merge.timeout_s == 3600 and merge.retries == RetryPolicy()
    assert merge.scheduler_options == ("--qos=high",)
    assert wf.params == {"bins": 3, "sample": "lysozyme"}


def test_the_example_file_is_valid() -> None:
    wf = load_workflow(EXAMPLE)
    assert wf.name == "crystallography"
    assert wf.topological_order() == ["find_peaks", "index", "merge", "figures_of_merit"]
    assert wf.step("index").foreach == Foreach(param="bins")
    assert len(wf.job_specs("index")) == wf.params["bins"]
    assert wf in load_workflows(EXAMPLE.parent)


def test_graph_order_roots_and_dependents() -> None:
    wf = parse_workflow(one_step("""\
        - {id: report, needs: [b, a], command: [echo]}
        - {id: b, needs: [c], command: [echo]}
        - {id: c, command: [echo]}
        - {id: a, command: [echo]}
        - {id: d, needs: [c], command: [echo]}
        """))
    # of the steps ready at each point, the first in the file runs first
    assert wf.topological_order() == ["c", "b", "a", "report", "d"]
    assert wf.roots() == ["c", "a"]
    assert wf.dependents("c") == ["b", "d"]
    assert wf.dependents("report") == []
    with pytest.raises(NotFound):
        wf.step("nope")


# -- fan-out ---------------------------------------------------------------------------------
@pytest.mark.parametrize("foreach, items", [
    ("[a, 2, 3.5]", ["a", 2, 3.5]),
    ("{range: 3}", [0, 1, 2]),
    ("{range: [2, 5]}", [2, 3, 4]),
    ("{range: [0, 10, 4]}", [0, 4, 8]),
    ("{param: n}", [0, 1]),
])
def test_foreach_items(foreach: str, items: list[object]) -> None:
    wf = parse_workflow(one_step(f"""\
        - id: a
          foreach: {foreach}
          command: [echo, "{{{{ item }}}}"]
        """))
    assert [job.command for job in wf.job_specs("a")] == [("echo", str(i)) for i in items]


def test_foreach_width_comes_from_the_run_params() -> None:
    wf = parse_workflow(PIPELINE)
    assert len(wf.job_specs("index")) == 3
    jobs = wf.job_specs("index", {"bins": 5})
    assert [job.command[1] for job in jobs] == [f"bin {i}" for i in range(5)]
    assert [job.command[1] for job in wf.job_specs("index", {"bins": ["x", "y"]})] == [
        "bin x", "bin y"]
    assert wf.job_specs("index", {"bins": 0}) == []
    for bad in ("four", True, 10_001, [[1]]):
        with pytest.raises(InvalidSpec, match="bins"):
            wf.job_specs("index", {"bins": bad})
    with pytest.raises(InvalidSpec, match="no param 'bns'"):
        wf.job_specs("index", {"bns": 5})
    with pytest.raises(InvalidSpec, match="not given"):
        Foreach(param="bins").items({})


def test_retry_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(count=5, backoff_s=10, max_backoff_s=60)
    assert [policy.delay(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    assert RetryPolicy(count=1, backoff_s=1).delay(10_000) == 3600
    assert RetryPolicy().delay(1) == 0


# -- templates ---------------------------------------------------------------------------------
def test_render_params_and_item() -> None:
    assert render("{{ params.sample }}/{{item}}/{{  params.n  }}", {"sample": "s", "n": 3},
                  item=7) == "s/7/3"
    assert render("no templates: {x} ${HOME} {{", {}) == "no templates: {x} ${HOME} {{"
    with pytest.raises(InvalidSpec, match="unknown param 'nope'"):
        render("{{ params.nope }}", {})
    with pytest.raises(InvalidSpec, match="foreach"):
        render("{{ item }}", {})
    with pytest.raises(InvalidSpec, match="unsupported template"):
        render("{{ ds }}", {})


@pytest.mark.parametrize("hostile", [
    "$(rm -rf /)", "`reboot`", "'; rm -rf / #", '"quoted" and \\"escaped\\"', "a b\tc\nd",
    "{{ params.sample }}", "*", "--qos=high",
])
def test_hostile_values_stay_one_argv_word_verbatim(hostile: str) -> None:
    wf = parse_workflow(PIPELINE)
    params = wf.resolve_params({"sample": hostile})
    job = step_job_spec(wf, wf.step("find_peaks"), params)
    assert job.command == ("python3", "-c", f"print('peaks for {hostile}')")
    [job] = wf.job_specs("index", {"bins": [hostile]})
    assert job.command == ("echo", f"bin {hostile}", "7")


def test_job_spec_of_a_step() -> None:
    wf = parse_workflow(PIPELINE)
    job = step_job_spec(wf, wf.step("merge"), wf.params)
    assert job.script is not None and job.command == ()
    assert job.cluster_labels == {"site": "onprem"} and job.name == "pipeline.merge"
    assert job.labels == {"workflow": "pipeline", "step": "merge"}
    with pytest.raises(InvalidSpec, match="item"):
        step_job_spec(wf, wf.step("index"), wf.params)


# -- errors: file, line, field ------------------------------------------------------------
def test_unknown_needs_names_the_step_and_line() -> None:
    message = parse_error(one_step("""\
        - id: find_peaks
          command: [echo]
        - id: index
          needs: [findpeaks]
          command: [echo]
        """))
    assert message == "w.yaml:8: steps[1].needs[0]: unknown step 'findpeaks'"


def test_cycle_is_named() -> None:
    message = parse_error(one_step("""\
        - {id: a, needs: [c], command: [echo]}
        - {id: b, needs: [a], command: [echo]}
        - {id: c, needs: [b], command: [echo]}
        """))
    assert message == "w.yaml:5: steps[0].needs: steps form a cycle: a -> c -> b -> a"
    assert "a -> a" in parse_error(one_step("- {id: a, needs: [a], command: [echo]}\n"))


def test_duplicate_step_ids() -> None:
    message = parse_error(one_step("""\
        - {id: a, command: [echo]}
        - {id: b, command: [echo]}
        - {id: a, command: [echo]}
        """))
    assert message == "w.yaml:7: steps[2].id: duplicate step id 'a' (also steps[0])"


def test_bad_field_points_at_its_line() -> None:
    message = parse_error(one_step("""\
        - id: a
          command: [echo]
          resources:
            memory: 1G
            cores: 0
        """))
    assert message == ("w.yaml:9: steps[0].resources.cores: "
                       "Input should be greater than or equal to 1")


@pytest.mark.parametrize("body, expected", [
    ("- {id: a, comand: [echo]}\n", "w.yaml:5: steps[0].comand: Extra inputs are not permitted"),
    ("- {command: [echo]}\n", "w.yaml:5: steps[0].id: Field required"),
    ("- id: a\n  command: [echo]\n  retries: {count: -1}\n",
     "w.yaml:7: steps[0].retries.count: Input should be greater than or equal to 0"),
    ("- id: a\n  command: [echo]\n  timeout: soon\n",
     "w.yaml:7: steps[0].timeout: 'soon' is not a duration: use 90, 30m, 2h or HH:MM:SS"),
    ("- id: a\n  command: [echo, '{{ item }}']\n",
     "w.yaml:6: steps[0].command[1]: {{ item }} is only defined in a step with foreach"),
    ("- id: a\n  command: [echo, '{{ params.x }}']\n",
     "w.yaml:6: steps[0].command[1]: unknown param 'x' (declare it under params)"),
    ("- id: a\n  foreach: {param: m}\n  command: [echo]\n",
     "w.yaml:6: steps[0].foreach.param: unknown param 'm' (declare it under params)"),
    ("- id: a\n  command: [echo]\n  script: '#!/bin/sh'\n",
     "w.yaml:5: steps[0]: give exactly one of command (argv list), script or spark"),
    ("- {id: 'a b', command: [echo]}\n", "w.yaml:5: steps[0].id: 'a b' is not a step id"),
    ("- {id: a, command: [echo], options: ['; rm -rf /']}\n",
     "w.yaml:5: steps[0]: scheduler option '; rm -rf /' is not of the form"),
])
def test_field_errors(body: str, expected: str) -> None:
    assert parse_error(one_step(body)).startswith(expected)


def test_plain_string_command_is_refused() -> None:
    message = parse_error(one_step("- id: a\n  command: echo hello; rm -rf /\n"))
    assert message == ("w.yaml:6: steps[0].command: "
                       "command must be a list of words (argv), not a shell string")


def test_yaml_syntax_error_has_its_line() -> None:
    message = parse_error("name: w\nsteps:\n  - id: a\n    command: [echo\n  - id: b\n")
    assert message.startswith("w.yaml:5: invalid YAML:")


@pytest.mark.parametrize("text, expected", [
    ("name: w\nname: v\nsteps: []\n", "w.yaml:2: invalid YAML: duplicate key 'name'"),
    ("name: w\nsteps:\n  - &s {id: a, command: [echo]}\n  - *s\n",
     "w.yaml:4: invalid YAML: aliases"),
    ("- name: w\n", "w.yaml:1: the top level must be a mapping"),
    ("# nothing\n", "w.yaml:1: the file is empty"),
    ("name: w\nsteps:\n  - id: !!python/object/apply:os.system [true]\n",
     "w.yaml:3: invalid YAML: could not determine a constructor"),
    ("name: 'bad name'\nsteps: [{id: a, cluster: x, command: [echo]}]\n",
     "w.yaml:1: name: 'bad name' is not a workflow name"),
    ("name: w\nsteps: [{id: a, command: [echo]}]\n",
     "w.yaml:2: steps[0]: give cluster or cluster_labels, in the step or in defaults"),
])
def test_file_level_errors(text: str, expected: str) -> None:
    assert parse_error(text).startswith(expected)


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(PIPELINE + "#" * MAX_FILE_BYTES)
    with pytest.raises(InvalidSpec, match="larger than"):
        load_workflow(path)
    with pytest.raises(InvalidSpec, match="larger than"):
        parse_workflow(path.read_text())


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "crystallography.yaml"
    path.write_text(one_step("- {id: a, needs: [x], command: [echo]}\n"))
    with pytest.raises(InvalidSpec, match=r"crystallography\.yaml:5: steps\[0\]\.needs\[0\]"):
        load_workflow(path)
    with pytest.raises(InvalidSpec, match="cannot read"):
        load_workflow(tmp_path / "missing.yaml")


def test_two_files_with_one_workflow_name(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(PIPELINE)
    (tmp_path / "b.yml").write_text(PIPELINE)
    with pytest.raises(InvalidSpec, match="'pipeline' is also in"):
        load_workflows(tmp_path)


def test_domain_validation_without_yaml() -> None:
    step = StepSpec(id="a", command=("echo",), cluster="local")
    with pytest.raises(InvalidWorkflow) as caught:
        WorkflowSpec(name="w", steps=(step, StepSpec(id="b", command=("x",), needs=("z",),
                                                     cluster="local")))
    assert caught.value.loc == ("steps", 1, "needs", 0)
    with pytest.raises(InvalidSpec, match="exactly one"):
        Foreach(values=("a",), param="n")


# -- schema and CLI -------------------------------------------------------------------------
def test_json_schema() -> None:
    schema = json.loads(json.dumps(workflow_json_schema()))
    assert schema["type"] == "object" and "steps" in schema["properties"]
    assert schema["additionalProperties"] is False
    assert "steps" in schema["required"] and "name" in schema["required"]


def test_json_schema_accepts_the_example_and_refuses_extra_fields() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    validator = jsonschema.Draft202012Validator(workflow_json_schema())
    for text in (EXAMPLE.read_text(), PIPELINE):
        assert list(validator.iter_errors(yaml.safe_load(text))) == []
    bad = yaml.safe_load(PIPELINE.replace("id: merge", "id: merge\n    comand: [x]"))
    assert list(validator.iter_errors(bad))


def bridgehead(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BRIDGEHEAD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_validate(tmp_path: Path) -> None:
    ok = bridgehead("workflow", "validate", str(EXAMPLE), home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "find_peaks" in ok.stdout and "params.bins" in ok.stdout
    as_json = bridgehead("workflow", "validate", "--json", str(EXAMPLE), home=tmp_path)
    assert json.loads(as_json.stdout)["steps"][1]["foreach"]["param"] == "bins"

    bad = tmp_path / "bad.yaml"
    bad.write_text(one_step("- {id: a, needs: [nope], command: [echo]}\n"))
    result = bridgehead("workflow", "validate", str(EXAMPLE), str(bad), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"bridgehead: error: {bad}:5: steps[0].needs[0]: unknown step 'nope'"]


def test_cli_schema(tmp_path: Path) -> None:
    result = bridgehead("workflow", "schema", home=tmp_path)
    assert result.returncode == 0
    assert "steps" in json.loads(result.stdout)["properties"]
