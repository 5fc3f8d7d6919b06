"""Airflow DAGs from workflow YAML files (``bridgehead.workflows``: the same schema the
native runner reads). A DAG file of two lines turns a folder of YAML files into DAGs::

    from bridgehead.airflow.dags import load_dags
    load_dags("/srv/workflows", globals())

Each step becomes a ``BridgeheadOperator``; ``needs`` become dependencies (a failed step
leaves its dependents ``upstream_failed``); ``retries``/``timeout`` become the task's retries
(exponential backoff) and ``execution_timeout``. A ``foreach`` step is a mapped task: over
its literal list or range, or, for ``foreach: {param: bins}``, over the list a small
``<step>__items`` task computes from the run's params, so the fan-out width comes from the
data of each run. ``{{ params.NAME }}`` and ``{{ item }}`` render with Airflow's Jinja.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridgehead.airflow._compat import DAG, task
from bridgehead.airflow.operators.bridgehead import BridgeheadOperator
from bridgehead.airflow.operators.spark import SparkJobOperator
from bridgehead.domain.workflows import Foreach, StepSpec, WorkflowSpec
from bridgehead.errors import InvalidSpec
from bridgehead.workflows.spec import load_workflow

logger = logging.getLogger(__name__)

START = datetime(2024, 1, 1, tzinfo=UTC)


def load_dags(folder: str | Path, namespace: MutableMapping[str, Any] | None = None, *,
              pattern: str = "*.y*ml", strict: bool = False, **dag_kwargs: Any) -> dict[str, Any]:
    """A DAG for each workflow file in ``folder``, also put into ``namespace`` (pass
    ``globals()``) so Airflow finds them. A bad file is logged with its line and skipped
    (``strict=True`` raises instead), so one broken form does not hide every DAG."""
    dags: dict[str, Any] = {}
    for path in sorted(Path(folder).glob(pattern)):
        try:
            dag = workflow_dag(load_workflow(path), **dag_kwargs)
        except InvalidSpec as exc:
            if strict:
                raise
            logger.error("skipping workflow %s: %s", path, exc.message)
            continue
        if dag.dag_id in dags:
            message = f"{path}: workflow name {dag.dag_id!r} is used by another file"
            if strict:
                raise InvalidSpec(message)
            logger.error("skipping %s", message)
            continue
        dags[dag.dag_id] = dag
    if namespace is not None:
        namespace.update({f"bridgehead_dag_{i}": dag for i, dag in enumerate(dags.values())})
    return dags


def workflow_dag(workflow: WorkflowSpec, **dag_kwargs: Any) -> Any:
    """One DAG (id = the workflow's name) with a task per step."""
    options = {"schedule": None, "start_date": START, "catchup": False,
               "tags": ["bridgehead"], **dag_kwargs}
    with DAG(dag_id=workflow.name, description=workflow.description or None,
             params=dict(workflow.params), **options) as dag:
        tasks = {step.id: _task(step) for step in workflow.steps}
        for step in workflow.steps:
            for need in step.needs:
                tasks[need] >> tasks[step.id]
    return dag


def _task(step: StepSpec) -> Any:
    kwargs = _operator_kwargs(step)
    operator: type[BridgeheadOperator] = BridgeheadOperator
    if step.spark is not None:
        operator, kwargs = SparkJobOperator, _spark_kwargs(step, kwargs)
    if step.foreach is None:
        return operator(task_id=step.id, **kwargs)
    return operator.partial(task_id=step.id, **kwargs).expand(
        item=_items(step.id, step.foreach))


def _spark_kwargs(step: StepSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A ``spark`` step's operator arguments: its app as SparkSubmitOperator's names; its
    cores and memory are the app's (a step's sizes are refused when the file is read)."""
    app = step.spark
    assert app is not None
    rest = {k: v for k, v in kwargs.items() if k not in ("command", "script")}
    # as in a native run: the merged resources (defaults included) but what the app sizes
    rest["job_resources"] = {k: v for k, v in step.resources.to_dict().items()
                             if v is not None and k not in ("cores", "nodes", "memory_mb")}
    return {**rest, "application": app.application, "java_class": app.main_class,
            "application_args": list(app.arguments), "conf": dict(app.conf),
            "num_executors": app.executors, "executor_cores": app.executor_cores,
            "driver_cores": app.driver_cores, "executor_memory": app.executor_memory_mb,
            "driver_memory": app.driver_memory_mb, "py_files": list(app.py_files),
            "jars": list(app.jars), "files": list(app.files)}


def _items(step_id: str, foreach: Foreach) -> Any:
    """A literal list for a list or a range; for a param, a task resolving it per run."""
    if foreach.param is None:
        return foreach.items({})

    @task(task_id=f"{step_id}__items")
    def items(**context: Any) -> list[Any]:
        return foreach.items(context["params"])

    return items()


def _operator_kwargs(step: StepSpec) -> dict[str, Any]:
    retries = step.retries
    kwargs: dict[str, Any] = {
        "command": list(step.command), "script": step.script, "cluster": step.cluster,
        "cluster_labels": dict(step.cluster_labels), "env": dict(step.env),
        "scheduler_options": list(step.scheduler_options), "labels": dict(step.labels),
        # What the step (or the workflow's defaults) wrote, and only that: the rest comes from
        # the script's #SBATCH directives, as in a native run (StepSpec.given).
        "job_resources": {name: value for name, value in step.resources.to_dict().items()
                          if value is not None and (step.given is None or name in step.given)},
        "retries": retries.count,
    }
    if retries.count and retries.backoff_s:
        kwargs.update(retry_delay=timedelta(seconds=retries.backoff_s),
                      retry_exponential_backoff=True,
                      max_retry_delay=timedelta(seconds=retries.max_backoff_s))
    if step.timeout_s is not None:
        kwargs["execution_timeout"] = timedelta(seconds=step.timeout_s)
    return kwargs
