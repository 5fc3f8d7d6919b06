"""``spark:`` steps in workflow files: parsed into the step's Spark application, templated in
its arguments and conf values (and a fan-out's item), sized into the job's resources, and
refused with the file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from bridgehead.domain.workflows import StepSpec, WorkflowSpec, step_job_spec
from bridgehead.errors import InvalidSpec
from bridgehead.workflows import parse_workflow
from tests.unit.test_cli import run

FLOW = dedent("""\
    name: etl
    params: {day: "2026-01-01", partitions: 8, bins: [a, b]}
    defaults:
      cluster: sparky
      resources: {cores: 4, memory: 4G}
    steps:
      - id: load
        spark:
          application: /apps/load.py
          arguments: [--day, "{{ params.day }}", 7]
          conf: {spark.sql.shuffle.partitions: "{{ params.partitions }}"}
          executors: 4
          executor_cores: 2
          executor_memory: 2G
          driver_memory: 1G
          py_files: [/apps/lib.zip]
      - id: per_bin
        needs: [load]
        foreach: {param: bins}
        resources: {max_cores: 5}
        spark:
          application: s3://b/bin.jar
          main_class: com.example.Bin
          arguments: ["{{ item }}"]
          executors: 10
""")


def test_a_spark_step_becomes_a_sized_spark_job() -> None:
    flow = parse_workflow(FLOW, "etl.yaml")
    [job] = flow.job_specs("load", {"day": "2026-02-03"})
    app = job.spark
    assert app is not None and job.command == () and job.script is None
    assert app.application == "/apps/load.py" and app.py_files == ("/apps/lib.zip",)
    assert app.arguments == ("--day", "2026-02-03", "7")
    assert app.conf == {"spark.sql.shuffle.partitions": "8"}
    assert (app.executor_memory_mb, app.driver_memory_mb) == (2048, 1024)
    # the defaults' cores and memory are not a Spark step's: its app's sizes are
    assert job.resources.cores == 1 + 4 * 2
    assert job.resources.memory_mb == 1024 + 4 * 2048
    assert job.name == "etl.load" and job.labels["step"] == "load"


def test_a_spark_fan_out_gets_its_item_and_its_cap() -> None:
    flow = parse_workflow(FLOW, "etl.yaml")
    jobs = flow.job_specs("per_bin")
    assert [j.spark.arguments for j in jobs if j.spark] == [("a",), ("b",)]
    assert all(j.spark and j.spark.executors == 4 and j.resources.cores == 5 for j in jobs)
    assert all(j.resources.memory_mb is None for j in jobs)  # Spark's own defaults


@pytest.mark.parametrize(("replace", "by", "where"), [
    ("spark.sql.shuffle.partitions", "shuffle", "etl.yaml:11: steps[0].spark.conf: "
                                                "spark.conf name 'shuffle' is not a spark.*"),
    ("application: /apps/load.py", "application: load.py",
     "etl.yaml:9: steps[0].spark.application: spark.application 'load.py' must be"),
    ("main_class: com.example.Bin", "main_class: 'no such'",
     "etl.yaml:23: steps[1].spark.main_class: spark.main_class 'no such' is not a class"),
    ("executors: 4", "executors: 0", "etl.yaml:12: steps[0].spark.executors:"),
    ("executor_memory: 2G", "executor_memory: lots", "etl.yaml:14: steps[0].spark."
                                                     "executor_memory: 'lots' is not a size"),
    ("{{ params.partitions }}", "{{ params.nope }}",
     "etl.yaml:11: steps[0].spark.conf.spark.sql.shuffle.partitions: unknown param 'nope'"),
    ('"{{ params.day }}"', '"{{ item }}"', "steps[0].spark.arguments[1]: {{ item }} is only"),
    ("py_files: [/apps/lib.zip]", "colour: red", "etl.yaml:16: steps[0].spark.colour:"),
    ("resources: {max_cores: 5}", "resources: {max_cores: 1}",
     "steps[1]: spark: max_cores 1 leaves no room for one executor"),
    ("resources: {max_cores: 5}", "resources: {cores: 3}",
     "steps[1]: resources.cores (3) contradicts the Spark application's 11 cores"),
    ("    spark:\n      application: /apps/load.py",
     "    command: [echo]\n    spark:\n      application: /apps/load.py",
     "steps[0]: give exactly one of command (argv list), script or spark"),
])
def test_a_bad_spark_step_is_refused_at_its_field(replace: str, by: str, where: str) -> None:
    assert replace in FLOW
    with pytest.raises(InvalidSpec) as caught:
        parse_workflow(FLOW.replace(replace, by, 1), "etl.yaml")
    assert where in caught.value.message, caught.value.message


def test_a_python_built_spark_step_is_sized_too() -> None:
    from bridgehead.domain.spark import SparkApp

    step = StepSpec(id="s", cluster="sparky", spark=SparkApp(
        application="/a/x.py", arguments=("{{ params.n }}",), executors=3))
    flow = WorkflowSpec(name="w", params={"n": 5}, steps=(step,))
    job = step_job_spec(flow, step, {"n": 6})
    assert job.spark is not None and job.spark.arguments == ("6",)
    assert job.resources.cores == 4


def test_workflow_validate_names_the_spark_field(tmp_path: Path) -> None:
    good = tmp_path / "etl.yaml"
    good.write_text(FLOW)
    shown = run("workflow", "validate", "--json", str(good), home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    step = json.loads(shown.stdout)["steps"][0]
    assert step["spark"]["application"] == "/apps/load.py" and step["command"] == []
    bad = tmp_path / "w.yaml"
    bad.write_text(FLOW.replace("spark.sql.shuffle.partitions", "sql.shuffle", 1))
    refused = run("workflow", "validate", str(bad), home=tmp_path)
    assert refused.returncode == 2, refused
    [line] = refused.stderr.strip().splitlines()
    assert f"{bad}:11: steps[0].spark.conf: spark.conf name 'sql.shuffle'" in line, line


def test_workflow_validate_shows_a_spark_steps_size(tmp_path: Path) -> None:
    good = tmp_path / "etl.yaml"
    good.write_text(FLOW)
    shown = run("workflow", "validate", str(good), home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "spark: 1 driver + 4 x 2 = 9 cores, 9G" in shown.stdout, shown.stdout
