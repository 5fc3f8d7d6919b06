"""``SparkJobOperator``: a Spark application as a Bridgehead job, with the argument names of
Airflow's own ``SparkSubmitOperator`` (apache-airflow-providers-apache-spark), so a DAG moves
over by changing its import::

    from bridgehead.airflow.operators.spark import SparkJobOperator as SparkSubmitOperator

It is a :class:`~bridgehead.airflow.operators.bridgehead.BridgeheadOperator`: submitted once
per try (its idempotency key), waited for deferred, cancelled when killed.

How each ``SparkSubmitOperator`` argument is honoured:

- ``application``, ``java_class``, ``application_args``, ``conf`` (``spark.*`` only),
  ``num_executors``, ``executor_cores``, ``executor_memory``, ``driver_memory``,
  ``py_files``, ``jars``, ``files`` (comma-separated, as there, or lists): the app's own
  fields; ``driver_cores`` too.
- ``total_executor_cores``: the executors' cores in all (``spark.cores.max``): it sets
  ``num_executors`` to ``total_executor_cores / executor_cores`` (refused if it does not
  divide, or contradicts ``num_executors``).
- ``driver_class_path``, ``packages``, ``exclude_packages``, ``repositories``,
  ``yarn_queue``: the ``spark.*`` settings ``spark-submit`` makes of them
  (``spark.driver.extraClassPath``, ``spark.jars.packages``, ``spark.jars.excludes``,
  ``spark.jars.repositories``, ``spark.yarn.queue``).
- ``conn_id``: names the Spark cluster, so it is the Bridgehead **cluster** (a connection
  ``spark_prod`` becomes cluster ``spark_prod``; give ``cluster=`` instead to name another).
  The Bridgehead server is reached through ``bridgehead_conn_id``, as for every operator.
- ``name``: the job's name; ``env_vars``: the job's environment; ``status_poll_interval``:
  the trigger's poll interval; ``deploy_mode``: only ``"cluster"`` (Bridgehead submits in
  cluster mode); ``durable``/``reconnect_on_retry``: Bridgehead always reattaches a
  re-executed try to its job (``False`` is refused); ``track_driver_via_k8s_api`` and
  ``yarn_track_via_rm_api``: Bridgehead always tracks the app remotely, holding no worker.
- Refused with an ``AirflowException`` naming them (never dropped): ``keytab``,
  ``principal``, ``proxy_user``, ``use_krb5ccache`` (credentials are the cluster agent's),
  ``spark_binary``, ``properties_file``, ``archives``, ``post_submit_commands``,
  ``yarn_rm_auth``, ``verbose=True`` and the OpenLineage injection flags.

The job's cores and memory are the app's (driver + executors x executor cores): a task's
``job_resources`` may not give ``cores``, ``nodes`` or ``memory``, and the run's params
resources do not size it; ``max_cores`` (the task's or the run's) clamps the executors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridgehead.airflow._compat import AirflowException
from bridgehead.airflow.operators.bridgehead import BridgeheadOperator
from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.spark import SparkApp
from bridgehead.domain.spark import sized as spark_sized
from bridgehead.domain.units import parse_memory
from bridgehead.errors import BridgeheadError

REFUSED = {
    "keytab": "Kerberos credentials are the cluster agent's, not the task's",
    "principal": "Kerberos credentials are the cluster agent's, not the task's",
    "proxy_user": "the app runs as the cluster agent's user",
    "use_krb5ccache": "Kerberos credentials are the cluster agent's, not the task's",
    "spark_binary": "Bridgehead does not run spark-submit on the worker",
    "properties_file": "give the settings in conf",
    "archives": "Bridgehead's Spark jobs take py_files, jars and files",
    "post_submit_commands": "Bridgehead runs no shell commands on the worker",
    "yarn_rm_auth": "the cluster agent reaches the ResourceManager",
    "verbose": "spark-submit does not run on the worker",
    "openlineage_inject_parent_job_info": "not supported",
    "openlineage_inject_transport_info": "not supported",
}
"""``SparkSubmitOperator`` arguments Bridgehead cannot honour, and why: given (truthy), they
are refused."""
CONF_ARGS = {"driver_class_path": "spark.driver.extraClassPath",
             "packages": "spark.jars.packages", "exclude_packages": "spark.jars.excludes",
             "repositories": "spark.jars.repositories", "yarn_queue": "spark.yarn.queue"}
"""Arguments that ``spark-submit`` turns into these settings."""
SIZED = ("cores", "nodes", "memory", "memory_mb")


def _words(value: str | Sequence[str] | None) -> list[str]:
    """A comma-separated string (as ``SparkSubmitOperator`` takes them) or a list."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [p.strip() for p in parts if p.strip()]


def _memory(value: str | int | None, name: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_memory(str(value).strip())
    except BridgeheadError as exc:
        raise AirflowException(f"{name} {value!r}: use e.g. 512M or 2G") from exc


class SparkJobOperator(BridgeheadOperator):
    """Run a Spark application on a Bridgehead cluster with a Spark backend, deferred."""

    template_fields: Sequence[str] = (
        "application", "conf", "files", "py_files", "jars", "application_args", "cluster",
        "cluster_labels", "env", "job_resources", "job_name", "labels", "driver_class_path",
        "packages", "exclude_packages")
    template_fields_renderers = {"conf": "json", "env": "json", "job_resources": "json"}
    ui_color = "#f4a460"

    def __init__(
        self, *, application: str = "", conf: Mapping[str, Any] | None = None,
        conn_id: str | None = None, cluster: str = "",
        files: str | Sequence[str] | None = None, py_files: str | Sequence[str] | None = None,
        jars: str | Sequence[str] | None = None, driver_class_path: str | None = None,
        java_class: str | None = None, packages: str | None = None,
        exclude_packages: str | None = None, repositories: str | None = None,
        total_executor_cores: int | None = None, executor_cores: int | None = None,
        executor_memory: str | int | None = None, driver_memory: str | int | None = None,
        driver_cores: int | None = None, name: str | None = None,
        num_executors: int | None = None, status_poll_interval: float | None = None,
        application_args: Sequence[Any] | None = None, env_vars: Mapping[str, Any] | None = None,
        yarn_queue: str | None = None, deploy_mode: str | None = None,
        durable: bool | None = None, reconnect_on_retry: bool | None = None,
        track_driver_via_k8s_api: bool = False, yarn_track_via_rm_api: bool = False,
        **kwargs: Any,
    ) -> None:
        for arg, why in REFUSED.items():
            if kwargs.pop(arg, None):
                raise AirflowException(f"SparkJobOperator: {arg} cannot be honoured by "
                                       f"Bridgehead: {why}")
        if deploy_mode not in (None, "cluster"):
            raise AirflowException(f"SparkJobOperator: deploy_mode {deploy_mode!r}: "
                                   "Bridgehead submits Spark apps in cluster mode only")
        for arg, value in (("durable", durable), ("reconnect_on_retry", reconnect_on_retry)):
            if value is False:
                raise AirflowException(f"SparkJobOperator: {arg}=False: Bridgehead always "
                                       "reattaches a re-executed try to its job")
        _refuse_sized(kwargs.get("job_resources"))
        if cluster and conn_id and cluster != conn_id:
            raise AirflowException(f"SparkJobOperator: give cluster ({cluster!r}) or conn_id "
                                   f"({conn_id!r}), not both: conn_id names the cluster")
        if kwargs.get("command") or kwargs.get("script"):
            raise AirflowException("SparkJobOperator runs application: give no command or "
                                   "script")
        if kwargs.get("env") and env_vars:
            raise AirflowException("SparkJobOperator: give env_vars or env, not both")
        env_vars = env_vars or kwargs.pop("env", None)
        kwargs.setdefault("poll_interval_s", status_poll_interval)
        routed = bool(kwargs.get("cluster_labels")) and not (cluster or conn_id)
        super().__init__(cluster=cluster or conn_id or ("" if routed else "spark_default"),
                         job_name=name,
                         env=dict(env_vars or {}), **kwargs)
        self.application, self.java_class = application, java_class
        self.conf = dict(conf or {})
        self.files, self.py_files, self.jars = files, py_files, jars
        self.driver_class_path, self.packages = driver_class_path, packages
        self.exclude_packages, self.repositories = exclude_packages, repositories
        self.yarn_queue = yarn_queue
        self.total_executor_cores, self.num_executors = total_executor_cores, num_executors
        self.executor_cores, self.driver_cores = executor_cores, driver_cores
        self.executor_memory, self.driver_memory = executor_memory, driver_memory
        self.application_args = list(application_args or ())

    def spark_app(self) -> SparkApp:
        """The application, from the rendered fields (InvalidSpec naming what is wrong)."""
        conf = {str(k): str(v) for k, v in self.conf.items()}
        for arg, setting in CONF_ARGS.items():
            if (value := getattr(self, arg)) is None:
                continue
            if conf.get(setting, value) != value:
                raise AirflowException(f"SparkJobOperator: {arg} {value!r} contradicts conf "
                                       f"{setting}={conf[setting]!r}")
            conf[setting] = str(value)
        sizes = {k: v for k, v in (
            ("executors", self._executors()), ("executor_cores", self.executor_cores),
            ("driver_cores", self.driver_cores),
            ("executor_memory_mb", _memory(self.executor_memory, "executor_memory")),
            ("driver_memory_mb", _memory(self.driver_memory, "driver_memory"))) if v is not None}
        return SparkApp(application=self.application, main_class=self.java_class,
                        arguments=tuple(str(a) for a in self.application_args), conf=conf,
                        py_files=tuple(_words(self.py_files)), jars=tuple(_words(self.jars)),
                        files=tuple(_words(self.files)), **sizes)

    def _executors(self) -> int | None:
        total = self.total_executor_cores
        if total is None:
            return self.num_executors
        per = self.executor_cores or 1
        if total % per:
            raise AirflowException(f"SparkJobOperator: total_executor_cores {total} is not a "
                                   f"multiple of executor_cores {per}")
        if self.num_executors is not None and self.num_executors * per != total:
            raise AirflowException(
                f"SparkJobOperator: total_executor_cores {total} contradicts num_executors "
                f"{self.num_executors} x executor_cores {per}")
        return total // per

    def run_resources(self, context: Any) -> Mapping[str, Any] | None:
        """The run's resources without what sizes a job (the app sizes itself): its caps,
        walltime and the rest still apply."""
        run = super().run_resources(context)
        return None if run is None else {k: v for k, v in run.items() if k not in SIZED}

    def build_spec(self, context: Any) -> JobSpec:
        _refuse_sized(self.job_resources)
        spec = super().build_spec(context)
        try:
            return spark_sized(spec, ())
        except BridgeheadError as exc:
            raise AirflowException(f"invalid Bridgehead job: {exc.message}") from exc


def _refuse_sized(resources: Mapping[str, Any] | None) -> None:
    given = sorted(set(resources or {}) & set(SIZED))
    if given:
        raise AirflowException(
            f"SparkJobOperator: job_resources {given[0]} is derived from the app "
            "(num_executors, executor_cores, driver_cores, executor_memory, driver_memory); "
            "max_cores caps it")
