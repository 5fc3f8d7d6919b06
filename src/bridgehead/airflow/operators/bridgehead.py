"""``BridgeheadOperator`` (and ``SlurmJobOperator``): run one job on a cluster through
Bridgehead and wait for it deferred, holding no worker slot.

- **Exactly once**: the job's idempotency key is ``dag/run/task/map_index/try``. A worker that
  dies after submitting re-executes the same try, which gets the same job back (reattach)
  instead of submitting a second one; a retry (next try) submits a new job.
- **Resources**: the task's ``job_resources`` are defaults; a dict in the run's params under
  ``resources_param`` (``"resources"``: ``bridgehead airflow run DAG --conf
  'resources={"cores": 64}'``) raises or lowers them for every task of the run; the task's
  caps (``max_cores``, ``max_nodes``) clamp the result: LCLS's semantics.
- **Templates**: every field in ``template_fields`` is Jinja-rendered; ``{{ item }}`` is the
  operator's ``item`` (the fan-out value of a mapped task: ``.expand(item=[...])``).
- **Success** ends the task in the triggerer (``end_from_trigger``, Airflow >= 2.10): no
  worker starts just to mark it done, so it is ``success`` a moment after the job ends.
- **Failure**: a job that does not succeed resumes the task on a worker, which fails it with
  the job's state, exit code, reason and last log lines. A deferral that times out cancels
  the job.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from bridgehead.airflow._compat import AirflowException, BaseOperator, deferral_timed_out
from bridgehead.airflow.hooks.bridgehead import BridgeheadHook
from bridgehead.airflow.triggers.bridgehead import (
    TAIL_LINES,
    BridgeheadJobTrigger,
    job_event,
    job_summary,
)
from bridgehead.client import Client
from bridgehead.domain import sbatch
from bridgehead.domain.jobs import MAX_KEY_LEN, RESOURCE_FIELDS, Job, JobSpec, Resources
from bridgehead.domain.spark import SparkApp
from bridgehead.domain.units import RESOURCE_UNITS, resource_field
from bridgehead.errors import BridgeheadError

logger = logging.getLogger(__name__)

DEFAULT_WALLTIME_S = 7 * 86400
"""Defer timeout base for a job without a walltime (the scheduler's default limit is unknown)."""
_INT_FIELDS = ("cores", "nodes", "gpus", "memory_mb", "walltime_s", "max_cores", "max_nodes")


def idempotency_key(ti: Any) -> str:
    """``airflow:dag:run:task:map_index:try``: one job per task try, whoever executes it."""
    key = f"airflow:{ti.dag_id}:{ti.run_id}:{ti.task_id}:{ti.map_index}:{ti.try_number}"
    if len(key) > MAX_KEY_LEN:
        key = "airflow:sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def airflow_labels(ti: Any) -> dict[str, str]:
    """Labels that let the launcher (and anyone) find a run's jobs."""
    return {"airflow.dag_id": ti.dag_id, "airflow.run_id": ti.run_id,
            "airflow.task_id": ti.task_id, "airflow.map_index": str(ti.map_index),
            "airflow.try_number": str(ti.try_number)}


def resources_from(values: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a resources mapping (rendered templates give strings): ``memory: 4G`` and
    ``walltime: 2h`` become ``memory_mb``/``walltime_s``; numbers become ints."""
    out = dict(values)
    for name in RESOURCE_UNITS:
        if (value := out.pop(name, None)) is not None:
            field, out[field] = resource_field(name, value)
    for name in _INT_FIELDS:
        if isinstance(out.get(name), str):
            text = out[name].strip()
            if not text.isdigit():
                raise AirflowException(f"resources.{name} must be a whole number, not {text!r}")
            out[name] = int(text)
    unknown = set(out) - set(RESOURCE_FIELDS)
    if unknown:
        raise AirflowException(f"unknown resources: {', '.join(sorted(unknown))}")
    return out


def directive_name(script: str | None) -> str | None:
    """The job name a script's ``#SBATCH --job-name`` asks, if any (a script whose directives
    cannot be read gets None here: the server refuses it naming the line)."""
    if script is None:
        return None
    try:
        return sbatch.asked(sbatch.directives(script)).name
    except BridgeheadError:
        return None


def effective_resources(task: Mapping[str, Any], run: Mapping[str, Any] | None,
                        max_cores: int | None, max_nodes: int | None) -> Resources:
    """The task's resources, overridden by the run's, clamped by every cap given (the
    task's ``max_cores``/``max_nodes`` arguments or resources, the run's): the lowest wins."""
    task_r, run_r = resources_from(task), resources_from(run or {})
    merged = {**task_r, **run_r}
    for name, explicit in (("max_cores", max_cores), ("max_nodes", max_nodes)):
        caps = [c for c in (task_r.get(name), run_r.get(name), explicit) if c is not None]
        merged[name] = min(caps) if caps else None
    for name, cap_name in (("cores", "max_cores"), ("nodes", "max_nodes")):
        if merged[cap_name] is not None:
            merged[name] = min(merged.get(name) or 1, merged[cap_name])
    return Resources(**merged)


class BridgeheadOperator(BaseOperator):
    """Run ``command`` (an argv list, never a shell string) or ``script`` (a ``#!`` script) on
    ``cluster`` (or a cluster whose agents carry ``cluster_labels``) and wait, deferred."""

    template_fields: Sequence[str] = (
        "command", "script", "cluster", "cluster_labels", "env", "job_resources",
        "scheduler_options", "job_name", "labels", "working_dir")
    template_fields_renderers = {"script": "bash", "env": "json", "job_resources": "json"}
    ui_color = "#dbe9f6"

    def __init__(
        self, *, command: Sequence[Any] | None = None, script: str | None = None,
        cluster: str = "", cluster_labels: dict[str, str] | None = None,
        job_resources: Mapping[str, Any] | None = None, max_cores: int | None = None,
        max_nodes: int | None = None, env: dict[str, str] | None = None,
        scheduler_options: Sequence[str] = (), job_name: str | None = None,
        labels: dict[str, str] | None = None, working_dir: str | None = None,
        tenant: str = "default", item: Any = None, resources_param: str | None = "resources",
        bridgehead_conn_id: str = BridgeheadHook.default_conn_name, stream_logs: bool = True,
        max_queue_s: int = 86400, poll_interval_s: float | None = None,
        end_from_trigger: bool = True, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.command, self.script = list(command or ()), script
        self.cluster, self.cluster_labels = cluster, dict(cluster_labels or {})
        self.job_resources = dict(job_resources or {})
        self.max_cores, self.max_nodes = max_cores, max_nodes
        self.env, self.scheduler_options = dict(env or {}), list(scheduler_options)
        self.job_name, self.labels, self.working_dir = job_name, dict(labels or {}), working_dir
        self.tenant, self.item, self.resources_param = tenant, item, resources_param
        self.bridgehead_conn_id, self.stream_logs = bridgehead_conn_id, stream_logs
        self.max_queue_s, self.poll_interval_s = max_queue_s, poll_interval_s
        self.end_from_trigger = end_from_trigger
        self._job_id: str | None = None

    # -- templates ---------------------------------------------------------------------------
    def render_template(self, content: Any, context: Any, jinja_env: Any = None,
                        seen_oids: set[int] | None = None) -> Any:
        """As Airflow's, with ``{{ item }}`` bound to this (possibly mapped) task's item."""
        if "item" not in context:
            context = {**context, "item": self.item}
        return super().render_template(content, context, jinja_env, seen_oids)

    # -- the job -----------------------------------------------------------------------------
    def build_spec(self, context: Any) -> JobSpec:
        """The job this task try runs, from the rendered fields and the run's params."""
        ti = context["ti"]
        run_resources = self.run_resources(context)
        if isinstance(self.command, str):
            raise AirflowException("command must be a list of words (argv), not a shell string")
        try:
            return JobSpec(
                cluster=self.cluster or ("" if self.cluster_labels else "local"),
                cluster_labels=self.cluster_labels,
                command=tuple(str(word) for word in self.command), script=self.script,
                spark=self.spark_app(),
                name=self.job_name or (None if directive_name(self.script)
                                       else f"{ti.dag_id}.{ti.task_id}"),
                env={str(k): str(v) for k, v in self.env.items()},
                working_dir=self.working_dir, tenant=self.tenant,
                resources=effective_resources(self.job_resources, run_resources,
                                              self.max_cores, self.max_nodes),
                scheduler_options=tuple(self.scheduler_options),
                labels={**self.labels, **airflow_labels(ti)},
                idempotency_key=idempotency_key(ti))
        except BridgeheadError as exc:
            raise AirflowException(f"invalid Bridgehead job: {exc.message}") from exc

    def spark_app(self) -> SparkApp | None:
        """A Spark application to run instead of a command or script (``SparkJobOperator``)."""
        return None

    def run_resources(self, context: Any) -> Mapping[str, Any] | None:
        """The run's resources from its params (``resources_param``), if it gives any."""
        params = context.get("params") or {}
        run_resources = params.get(self.resources_param) if self.resources_param else None
        if run_resources is not None and not isinstance(run_resources, Mapping):
            raise AirflowException(f"params.{self.resources_param} must be a mapping")
        return run_resources

    def explicit_resources(self, context: Any) -> set[str]:
        """The resources this task or its run wrote: they beat the script's #SBATCH
        directives even at a default value (``cores: 1`` beats ``#SBATCH -c 8``)."""
        written = {**resources_from(self.job_resources),
                   **resources_from(self.run_resources(context) or {})}
        caps = {"max_cores": self.max_cores, "max_nodes": self.max_nodes}
        return {k for k, v in {**written, **caps}.items() if v is not None}

    def hook(self) -> BridgeheadHook:
        return BridgeheadHook(self.bridgehead_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        spec = self.build_spec(context)
        with self.hook().get_conn() as bh:
            job = bh.submit(spec, explicit=self.explicit_resources(context))
            self._job_id = job.id
            self.log.info("Bridgehead job %s on cluster %s is %s (key %s)", job.id,
                          job.cluster, job.state.value, spec.idempotency_key)
            if job.terminal:  # a re-executed try whose job already ended
                return self._outcome(job_event(job, _tail(bh, job.id)))
        self.defer(
            trigger=BridgeheadJobTrigger(job.id, self.bridgehead_conn_id,
                                         stream_logs=self.stream_logs,
                                         poll_interval_s=self.poll_interval_s,
                                         end_task_on_success=self.end_from_trigger),
            method_name="execute_complete", kwargs={"job_id": job.id},
            timeout=self.defer_timeout(spec.resources))

    def defer_timeout(self, resources: Resources) -> timedelta:
        """Always explicit (Airflow 3 does not carry ``execution_timeout`` across deferrals):
        ``execution_timeout`` if set, else walltime + ``max_queue_s``."""
        if self.execution_timeout is not None:
            return self.execution_timeout
        return timedelta(seconds=(resources.walltime_s or DEFAULT_WALLTIME_S) + self.max_queue_s)

    def execute_complete(self, context: Any, event: dict[str, Any] | str | None = None,
                         job_id: str | None = None) -> dict[str, Any]:
        if not isinstance(event, dict):  # dag.test() resumes a trigger that fired nothing or
            # ended the task itself (the payload is then the state): ask the server
            with self.hook().get_conn() as bh:
                jobs = [bh.get(job_id)] if job_id else _jobs_of_try(bh, context)
                if len(jobs) != 1:
                    raise AirflowException(f"resumed without an event and {len(jobs)} jobs")
                event = job_event(jobs[0], _tail(bh, jobs[0].id))
        return self._outcome(event)

    def _outcome(self, event: dict[str, Any]) -> dict[str, Any]:
        state, job_id = event["state"], event["job_id"]
        if state == "succeeded":
            self.log.info("Bridgehead job %s succeeded", job_id)
            return job_summary(event)
        if state == "error":
            raise AirflowException(f"Bridgehead job {job_id}: {event.get('reason')}")
        message = f"Bridgehead job {job_id} {state}"
        if event.get("exit_code") is not None:
            message += f" with exit code {event['exit_code']}"
        message += f" on cluster {event.get('cluster')}"
        if event.get("reason") and event["reason"] != f"exit code {event.get('exit_code')}":
            message += f": {event['reason']}"
        if event.get("tail"):
            message += "\nlast log lines:\n" + "\n".join(f"  {line}" for line in event["tail"])
        raise AirflowException(message)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None,
                         context: Any) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowException as exc:
            if deferral_timed_out(exc):
                self._cancel_try(context)
            raise

    def _cancel_try(self, context: Any) -> None:
        """Cancel this try's job after the deferral timed out."""
        with self.hook().get_conn() as bh:
            for job in _jobs_of_try(bh, context):
                if not job.terminal:
                    self.log.warning("deferral timed out: cancelling Bridgehead job %s", job.id)
                    bh.cancel(job.id)

    def on_kill(self) -> None:
        """Cancel the job when the task is killed while this process holds it."""
        if self._job_id is None:
            return
        self.log.info("task killed: cancelling Bridgehead job %s", self._job_id)
        try:
            with self.hook().get_conn() as bh:
                bh.cancel(self._job_id)
        except BridgeheadError as exc:
            self.log.error("could not cancel Bridgehead job %s: %s", self._job_id, exc)


def _jobs_of_try(bh: Client, context: Any) -> list[Job]:
    """The job(s) of this task try, found by their labels."""
    jobs, _ = bh.list_jobs(labels=airflow_labels(context["ti"]), limit=10)
    return list(jobs)


def _tail(bh: Client, job_id: str) -> list[str]:
    """The last log lines of an ended job (stdout, then stderr marked)."""
    lines: list[str] = []
    for stream, prefix in (("stdout", ""), ("stderr", "[stderr] ")):
        data, offset = b"", 0
        while True:
            chunk, offset, _ = bh.read_logs(job_id, stream=stream, offset=offset)
            if not chunk:
                break
            data = (data + chunk)[-(64 << 10):]
        lines += [prefix + line for line in data.decode(errors="replace").splitlines()]
    return lines[-TAIL_LINES:]


class SlurmJobOperator(BridgeheadOperator):
    """``BridgeheadOperator`` with the usual Slurm fields: ``ntasks`` (cores), ``nodes``,
    ``cpus_per_task``, ``mem`` (e.g. ``"4G"``), ``time`` (``"2h"``, ``"HH:MM:SS"``),
    ``partition``, ``account``, ``qos`` and ``sbatch_options`` (``["--constraint=a100"]``)."""

    def __init__(
        self, *, partition: str | None = None, account: str | None = None,
        ntasks: int | str | None = None, nodes: int | str | None = None,
        cpus_per_task: int | str | None = None, mem: str | None = None,
        time: str | None = None, qos: str | None = None, sbatch_options: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        fields = {"cores": ntasks, "nodes": nodes, "memory": mem, "walltime": time,
                  "partition": partition, "account": account}
        resources = {**{k: v for k, v in fields.items() if v is not None},
                     **dict(kwargs.pop("job_resources", None) or {})}
        options = list(sbatch_options)
        if cpus_per_task is not None:
            options.append(f"--cpus-per-task={cpus_per_task}")
        if qos is not None:
            options.append(f"--qos={qos}")
        options += list(kwargs.pop("scheduler_options", ()))
        super().__init__(job_resources=resources, scheduler_options=options, **kwargs)
