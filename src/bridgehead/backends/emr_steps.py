"""A Bridgehead job as an EMR step: ``command-runner.jar`` and its argv (a list, never a
shell string), named with the attempt's tag.

- A command: ``env -- BRIDGEHEAD_JOB_ID=<tag> K=V ... <command...>`` (``env`` gives the step
  the job's environment; command-runner runs the words as they are). A command whose first
  word holds ``=`` is refused: ``env`` would read it as a variable.
- A Spark application: ``spark-submit --master yarn --deploy-mode cluster --name "<name>
  bh:<tag>" --conf ...  [--class C] <application> <arguments...>``: the job's environment
  goes to the driver (``spark.yarn.appMasterEnv.*``) and executors
  (``spark.executorEnv.*``); ``spark.yarn.tags`` gets ``bh:<tag>`` (the user's own tags are
  kept beside it, as Livy merges its own).

The step's Name is ``bh:<tag>`` then the job's name: after a crash a step is found by the first
word of its name (AddJobFlowSteps has no idempotency token).
"""

from __future__ import annotations

import re
from typing import Any

from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.spark import SparkApp
from bridgehead.errors import SubmitRejected

COMMAND_RUNNER = "command-runner.jar"
MAX_NAME = 256
"""EMR's limit on a step's Name."""


def step_name(tag: str, spec: JobSpec) -> str:
    label = re.sub(r"[\x00-\x1f\x7f]", "_", spec.name or "")
    return f"{tag_of(tag)} {label}".strip()[:MAX_NAME]


def tag_of(tag: str) -> str:
    return f"bh:{tag}"


def tag_in(name: str) -> str | None:
    """The attempt's tag a step's Name carries, if it is one of ours."""
    first = name.split(" ", 1)[0]
    return first[3:] if first.startswith("bh:") and len(first) > 3 else None


def step_args(tag: str, spec: JobSpec, *, max_cores: int | None = None) -> list[str]:
    """command-runner's argv for this attempt; SubmitRejected naming what EMR cannot honour."""
    _refuse_unsupported(spec)
    if spec.spark is not None:
        caps = [c for c in (spec.resources.max_cores, max_cores) if c is not None]
        return spark_args(tag, spec, spec.spark.capped(min(caps) if caps else None))
    if spec.script is not None:
        raise SubmitRejected("script: an EMR step runs an argv (command-runner.jar): give a "
                             "command, or a spark part")
    if "=" in spec.command[0]:
        raise SubmitRejected(f"command[0] {spec.command[0]!r} contains '=': the step runs it "
                             "through env, which would take it for a variable")
    env = [f"{k}={v}" for k, v in sorted(spec.env.items())]
    return ["env", "--", f"BRIDGEHEAD_JOB_ID={tag}", *env, *spec.command]


def spark_args(tag: str, spec: JobSpec, app: SparkApp) -> list[str]:
    name = re.sub(r"[\x00-\x1f\x7f]", "_", spec.name or "bridgehead")[:200]
    conf = dict(app.conf)
    user_tags = conf.pop("spark.yarn.tags", "")
    conf["spark.yarn.tags"] = ",".join(t for t in (user_tags, tag_of(tag)) if t)
    for key, value in {**spec.env, "BRIDGEHEAD_JOB_ID": tag}.items():
        for setting in (f"spark.yarn.appMasterEnv.{key}", f"spark.executorEnv.{key}"):
            if setting in conf:
                raise SubmitRejected(f"spark.conf {setting}: the job's env sets {key} (give "
                                     "it in env only; BRIDGEHEAD_JOB_ID is Bridgehead's)")
            conf[setting] = value
    args = ["spark-submit", "--master", "yarn", "--deploy-mode", "cluster",
            "--name", f"{name} {tag_of(tag)}"]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    args += ["--driver-cores", str(app.driver_cores), "--executor-cores",
             str(app.executor_cores), "--num-executors", str(app.executors)]
    for option, mb in (("--driver-memory", app.driver_memory_mb),
                       ("--executor-memory", app.executor_memory_mb)):
        if mb is not None:
            args += [option, f"{mb}m"]
    for option, values in (("--py-files", app.py_files), ("--jars", app.jars),
                           ("--files", app.files)):
        if values:
            args += [option, ",".join(values)]
    if app.main_class is not None:
        args += ["--class", app.main_class]
    return [*args, app.application, *app.arguments]


def step_definition(tag: str, spec: JobSpec, args: list[str]) -> dict[str, Any]:
    """One entry of AddJobFlowSteps' Steps. ActionOnFailure CONTINUE: a failed step must not
    take the cluster (or its other steps) down, and EMR requires it with concurrency > 1."""
    return {"Name": step_name(tag, spec), "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": COMMAND_RUNNER, "Args": args}}


def cores_of(spec: JobSpec) -> int:
    return spec.spark.cores if spec.spark is not None else spec.resources.cores


def _refuse_unsupported(spec: JobSpec) -> None:
    if spec.working_dir is not None:
        raise SubmitRejected("working_dir: an EMR step runs in a directory EMR chooses")
    if spec.scheduler_options:
        raise SubmitRejected("scheduler_options: the emr backend takes none")
    res = spec.resources
    for name in ("walltime_s", "partition", "account"):
        if getattr(res, name) is not None:
            raise SubmitRejected(f"resources.{name}: the emr backend does not take it "
                                 "(EMR steps have no time limit, partition or account)")
    if res.gpus:
        raise SubmitRejected("resources.gpus: the emr backend does not take it (size the "
                             "pool's instance groups instead)")
    if spec.spark is None and res.memory_mb is not None:
        raise SubmitRejected("resources.memory_mb: a command step runs on the cluster's "
                             "master node, which EMR does not size per step")
    if spec.spark is None and res.nodes != 1:
        raise SubmitRejected("resources.nodes: a command step runs on one node (the master)")
