"""A Spark application as a job: what ``spark-submit`` would be told, as typed data.

A :class:`SparkApp` is the third kind of job body beside ``command`` and ``script``
(:class:`bridgehead.domain.jobs.JobSpec` takes exactly one). Its cores are the driver's plus
each executor's: ``driver_cores + executors * executor_cores``; a ``max_cores`` cap clamps the
number of executors (never below one), as a per-task cap clamps a Slurm job's cores.

Only ``spark.*`` configuration names are taken; the few that Bridgehead sets itself (the
master, the deploy mode, supervision, the app's name that carries its tag) are refused with
the reason, so nothing the user wrote is silently replaced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bridgehead.domain.units import parse_memory
from bridgehead.errors import InvalidSpec

if TYPE_CHECKING:
    from bridgehead.domain.jobs import JobSpec

_CONF_NAME = re.compile(r"spark\.[A-Za-z0-9_.-]{1,200}")
_CLASS = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*")
_URI = re.compile(r"(/|(file|local|hdfs|s3|s3a|gs|abfs|abfss|https?):)[^\x00\n]{0,4095}")
MAX_CONF = 256
MAX_VALUE = 16 << 10
OWNED_CONF = {
    "spark.master": "the master is the cluster's (its agent's [agent.spark] master)",
    "spark.submit.deployMode": "Bridgehead submits in cluster mode",
    "spark.driver.supervise": "Bridgehead owns retries (a supervised driver is relaunched "
                              "under a new id the broker would not know)",
    "spark.app.name": "the app's name carries its Bridgehead tag: give the job a name instead",
    "spark.submit.pyFiles": "give py_files",
    "spark.jars": "give jars",
    "spark.files": "give files",
    "spark.driver.cores": "give driver_cores",
    "spark.driver.memory": "give driver_memory_mb",
    "spark.executor.cores": "give executor_cores",
    "spark.executor.memory": "give executor_memory_mb",
    "spark.executor.instances": "give executors",
    "spark.cores.max": "the cores are the driver's plus the executors' (resources.max_cores "
                       "caps them)",
}
"""``spark.*`` names Bridgehead sets from the job's own fields, with why each is refused."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SparkApp:
    """One Spark application: ``application`` (a ``.py`` file or a ``.jar``, as a path or
    URI), its ``main_class`` (required for a jar), ``arguments`` (argv, never a shell
    string), ``conf`` (``spark.*`` only), the driver's and executors' sizes, and the extra
    files ``spark-submit`` takes as ``--py-files``, ``--jars`` and ``--files``."""

    application: str
    main_class: str | None = None
    arguments: tuple[str, ...] = ()
    conf: dict[str, str] = field(default_factory=dict)
    driver_cores: int = 1
    driver_memory_mb: int | None = None
    executor_cores: int = 1
    executor_memory_mb: int | None = None
    executors: int = 1
    py_files: tuple[str, ...] = ()
    jars: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_location(self.application, "spark.application")
        python = self.application.endswith(".py")
        if not python and not self.application.endswith(".jar"):
            raise InvalidSpec("spark.application must be a .py or .jar file")
        if python and self.main_class is not None:
            raise InvalidSpec("spark.main_class is for a .jar application, not a .py one")
        if not python and self.main_class is None:
            raise InvalidSpec("spark.main_class is required for a .jar application")
        if self.main_class is not None and not _CLASS.fullmatch(self.main_class):
            raise InvalidSpec(f"spark.main_class {self.main_class!r} is not a class name")
        for name in ("driver_cores", "executor_cores", "executors"):
            if getattr(self, name) < 1:
                raise InvalidSpec(f"spark.{name} must be >= 1")
        for name in ("driver_memory_mb", "executor_memory_mb"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidSpec(f"spark.{name} must be >= 1")
        for name in ("py_files", "jars", "files"):
            for i, location in enumerate(getattr(self, name)):
                _check_location(location, f"spark.{name}[{i}]")
        for i, arg in enumerate(self.arguments):
            if "\x00" in arg:
                raise InvalidSpec(f"spark.arguments[{i}] may not contain NUL bytes")
        _check_conf(self.conf)

    @property
    def cores(self) -> int:
        """What the application holds at once: the driver's cores and every executor's."""
        return self.driver_cores + self.executors * self.executor_cores

    def capped(self, max_cores: int | None) -> SparkApp:
        """This app with its executors clamped so its cores fit ``max_cores`` (at least one
        executor: an app whose driver and one executor do not fit is refused)."""
        if max_cores is None or self.cores <= max_cores:
            return self
        fit = (max_cores - self.driver_cores) // self.executor_cores
        if fit < 1:
            raise InvalidSpec(
                f"spark: max_cores {max_cores} leaves no room for one executor "
                f"({self.driver_cores} driver + {self.executor_cores} executor cores)")
        return replace(self, executors=fit)

    def to_dict(self) -> dict[str, Any]:
        return {"application": self.application, "main_class": self.main_class,
                "arguments": list(self.arguments), "conf": dict(self.conf),
                "driver_cores": self.driver_cores, "driver_memory_mb": self.driver_memory_mb,
                "executor_cores": self.executor_cores,
                "executor_memory_mb": self.executor_memory_mb, "executors": self.executors,
                "py_files": list(self.py_files), "jars": list(self.jars),
                "files": list(self.files)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparkApp:
        """Validated (API, files); InvalidSpec naming what is wrong."""
        data = dict(data)
        for name in ("arguments", "py_files", "jars", "files"):
            data[name] = tuple(data.get(name) or ())
        data["conf"] = dict(data.get("conf") or {})
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidSpec(f"spark: {exc}") from exc

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SparkApp:
        """Rebuilt without validating again (it was validated when stored)."""
        app = object.__new__(cls)
        for name, value in data.items():
            if name in ("arguments", "py_files", "jars", "files"):
                value = tuple(value)
            object.__setattr__(app, name, value)
        return app


def _check_location(location: str, what: str) -> None:
    if not _URI.fullmatch(location):
        raise InvalidSpec(f"{what} {location!r} must be an absolute path or a file:, local:, "
                          "hdfs:, s3:, s3a:, gs:, abfs(s): or http(s): URI")
    if any(part == ".." for part in location.split("/")):
        raise InvalidSpec(f"{what} may not contain '..'")


def _check_conf(conf: dict[str, str]) -> None:
    if len(conf) > MAX_CONF:
        raise InvalidSpec(f"spark.conf has more than {MAX_CONF} entries")
    for name, value in conf.items():
        if not isinstance(value, str):
            raise InvalidSpec(f"spark.conf[{name!r}] must be a string")
        if not _CONF_NAME.fullmatch(name):
            raise InvalidSpec(f"spark.conf name {name!r} is not a spark.* setting")
        if why := OWNED_CONF.get(name):
            raise InvalidSpec(f"spark.conf {name} is Bridgehead's to set: {why}")
        if "\x00" in value or len(value) > MAX_VALUE:
            raise InvalidSpec(f"spark.conf {name}: the value has a NUL byte or is longer "
                              f"than {MAX_VALUE} characters")


TEMPLATE_FIELDS = ("application", "main_class", "arguments", "conf", "driver_cores",
                   "driver_memory", "executor_cores", "executor_memory", "executors",
                   "py_files", "jars", "files")
"""The fields of a ``spark`` part as people write it in files (rules, workflows): memory in
MB or with a unit (``2G``)."""


def from_template(data: Mapping[str, Any], text: Callable[[str], str]) -> SparkApp:
    """The application of a rule's ``spark`` template (:data:`TEMPLATE_FIELDS`): its
    argument words and conf values rendered by ``text`` (from the event), its paths, class
    and sizes as written. InvalidSpec naming the field, as at the API."""
    app = dict(data)
    for name in ("driver_memory", "executor_memory"):
        if name in app:
            value = app.pop(name)
            app[f"{name}_mb"] = parse_memory(value) if isinstance(value, str) else value
    app["arguments"] = [text(word) for word in app.get("arguments", ())]
    app["conf"] = {name: text(value) for name, value in (app.get("conf") or {}).items()}
    return SparkApp.from_dict(app)


SPARK_DEFAULT_MEMORY_MB = 1024
"""Spark's own default of ``spark.driver.memory`` and ``spark.executor.memory`` (1g)."""


def sized(spec: JobSpec, given: Collection[str]) -> JobSpec:
    """A Spark job with its resources derived from its application: ``max_cores`` clamps
    the executors (:meth:`SparkApp.capped`), ``resources.cores`` becomes the app's cores
    (driver + executors x executor cores) and, when a driver or executor memory is given,
    ``resources.memory_mb`` its memory (a size not given counts as Spark's default, 1g), so
    capacity checks and usage see the whole application. ``given`` names the resources the
    submit set explicitly: one that contradicts the derived value, or ``nodes`` (Spark
    places executors itself), is refused naming both. Other jobs are returned unchanged."""
    app = spec.spark
    if app is None:
        return spec
    res = spec.resources
    app = app.capped(res.max_cores)
    memory = None
    if app.driver_memory_mb is not None or app.executor_memory_mb is not None:
        memory = ((app.driver_memory_mb or SPARK_DEFAULT_MEMORY_MB)
                  + app.executors * (app.executor_memory_mb or SPARK_DEFAULT_MEMORY_MB))
    shape = (f"{app.driver_cores} driver + {app.executors} executors x "
             f"{app.executor_cores} cores")
    if "nodes" in given and res.nodes != 1:
        raise InvalidSpec("resources.nodes is not for a Spark application: Spark places its "
                          "executors itself (give spark.executors)")
    if "cores" in given and res.cores != app.cores:
        raise InvalidSpec(
            f"resources.cores ({res.cores}) contradicts the Spark application's {app.cores} "
            f"cores ({shape}): leave resources.cores out, it is derived (size the app with "
            "spark.executors, executor_cores and driver_cores; resources.max_cores caps it)")
    if "memory_mb" in given and res.memory_mb is not None and res.memory_mb != memory:
        raise InvalidSpec(
            f"resources.memory_mb ({res.memory_mb}) contradicts the Spark application's "
            f"memory ({'not set' if memory is None else f'{memory} MB'}): leave "
            "resources.memory_mb out, it is derived from spark.driver_memory_mb and "
            "spark.executor_memory_mb")
    return replace(spec, spark=app,
                   resources=replace(res, cores=app.cores, nodes=1, memory_mb=memory))
