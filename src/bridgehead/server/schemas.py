"""API models (pydantic, at the edge only) and their mapping to the domain."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

from bridgehead.domain import sbatch
from bridgehead.domain.clusters import Principal, Role
from bridgehead.domain.jobs import Job, JobSpec, JobState, Resources, Transition, Usage
from bridgehead.domain.runs import Run, RunState, Task, TaskState, runtime
from bridgehead.domain.spark import SparkApp
from bridgehead.domain.spark import sized as spark_sized
from bridgehead.errors import InvalidSpec
from bridgehead.server.guard import dumps
from bridgehead.server.pools import NodeErrorIn, NodeIn
from bridgehead.store.base import ClusterStats, LogChunk

Name = Field(min_length=1, max_length=128)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$"
"""Cluster, tenant and agent names: what ``bridgehead.domain.jobs`` accepts for a job's."""
SafeName = Field(pattern=NAME_PATTERN)
MAX_INT = (1 << 63) - 1
"""The largest integer a cursor, offset or position may be (a signed 64-bit column)."""
MAX_WAIT = 3600.0
"""The longest wait a request may ask for (the server caps it at ``max_wait_s``)."""
T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourcesIn(_Model):
    cores: int = Field(1, ge=1, le=1_000_000)
    nodes: int = Field(1, ge=1, le=100_000)
    memory_mb: int | None = Field(None, ge=1)
    gpus: int = Field(0, ge=0, le=100_000)
    walltime_s: int | None = Field(None, ge=1)
    partition: str | None = Field(None, max_length=128)
    account: str | None = Field(None, max_length=128)
    max_cores: int | None = Field(None, ge=1, le=1_000_000)
    max_nodes: int | None = Field(None, ge=1, le=100_000)


class SparkIn(_Model):
    """A Spark application (:class:`bridgehead.domain.spark.SparkApp`): what ``spark-submit``
    is told. Its sizes make the job's ``resources.cores`` (driver + executors x executor
    cores, after ``resources.max_cores`` clamps the executors) and ``memory_mb``."""

    application: str = Field(min_length=1, max_length=4096,
                             description="A .py or .jar: an absolute path or a URI.")
    main_class: str | None = Field(None, max_length=1024, description="For a .jar.")
    arguments: list[str] = Field(default_factory=list, max_length=4096)
    conf: dict[str, str] = Field(default_factory=dict, max_length=256,
                                 description="spark.* settings only.")
    driver_cores: int = Field(1, ge=1, le=100_000)
    driver_memory_mb: int | None = Field(None, ge=1, le=1 << 30)
    executor_cores: int = Field(1, ge=1, le=100_000)
    executor_memory_mb: int | None = Field(None, ge=1, le=1 << 30)
    executors: int = Field(1, ge=1, le=100_000)
    py_files: list[str] = Field(default_factory=list, max_length=1024)
    jars: list[str] = Field(default_factory=list, max_length=1024)
    files: list[str] = Field(default_factory=list, max_length=1024)


class JobIn(_Model):
    """A job to run: ``command`` (an argv list, never a shell string) or ``script`` text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"cluster": "local", "command": ["/bin/echo", "hello"], "labels": {"team": "ml"}}]})

    cluster: str = Field("", max_length=128, description="Empty: route by cluster_labels.")
    cluster_labels: dict[str, str] = Field(
        default_factory=dict, max_length=64,
        description="Route to an online cluster whose agents carry all these labels.")
    command: list[str] = Field(default_factory=list, max_length=4096)
    script: str | None = Field(None, max_length=1 << 20)
    array: str | None = Field(
        None, max_length=1024,
        description="A job array, as sbatch --array: 0-99, 1,3,5-7, 0-99:2, with %N to run "
                    "at most N at once. One job per element, under this (parent) job.")
    name: str | None = Field(None, max_length=256)
    env: dict[str, str] = Field(default_factory=dict, max_length=1024)
    working_dir: str | None = Field(None, max_length=4096)
    resources: ResourcesIn = Field(default_factory=ResourcesIn)
    scheduler_options: list[str] = Field(default_factory=list, max_length=256)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    tenant: str = Field("default", max_length=128)
    idempotency_key: str | None = Field(None, max_length=512)
    args: list[str] = Field(default_factory=list, max_length=4096,
                            description="The script's arguments, as in sbatch job.sh a b c.")
    spark: SparkIn | None = Field(None, description=(
        "A Spark application instead of a command or script (a cluster with a Spark "
        "backend). resources.cores and memory_mb are derived from it: leave them out."))

    def to_spec(self) -> JobSpec:
        """The job, with its script's #SBATCH directives taken in where this body gives no
        value of its own (:func:`bridgehead.domain.sbatch.apply`), and a Spark job's
        resources derived from its application (:func:`bridgehead.domain.spark.sized`)."""
        data = self.model_dump()
        data["resources"] = Resources(**data["resources"])
        data["command"] = tuple(data["command"])
        data["args"] = tuple(data["args"])
        data["scheduler_options"] = tuple(data["scheduler_options"])
        if data["spark"] is not None:
            data["spark"] = SparkApp.from_dict(data["spark"])
            return spark_sized(JobSpec(**data), self.given())
        return sbatch.apply(JobSpec(**data), self.given())

    def given(self) -> set[str]:
        """What the body gives explicitly, which beats a directive: the resources present in
        it (not null), and name, array and working_dir when set."""
        res = self.resources
        given = {f for f in res.model_fields_set if getattr(res, f) is not None}
        return given | {f for f in ("name", "array", "working_dir")
                        if getattr(self, f, None) is not None}


class JobBatchIn(_Model):
    jobs: list[JobIn] = Field(min_length=1, max_length=1000)


class UsageOut(BaseModel):
    elapsed_s: float
    cores: int
    nodes: int
    max_rss_mb: float | None = None
    core_seconds: float
    estimated: bool = False
    """Apportioned from a shared resource's accounting, not measured per job (EMR)."""
    instance_hours: float | None = None
    """The job's share of its cluster's normalized instance hours (EMR)."""


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


class JobOut(BaseModel):
    id: str
    cluster: str
    tenant: str
    name: str | None
    state: JobState
    terminal: bool
    version: int
    attempt: int
    native_id: str | None
    agent_id: str | None
    exit_code: int | None
    reason: str | None
    cancel_requested: bool
    usage: UsageOut | None
    labels: dict[str, str]
    idempotency_key: str | None
    created_at: datetime | None
    updated_at: datetime | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    parent_id: str | None = None
    array_index: int | None = None
    elements: int | None = None
    log_base: dict[str, int] | None = Field(None, description=(
        "Where this attempt's log bytes start per stream, after those of the attempts the "
        "infrastructure lost (null: the first attempt)."))

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """From a domain job, which is valid by construction: no re-validation."""
        usage = job.usage
        return cls.model_construct(
            id=job.id, cluster=job.cluster, tenant=job.spec.tenant, name=job.spec.name,
            state=job.state, terminal=job.terminal, version=job.version, attempt=job.attempt,
            native_id=job.native_id, agent_id=job.agent_id, exit_code=job.exit_code,
            reason=job.reason,
            cancel_requested=job.cancel_requested,
            usage=UsageOut.model_construct(
                elapsed_s=usage.elapsed_s, cores=usage.cores, nodes=usage.nodes,
                max_rss_mb=usage.max_rss_mb, core_seconds=usage.core_seconds,
                estimated=usage.estimated, instance_hours=usage.instance_hours)
            if usage else None,
            labels=job.spec.labels, idempotency_key=job.spec.idempotency_key,
            created_at=_ts(job.created_at), updated_at=_ts(job.updated_at),
            submitted_at=_ts(job.submitted_at), started_at=_ts(job.started_at),
            finished_at=_ts(job.finished_at), spec=job.spec.to_dict(),
            parent_id=job.parent_id, array_index=job.array_index, elements=job.elements,
            log_base=job.log_base,
        )


def json_response(model: BaseModel | list[BaseModel], status_code: int = 200) -> Response:
    """Serialize once, in pydantic's core, instead of FastAPI validating the model again
    against the route's ``response_model`` (which stays the documented schema)."""
    if isinstance(model, list):
        body = b"[" + b",".join(map(_dump, model)) + b"]"
    else:
        body = _dump(model)
    return Response(body, status_code=status_code, media_type="application/json")


def _dump(model: BaseModel) -> bytes:
    """The model as JSON; a model holding what JSON cannot (a row stored before the edge
    checked text) is cleaned by ``guard.plain`` rather than failing the whole answer."""
    try:
        return model.model_dump_json().encode()
    except (PydanticSerializationError, ValueError, RecursionError):
        return dumps(model)


def page_of(found: Sequence[T], limit: int,
            cursor: Callable[[T], str]) -> tuple[list[T], str | None]:
    """A page from what the store found when asked for ``limit + 1`` items (one more than
    the page), and its ``next``: the last item's cursor, only when a further item exists."""
    page = list(found[:limit])
    return page, cursor(page[-1]) if len(found) > limit else None


class SubmitOut(BaseModel):
    job: JobOut
    created: bool


class JobPage(BaseModel):
    jobs: list[JobOut]
    next: str | None = Field(None, description="Pass as `after` for the next page.")


class AgentIn(_Model):
    cluster: str = SafeName
    agent_id: str = SafeName


class ClaimIn(AgentIn):
    max_jobs: int = Field(16, ge=0, le=1000, strict=True)
    wait_s: float = Field(0, ge=0, le=300, strict=True)
    cancelling: list[str] = Field(default_factory=list, max_length=10_000)
    poll_since: float | None = Field(None, ge=0, le=MAX_INT, strict=True, description=(
        "The 'at' of this agent's previous claim answer: a scheduler event of the cluster "
        "since then (between two claims) answers at once with 'poll'."))


class ClaimOut(BaseModel):
    jobs: list[JobOut]
    cancel: list[str] = Field(description="Ids of this agent's jobs that a user cancelled.")
    poll: bool = Field(False, description=(
        "The cluster's scheduler reported a change (a job event of its Slurm hook): poll it "
        "now."))
    at: float | None = Field(None, description="Server time of this answer (the next "
                                               "claim's 'poll_since').")


class UsageIn(_Model):
    """Numbers here and in the rest of the agent's reports are strict: ``"5"`` or ``true``
    is refused (422), never read as a number."""

    elapsed_s: float = Field(0, ge=0, strict=True)
    cores: int = Field(0, ge=0, strict=True)
    nodes: int = Field(0, ge=0, strict=True)
    max_rss_mb: float | None = Field(None, ge=0, strict=True)
    estimated: bool = Field(False, strict=True)
    instance_hours: float | None = Field(None, ge=0, strict=True)


class TransitionIn(_Model):
    job_id: str = Name
    state: JobState
    native_id: str | None = Field(None, max_length=256)
    exit_code: int | None = Field(None, ge=-(1 << 31), lt=1 << 31, strict=True)
    reason: str | None = Field(None, max_length=4096)
    usage: UsageIn | None = None
    at: float | None = Field(None, strict=True)
    infrastructure: bool = Field(False, strict=True, description=(
        "With state lost: the backend knows the infrastructure (a node, worker or cluster) "
        "lost the attempt; the server queues the job again for one new attempt, up to "
        "[server] max_lost_attempts lost attempts."))

    def to_domain(self) -> Transition:
        return Transition(
            job_id=self.job_id, state=self.state, native_id=self.native_id,
            exit_code=self.exit_code, reason=self.reason, at=self.at,
            usage=Usage(**self.usage.model_dump()) if self.usage else None,
            infrastructure=self.infrastructure,
        )


class LogChunkIn(_Model):
    job_id: str = Name
    stream: Literal["stdout", "stderr"]
    pos: int = Field(ge=0, le=MAX_INT, strict=True)
    data: str = Field(description="base64")

    def to_domain(self) -> LogChunk:
        try:
            data = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidSpec(f"log chunk of job {self.job_id} is not valid base64") from exc
        return LogChunk(job_id=self.job_id, stream=self.stream, pos=self.pos, data=data)


class ReportIn(AgentIn):
    transitions: list[TransitionIn] = Field(default_factory=list, max_length=10_000)
    logs: list[LogChunkIn] = Field(default_factory=list, max_length=10_000)


class ReportOut(BaseModel):
    applied: list[bool]


class HeartbeatIn(AgentIn):
    backend: str = Field("local", max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    info: dict[str, Any] = Field(default_factory=dict, max_length=64)
    nodes: list[NodeIn] | None = Field(None, max_length=100_000, description=(
        "the nodes of the cluster's pools its providers have now (null: it runs none)"))
    node_errors: list[NodeErrorIn] = Field(default_factory=list, max_length=10_000)


class ClusterOut(BaseModel):
    name: str
    backend: str
    online: bool
    labels: dict[str, str]
    agent_id: str | None
    last_heartbeat: datetime | None
    counts: dict[str, int]
    info: dict[str, Any]

    @classmethod
    def of(cls, stats: ClusterStats, now: float, ttl_s: float) -> ClusterOut:
        c = stats.cluster
        return cls(name=c.name, backend=c.backend, online=c.online(now, ttl_s), labels=c.labels,
                   agent_id=c.agent_id, last_heartbeat=_ts(c.last_heartbeat),
                   counts=stats.counts, info=dict(c.info))


class EventIn(_Model):
    type: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")
    subject: str = Field(min_length=1, max_length=1024)
    source: str = Field("external", min_length=1, max_length=256)
    id: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:/-]+$",
                           description="Unique per source; a re-sent event is logged once.")
    data: dict[str, Any] = Field(default_factory=dict)
    tenant: str | None = Field(None, pattern=f"{NAME_PATTERN}|^$", description=(
        "The tenant it concerns (default: the token's; none for an admin's): a client token "
        "of one tenant reads that tenant's events only."))


class EventPage(BaseModel):
    events: list[dict[str, Any]]
    next: int


class TokenIn(_Model):
    name: str = Name
    role: Role
    cluster: str | None = Field(None, pattern=NAME_PATTERN)
    tenant: str | None = Field(None, pattern=NAME_PATTERN)


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    cluster: str | None
    tenant: str | None
    token: str | None = Field(None, description="The secret: shown once, at creation.")

    @classmethod
    def of(cls, p: Principal, secret: str | None = None) -> TokenOut:
        return cls(id=p.token_id, name=p.name, role=p.role, cluster=p.cluster, tenant=p.tenant,
                   token=secret)


# -- workflow runs -----------------------------------------------------------------------------
class RunIn(_Model):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"spec": "name: hello\nsteps:\n  - id: greet\n    cluster: local\n"
                 "    command: [/bin/echo, hello]\n"}]})

    spec: str = Field(min_length=1, max_length=1 << 20, description="The workflow file's YAML.")
    filename: str = Field("workflow.yaml", min_length=1, max_length=256,
                          description="Named in error messages (file:line: field: message).")
    params: dict[str, Any] = Field(default_factory=dict, max_length=256,
                                   description="Overrides of the workflow's declared params.")
    tenant: str = Field("default", pattern=NAME_PATTERN)
    idempotency_key: str | None = Field(None, min_length=1, max_length=512)


class RetryIn(_Model):
    from_failed: bool = Field(True, strict=True, description="Run only the failed, skipped "
                              "and cancelled tasks again (true), or start a new run of the "
                              "same workflow and params (false). A boolean: 0 is refused.")


class RunOut(BaseModel):
    id: str
    workflow: str
    tenant: str
    state: RunState
    version: int
    params: dict[str, Any]
    cancel_requested: bool
    created_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    duration_s: float = Field(description="Seconds it has run: from its creation to its end "
                              "(or now), less the time it sat failed or cancelled before "
                              "each retry.")
    counts: dict[str, int] = Field(description="Tasks by state.")

    @classmethod
    def of(cls, run: Run, counts: dict[str, int]) -> RunOut:
        return cls.model_construct(
            id=run.id, workflow=run.workflow, tenant=run.tenant, state=run.state,
            version=run.version, params=run.params, cancel_requested=run.cancel_requested,
            created_at=_ts(run.created_at), updated_at=_ts(run.updated_at),
            finished_at=_ts(run.finished_at), duration_s=runtime(run, time.time()),
            counts=counts)


class StepOut(BaseModel):
    id: str
    needs: list[str]
    state: str
    total: int
    counts: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None = Field(description="Seconds from its first task's start to "
                                     "its last one's end, less the time the run sat failed "
                                     "or cancelled before a retry.")

    @classmethod
    def of(cls, summary: dict[str, Any]) -> StepOut:
        """From :func:`bridgehead.domain.runs.step_summary`'s entry (epoch times)."""
        return cls.model_construct(**{**summary, "started_at": _ts(summary["started_at"]),
                                      "finished_at": _ts(summary["finished_at"])})


class TaskOut(BaseModel):
    step: str
    index: int
    item: str | int | float | None
    state: TaskState
    attempt: int
    tries: int
    job_id: str | None
    exit_code: int | None
    reason: str | None
    ready_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls.model_construct(
            step=task.step, index=task.index, item=task.item, state=task.state,
            attempt=task.attempt, tries=task.tries, job_id=task.job_id,
            exit_code=task.exit_code, reason=task.reason, ready_at=_ts(task.ready_at),
            started_at=_ts(task.started_at), finished_at=_ts(task.finished_at))


class RunDetailOut(RunOut):
    steps: list[StepOut]
    tasks: list[TaskOut]


class RunPage(BaseModel):
    runs: list[RunOut]
    next: str | None = Field(None, description="Pass as `after` for the next page.")


class RulesIn(_Model):
    rules: list[dict[str, Any]] = Field(min_length=1, max_length=1000, description=(
        "Rules in the rules-file shape (name, description, enabled, match, actions); a "
        "start_workflow action gives the workflow's text as spec."))
