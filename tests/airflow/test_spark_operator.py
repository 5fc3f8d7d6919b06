"""``SparkJobOperator``: SparkSubmitOperator's arguments become the job's Spark part (no Spark
needed: the built JobSpec is checked), what Bridgehead cannot honour is refused naming it,
the provider lists it, and a real server takes the spec it builds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.airflow.requirements import require_airflow
from tests.procs import Stack, eventually, stack

require_airflow()

from bridgehead.airflow import get_provider_info  # noqa: E402
from bridgehead.airflow._compat import AirflowException, TaskDeferred  # noqa: E402
from bridgehead.airflow.operators.spark import SparkJobOperator  # noqa: E402
from bridgehead.client import Client  # noqa: E402

pytestmark = pytest.mark.airflow


def _context(task_id: str = "etl", params: dict[str, Any] | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="dag1", run_id="manual__2026-12-01T00:00:00+00:00",
                         task_id=task_id, map_index=-1, try_number=1)
    return {"ti": ti, "params": params or {}}


SUBMIT_ARGS: dict[str, Any] = {
    "application": "/apps/etl.jar", "java_class": "com.example.Etl", "conn_id": "spark_prod",
    "conf": {"spark.sql.shuffle.partitions": 8}, "files": "/c/a.json, /c/b.json",
    "py_files": None, "jars": "hdfs://nn/lib/x.jar", "driver_class_path": "/opt/extra/*",
    "packages": "org.a:b:1.0", "exclude_packages": "org.c:d", "repositories": "https://r/m2",
    "total_executor_cores": 8, "executor_cores": 2, "executor_memory": "2G",
    "driver_memory": "512M", "name": "nightly-etl", "application_args": ["--day", 7, "$(id)"],
    "env_vars": {"TZ": "UTC"}, "yarn_queue": "etl", "deploy_mode": "cluster",
    "status_poll_interval": 5, "verbose": False,
}


def test_spark_submit_arguments_make_the_spark_job() -> None:
    op = SparkJobOperator(task_id="etl", **SUBMIT_ARGS)
    spec = op.build_spec(_context())
    app = spec.spark
    assert app is not None and spec.command == () and spec.script is None
    assert spec.cluster == "spark_prod" and spec.name == "nightly-etl"
    assert (app.application, app.main_class) == ("/apps/etl.jar", "com.example.Etl")
    assert app.arguments == ("--day", "7", "$(id)")
    assert app.files == ("/c/a.json", "/c/b.json") and app.jars == ("hdfs://nn/lib/x.jar",)
    assert app.conf == {
        "spark.sql.shuffle.partitions": "8", "spark.driver.extraClassPath": "/opt/extra/*",
        "spark.jars.packages": "org.a:b:1.0", "spark.jars.excludes": "org.c:d",
        "spark.jars.repositories": "https://r/m2", "spark.yarn.queue": "etl"}
    assert (app.executors, app.executor_cores) == (4, 2)
    assert (app.executor_memory_mb, app.driver_memory_mb) == (2048, 512)
    assert spec.env == {"TZ": "UTC"} and op.poll_interval_s == 5
    assert spec.resources.cores == 1 + 8 and spec.resources.memory_mb == 512 + 4 * 2048
    assert spec.idempotency_key == "airflow:dag1:manual__2026-12-01T00:00:00+00:00:etl:-1:1"


def test_caps_clamp_and_the_run_does_not_size_a_spark_task() -> None:
    op = SparkJobOperator(task_id="pi", application="/apps/pi.py", num_executors=10,
                          max_cores=5, cluster="sparky")
    spec = op.build_spec(_context("pi", {"resources": {"cores": 64, "walltime": "1h"}}))
    assert spec.spark is not None and spec.spark.executors == 4
    assert spec.resources.cores == 5 and spec.resources.walltime_s == 3600
    assert SparkJobOperator(task_id="d", application="/a/p.py").cluster == "spark_default"


@pytest.mark.parametrize(("args", "named"), [
    ({"keytab": "/k/etl.keytab"}, "keytab cannot be honoured"),
    ({"principal": "etl@REALM"}, "principal cannot be honoured"),
    ({"proxy_user": "bob"}, "proxy_user cannot be honoured"),
    ({"spark_binary": "spark3-submit"}, "spark_binary cannot be honoured"),
    ({"properties_file": "/etc/spark.conf"}, "properties_file cannot be honoured"),
    ({"archives": "env.tar.gz#env"}, "archives cannot be honoured"),
    ({"post_submit_commands": ["rm -rf /tmp/x"]}, "post_submit_commands cannot be honoured"),
    ({"verbose": True}, "verbose cannot be honoured"),
    ({"deploy_mode": "client"}, "deploy_mode 'client'"),
    ({"durable": False}, "durable=False"),
    ({"cluster": "a", "conn_id": "b"}, "not both"),
    ({"job_resources": {"cores": 4}}, "job_resources cores is derived"),
    ({"command": ["true"]}, "give no command"),
])
def test_what_bridgehead_cannot_honour_is_refused(args: dict[str, Any], named: str) -> None:
    with pytest.raises(AirflowException, match=named.replace("(", r"\(")):
        SparkJobOperator(task_id="x", application="/a/p.py", **args)


@pytest.mark.parametrize(("args", "named"), [
    ({"conf": {"spark.master": "yarn"}}, "spark.conf spark.master is Bridgehead's"),
    ({"conf": {"queue": "x"}}, "spark.conf name 'queue' is not a spark.* setting"),
    ({"application": "etl.py"}, "spark.application 'etl.py' must be an absolute path"),
    ({"application": "/a/etl.jar"}, "spark.main_class is required"),
    ({"total_executor_cores": 5, "executor_cores": 2}, "not a multiple of executor_cores"),
    ({"total_executor_cores": 4, "num_executors": 3}, "contradicts num_executors"),
    ({"executor_memory": "lots"}, "executor_memory 'lots'"),
    ({"yarn_queue": "a", "conf": {"spark.yarn.queue": "b"}}, "yarn_queue 'a' contradicts"),
    ({"max_cores": 1}, "max_cores 1 leaves no room"),
])
def test_a_bad_app_fails_the_task_naming_it(args: dict[str, Any], named: str) -> None:
    op = SparkJobOperator(task_id="x", **{"application": "/a/p.py", **args})
    with pytest.raises(AirflowException) as caught:
        op.build_spec(_context("x"))
    assert named in str(caught.value), caught.value


def test_the_provider_lists_the_spark_operator() -> None:
    [entry] = get_provider_info()["operators"]
    assert "bridgehead.airflow.operators.spark" in entry["python-modules"]


@pytest.fixture(scope="module")
def bh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("bh"), slots=2, poll=0.2) as running:
        yield running


def test_the_server_takes_the_spec_it_builds(bh: Stack, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BRIDGEHEAD_DEFAULT", json.dumps(
        {"conn_type": "bridgehead", "host": bh.server.url, "password": bh.admin}))
    op = SparkJobOperator(task_id="etl", **{**SUBMIT_ARGS, "conn_id": "sparky"})
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context())
    with Client(bh.server.url, bh.admin) as client:
        job = client.get(deferred.value.trigger.job_id)
        assert job.spec == op.build_spec(_context())
        again = SparkJobOperator(task_id="etl", **{**SUBMIT_ARGS, "conn_id": "sparky"})
        with pytest.raises(TaskDeferred) as reattached:  # the same try: the same job
            again.execute(_context())
        assert reattached.value.trigger.job_id == job.id
        client.cancel(job.id)
        eventually(lambda: any(c["name"] == "local" and c["online"]
                               for c in client.clusters()), what="the local agent")
    local = SparkJobOperator(task_id="etl2", application="/a/p.py", cluster="local")
    with pytest.raises(Exception, match="spark: cluster 'local' runs jobs with the local"):
        local.execute(_context("etl2"))


def test_a_spark_step_of_a_yaml_dag_is_a_spark_job_operator() -> None:
    from bridgehead.airflow.dags import workflow_dag
    from bridgehead.domain.workflows import step_job_spec
    from bridgehead.workflows import parse_workflow

    flow = parse_workflow(
        "name: sparkflow\ndefaults: {cluster: sparky, resources: {cores: 4, walltime: 1h}}\n"
        "steps:\n- id: etl\n  resources: {max_cores: 7}\n  spark:\n"
        "    application: /apps/etl.jar\n    main_class: com.example.Etl\n"
        "    arguments: [--day, '7']\n    conf: {spark.sql.shuffle.partitions: '8'}\n"
        "    executors: 4\n    executor_cores: 2\n    executor_memory: 2G\n"
        "    py_files: []\n    files: [/c/a.json]\n- id: routed\n"
        "  cluster_labels: {kind: spark}\n  spark: {application: /apps/pi.py}\n", "f.yaml")
    dag = workflow_dag(flow)
    op = dag.get_task("etl")
    assert isinstance(op, SparkJobOperator)
    spec = op.build_spec(_context("etl"))
    native = step_job_spec(flow, flow.step("etl"), flow.params)
    assert spec.spark == native.spark and spec.spark is not None
    assert spec.spark.executors == 3 and spec.resources == native.resources
    assert spec.resources.cores == 7 and spec.resources.walltime_s == 3600
    routed = dag.get_task("routed").build_spec(_context("routed"))
    assert routed.cluster == "" and routed.cluster_labels == {"kind": "spark"}
