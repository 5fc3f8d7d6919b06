"""Jobs: what a client asks for (JobSpec), what the broker knows (Job), and the lifecycle.

Lifecycle::

    queued -> claimed -> submitting -> submitted -> running -> succeeded
                 |            |             |           |-> failed | cancelled | timed_out | lost
                 v            v             +-> (any terminal state)
              queued       failed (the scheduler refused it), cancelled

    submitted | running -> queued (attempt + 1): the attempt was lost to the infrastructure
                           (see :func:`requeue_lost`), at most ``max_lost_attempts`` times

Every store write is a compare-and-set against the states in ``TRANSITIONS``: a stale or
duplicate report names a transition that is no longer allowed and changes nothing.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from bridgehead.domain.spark import SparkApp
from bridgehead.errors import InvalidSpec


class JobState(StrEnum):
    QUEUED = "queued"
    """Accepted by the server, waiting for an agent of its cluster."""
    CLAIMED = "claimed"
    """Leased by one agent; not yet handed to the scheduler. An expired lease re-queues it."""
    SUBMITTING = "submitting"
    """The agent is handing it to the scheduler; after a crash the tag decides: adopt or submit."""
    SUBMITTED = "submitted"
    """The scheduler has it (``native_id`` is set) and has not started it."""
    RUNNING = "running"
    """The scheduler reports it running."""
    SUCCEEDED = "succeeded"
    """Ended with exit code 0."""
    FAILED = "failed"
    """Ended with a non-zero exit code or a signal, or the scheduler refused it."""
    CANCELLED = "cancelled"
    """Cancelled by a user before or while it ran."""
    TIMED_OUT = "timed_out"
    """Killed by the scheduler for exceeding its walltime (kept apart from FAILED)."""
    LOST = "lost"
    """Nothing knows it any more: gone from the scheduler and from its accounting."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT, JobState.LOST}
)
ACTIVE: frozenset[JobState] = frozenset(JobState) - TERMINAL
NOT_STARTED: frozenset[JobState] = ACTIVE - {JobState.RUNNING}
"""A cluster's queue: jobs that have not started (the scaler's demand, the queue the Clusters
page charts)."""
IN_FLIGHT: frozenset[JobState] = frozenset(
    {JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING}
)
"""States in which the job belongs to an agent: it must poll (or reconcile) it."""

_ENDS = TERMINAL - {JobState.CANCELLED}

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.CLAIMED, JobState.CANCELLED}),
    JobState.CLAIMED: frozenset(
        {JobState.SUBMITTING, JobState.QUEUED, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.SUBMITTING: frozenset({JobState.SUBMITTED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUBMITTED: frozenset({JobState.RUNNING, JobState.CANCELLED} | _ENDS),
    JobState.RUNNING: frozenset({JobState.CANCELLED} | _ENDS),
    **{s: frozenset() for s in TERMINAL},
}


def predecessors(target: JobState) -> frozenset[JobState]:
    """The states from which ``target`` may be reached: the expected states of a CAS write."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if target in nexts)


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


_last_id_ms = 0
_id_seq = 0


def new_job_id() -> str:
    """A 26-char id: milliseconds, a sequence (so ids made in one process sort by creation
    even within a millisecond) and 40 random bits."""
    global _last_id_ms, _id_seq
    ms = int(time.time() * 1000)
    if ms <= _last_id_ms:
        ms, _id_seq = _last_id_ms, _id_seq + 1
        if _id_seq > 0xFFFF:
            ms, _id_seq = ms + 1, 0
    else:
        _id_seq = 0
    _last_id_ms = ms
    return f"{ms:012x}{_id_seq:04x}{secrets.token_hex(5)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """What a job asks of its cluster. Zero/None means "the scheduler's default"."""

    cores: int = 1
    nodes: int = 1
    memory_mb: int | None = None
    gpus: int = 0
    walltime_s: int | None = None
    partition: str | None = None
    account: str | None = None
    max_cores: int | None = None
    """Cap on cores, whatever ``cores`` or pass-through options ask (LCLS's per-task cap: a
    DAG-wide default raises everyone's cores, the single-threaded step stays at 1)."""
    max_nodes: int | None = None
    """Cap on nodes, likewise."""

    def __post_init__(self) -> None:
        for name in ("cores", "nodes"):
            if getattr(self, name) < 1:
                raise InvalidSpec(f"resources.{name} must be >= 1")
        for name in ("max_cores", "max_nodes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidSpec(f"resources.{name} must be >= 1")
        if self.gpus < 0:
            raise InvalidSpec("resources.gpus must be >= 0")
        if self.memory_mb is not None and self.memory_mb < 1:
            raise InvalidSpec("resources.memory_mb must be >= 1")
        if self.walltime_s is not None and self.walltime_s < 1:
            raise InvalidSpec("resources.walltime_s must be >= 1")
        for name in ("partition", "account"):
            value = getattr(self, name)
            if value is not None and not _NAME.fullmatch(value):
                raise InvalidSpec(f"resources.{name} {value!r} is not a valid name")

    def to_dict(self) -> dict[str, Any]:
        """Every field, plain JSON types."""
        return {name: getattr(self, name) for name in RESOURCE_FIELDS}

    @property
    def capped_cores(self) -> int:
        """The cores the job gets: ``cores`` clamped by ``max_cores``."""
        return self.cores if self.max_cores is None else min(self.cores, self.max_cores)

    @property
    def capped_nodes(self) -> int:
        """The nodes the job gets: ``nodes`` clamped by ``max_nodes``."""
        return self.nodes if self.max_nodes is None else min(self.nodes, self.max_nodes)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*(=[^\x00\n]*)?")
MAX_SCRIPT_BYTES = 1 << 20
MAX_ARGS = 4096
MAX_ARG_BYTES = 128 << 10
"""Linux's MAX_ARG_STRLEN: no exec takes a longer argument or environment string."""
MAX_KEY_LEN = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """What to run and where. Exactly one of ``command`` (an argv list, never a shell string)
    or ``script`` (the text of a script file, run by its own ``#!`` line) is given.

    Where: ``cluster`` names the cluster; or, with ``cluster`` empty, ``cluster_labels`` lets
    the server route the job to a cluster whose agents carry all these labels."""

    cluster: str = ""
    cluster_labels: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    script: str | None = None
    args: tuple[str, ...] = ()
    """Arguments given to ``script``, as in ``sbatch job.sh a b c`` (only with a script)."""
    array: str | None = None
    """A job array's index set, as sbatch's ``--array`` takes it (``0-99``, ``1,3,5-7``,
    ``0-99:2``, with an optional ``%N`` throttle): one native submission whose elements are
    Bridgehead jobs of their own."""
    spark: SparkApp | None = None
    """A Spark application (``spark-submit``'s arguments, typed), for Spark backends."""
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    resources: Resources = field(default_factory=Resources)
    scheduler_options: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    tenant: str = "default"
    idempotency_key: str | None = None

    def same_request(self, other: JobSpec) -> bool:
        """Whether ``other``, re-sent with this job's idempotency key, asks for this job (a
        routed job may have landed on another cluster since: its labels are what was sent)."""
        if other.cluster_labels:
            return self.cluster_labels == other.cluster_labels and self == replace(
                other, cluster=self.cluster)
        return self == other

    def __post_init__(self) -> None:
        if self.cluster and not _NAME.fullmatch(self.cluster):
            raise InvalidSpec(f"cluster {self.cluster!r} is not a valid cluster name")
        if not self.cluster and not self.cluster_labels:
            raise InvalidSpec("give a cluster, or cluster_labels to route the job by")
        _check_labels(self.cluster_labels, "cluster label")
        if bool(self.command) + (self.script is not None) + (self.spark is not None) != 1:
            raise InvalidSpec("give exactly one of command (argv list), script or spark "
                              "(a Spark application)")
        if self.spark is not None and self.array is not None:
            raise InvalidSpec("array is for commands and scripts, not a Spark application")
        _check_argv(self.command, "command", 0)
        if self.args and self.script is None:
            raise InvalidSpec("args are a script's arguments: give them with a script "
                              "(a command's arguments are part of command)")
        _check_argv(self.args, "args", len(self.command))
        if self.array is not None:
            array_indices(self.array)
        if self.script is not None:
            if len(self.script.encode()) > MAX_SCRIPT_BYTES:
                raise InvalidSpec(f"script is larger than {MAX_SCRIPT_BYTES} bytes")
            if not self.script.startswith("#!"):
                raise InvalidSpec("script must start with a #! interpreter line")
            if "\x00" in self.script:
                raise InvalidSpec("script may not contain NUL bytes")
        for key, value in self.env.items():
            if not _ENV_NAME.fullmatch(key):
                raise InvalidSpec(f"env name {key!r} is not a valid variable name")
            if "\x00" in value:
                raise InvalidSpec(f"env {key} may not contain NUL bytes")
            if len(value) > MAX_ARG_BYTES // 4 and len(f"{key}={value}".encode()) > MAX_ARG_BYTES:
                raise InvalidSpec(f"env {key} is longer than {MAX_ARG_BYTES} bytes, the most "
                                  "one environment string may be: pass a file instead")
        if self.working_dir is not None:
            _check_path(self.working_dir, "working_dir")
        for option in self.scheduler_options:
            if not _OPTION.fullmatch(option):
                raise InvalidSpec(
                    f"scheduler option {option!r} is not of the form --name or --name=value"
                )
        if not _NAME.fullmatch(self.tenant):
            raise InvalidSpec(f"tenant {self.tenant!r} is not a valid name")
        if self.idempotency_key is not None and not 0 < len(self.idempotency_key) <= MAX_KEY_LEN:
            raise InvalidSpec(f"idempotency_key must be 1-{MAX_KEY_LEN} characters")
        _check_labels(self.labels, "label")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (a shallow walk: ``asdict``'s deep copy is the hot path's cost)."""
        data = {name: getattr(self, name) for name in _SPEC_FIELDS}
        data["command"] = list(self.command)
        data["args"] = list(self.args)
        data["scheduler_options"] = list(self.scheduler_options)
        data["env"] = dict(self.env)
        data["labels"] = dict(self.labels)
        data["cluster_labels"] = dict(self.cluster_labels)
        data["resources"] = self.resources.to_dict()
        data["spark"] = None if self.spark is None else self.spark.to_dict()
        return data

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> JobSpec:
        """Rebuild a spec that was validated when it was stored (``to_dict`` output), without
        validating it again: loading is on every hot path, and the rules run on write."""
        spec = object.__new__(cls)
        for name in _SPEC_FIELDS:
            object.__setattr__(spec, name, data.get(name))
        resources = object.__new__(Resources)
        for name in RESOURCE_FIELDS:
            object.__setattr__(resources, name, data["resources"].get(name))
        object.__setattr__(spec, "resources", resources)
        object.__setattr__(spec, "command", tuple(data["command"]))
        object.__setattr__(spec, "args", tuple(data.get("args") or ()))
        spark = data.get("spark")
        object.__setattr__(spec, "spark", None if spark is None else SparkApp.from_stored(spark))
        object.__setattr__(spec, "scheduler_options", tuple(data["scheduler_options"]))
        object.__setattr__(spec, "cluster_labels", data.get("cluster_labels") or {})
        return spec

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        data = dict(data)
        resources = data.pop("resources", None) or {}
        try:
            return cls(
                **{
                    **data,
                    "command": tuple(data.get("command") or ()),
                    "args": tuple(data.get("args") or ()),
                    "spark": None if data.get("spark") is None
                    else SparkApp.from_dict(data["spark"]),
                    "scheduler_options": tuple(data.get("scheduler_options") or ()),
                    "resources": Resources(**resources),
                }
            )
        except TypeError as exc:
            raise InvalidSpec(str(exc)) from exc


_SPEC_FIELDS = tuple(f.name for f in fields(JobSpec))
RESOURCE_FIELDS = tuple(f.name for f in fields(Resources))


def _check_argv(words: tuple[str, ...], what: str, before: int) -> None:
    if before + len(words) > MAX_ARGS:
        raise InvalidSpec(f"{what} has more than {MAX_ARGS} arguments")
    for i, arg in enumerate(words):
        if "\x00" in arg:
            raise InvalidSpec(f"{what} arguments may not contain NUL bytes")
        if len(arg) > MAX_ARG_BYTES // 4 and len(arg.encode()) > MAX_ARG_BYTES:
            raise InvalidSpec(f"{what}[{i}] is longer than {MAX_ARG_BYTES} bytes, "
                              "the most one exec argument may be: pass a file instead")


MAX_ARRAY_SIZE = 10_000
"""The most elements one array may have (Slurm's own MaxArraySize defaults to 1001)."""
_ARRAY_PART = re.compile(r"(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?")


def array_indices(text: str) -> tuple[list[int], int | None]:
    """The indices of an array expression (sbatch's ``--array`` syntax) and its ``%``
    throttle, or :class:`InvalidSpec` naming what is wrong."""
    body, pct, throttle = text.partition("%")
    if pct and not (throttle.isdigit() and int(throttle) >= 1):
        raise InvalidSpec(f"array {text!r}: the throttle after '%' must be a number >= 1")
    indices: set[int] = set()
    for part in body.split(","):
        match = _ARRAY_PART.fullmatch(part)
        if not match:
            raise InvalidSpec(f"array {text!r}: {part!r} is not N, N-M or N-M:STEP")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        step = int(match[3]) if match[3] is not None else 1
        if last < first or step < 1:
            raise InvalidSpec(f"array {text!r}: {part!r} is an empty range")
        if (last - first) // step + 1 + len(indices) > MAX_ARRAY_SIZE:
            raise InvalidSpec(f"array {text!r} has more than {MAX_ARRAY_SIZE} elements")
        indices.update(range(first, last + 1, step))
    return sorted(indices), int(throttle) if pct else None


def _check_labels(labels: dict[str, str], what: str) -> None:
    for key, value in labels.items():
        if not _NAME.fullmatch(key) or len(value) > 1024:
            raise InvalidSpec(f"{what} {key!r} is not a valid label")


def _check_path(path: str, what: str) -> None:
    if "\x00" in path or not path.startswith("/"):
        raise InvalidSpec(f"{what} must be an absolute path")
    if any(part == ".." for part in path.split("/")):
        raise InvalidSpec(f"{what} may not contain '..'")


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """What a finished (or running) job used, from the scheduler's accounting."""

    elapsed_s: float = 0.0
    cores: int = 0
    nodes: int = 0
    max_rss_mb: float | None = None
    estimated: bool = False
    """Not measured per job but apportioned from a shared resource's accounting (EMR: the
    cluster's NormalizedInstanceHours shared out to its steps by runtime x cores)."""
    instance_hours: float | None = None
    """The job's share of its cluster's normalized instance hours (EMR), when estimated."""

    @property
    def core_seconds(self) -> float:
        return self.elapsed_s * self.cores


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """The broker's record of one job. ``version`` grows by one on every change."""

    id: str
    spec: JobSpec
    state: JobState
    version: int = 1
    attempt: int = 1
    native_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    agent_id: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    usage: Usage | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    parent_id: str | None = None
    """An array element's parent (see :mod:`bridgehead.domain.arrays`)."""
    array_index: int | None = None
    """An array element's index."""
    elements: int | None = None
    """An array parent's number of elements."""
    log_base: dict[str, int] | None = None
    """Where this attempt's log bytes start, per stream, after those of the attempts lost
    before it (None: the first attempt, from 0)."""

    @property
    def cluster(self) -> str:
        return self.spec.cluster

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One state report: move ``job_id`` to ``state`` if it is allowed from where it is now."""

    job_id: str
    state: JobState
    native_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    usage: Usage | None = None
    at: float | None = None
    infrastructure: bool = False
    """With LOST: the backend knows the infrastructure lost the attempt (see
    :func:`requeue_lost`)."""


LOST_ATTEMPT_STATES = frozenset({JobState.SUBMITTED, JobState.RUNNING})
"""The states an attempt lost to the infrastructure is taken from to be queued again."""


def requeue_lost(job: Job, t: Transition, max_lost_attempts: int) -> bool:
    """Whether report ``t`` of ``job`` queues the job again for a new attempt instead of
    ending it LOST: the backend knows the attempt was lost to the infrastructure (a dead node,
    worker or cluster: never a job merely missing from the scheduler, which may have run),
    nobody asked to cancel it, and fewer than ``max_lost_attempts`` attempts were lost before.
    Each lost attempt gets exactly one new one, and these do not use up a workflow step's
    retries: the job keeps its id, so its task sees one job that ends once. Array jobs and
    their elements are never re-queued one by one."""
    return (t.state is JobState.LOST and t.infrastructure and job.state in LOST_ATTEMPT_STATES
            and not job.cancel_requested and job.attempt <= max_lost_attempts
            and job.parent_id is None and job.elements is None)


def attempt_tag(job_id: str, attempt: int) -> str:
    """The tag an attempt's native job carries, by which an agent finds it after a crash:
    the job id for the first attempt, ``<id>.a<n>`` for attempt n, so a new attempt is never
    mistaken for the lost one still known to the scheduler."""
    return job_id if attempt <= 1 else f"{job_id}.a{attempt}"


def lost_marker(attempt: int, reason: str | None) -> bytes:
    """The line between a lost attempt's log and the next attempt's, in each stream."""
    why = f": {reason}" if reason else ""
    return (f"\n[bridgehead] attempt {attempt} was lost{why}; "
            f"attempt {attempt + 1} follows\n").encode()
