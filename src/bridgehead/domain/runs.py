"""Workflow runs: the durable state of one execution of a workflow, and how it advances.

A run holds one **task** per step, or one per item of a ``foreach`` step. The runner never
waits on anything: each time something happens to a run (it was created, one of its jobs
ended, a retry came due, a user cancelled or retried it) it loads the run's tasks and calls
:func:`plan`, a pure function from the stored state to the changes to make. The store applies
a plan in one transaction guarded by the run's ``version`` (compare-and-set), together with
the jobs it submits, so a plan is applied once or not at all: after a crash the next plan is
computed again from what was committed, and no task's job is submitted twice.

Task lifecycle::

    waiting -> queued -> succeeded
       |         |-> retry_wait -> queued (the next attempt)
       |         |-> failed | cancelled
       +-> skipped (a step it needs did not succeed) | cancelled (the run was cancelled)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from bridgehead.domain.arrays import element_id, fanout_array
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import JobSpec, JobState, new_job_id
from bridgehead.domain.workflows import Item, WorkflowSpec, step_job_spec
from bridgehead.errors import InvalidSpec


class RunState(StrEnum):
    RUNNING = "running"
    """Some task is not finished."""
    SUCCEEDED = "succeeded"
    """Every task succeeded."""
    FAILED = "failed"
    """Every task is finished and one failed, was skipped or its job was cancelled."""
    CANCELLED = "cancelled"
    """A user cancelled the run: its live jobs were cancelled and nothing else started."""

    @property
    def terminal(self) -> bool:
        return self is not RunState.RUNNING


class TaskState(StrEnum):
    WAITING = "waiting"
    """A step it needs has not finished yet."""
    QUEUED = "queued"
    """Its job is submitted (``job_id``); the job's own state says where it is."""
    RETRY_WAIT = "retry_wait"
    """The last attempt failed; the next one is submitted at ``not_before``."""
    SUCCEEDED = "succeeded"
    """Its job succeeded."""
    FAILED = "failed"
    """Its last attempt failed (or timed out) and no retry is left."""
    SKIPPED = "skipped"
    """Not run: a step it needs failed, was skipped or was cancelled."""
    CANCELLED = "cancelled"
    """The run was cancelled, or a user cancelled its job."""

    @property
    def terminal(self) -> bool:
        return self in TASK_TERMINAL


TASK_TERMINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED}
)
RETRYABLE = frozenset({TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED})
"""Task states that ``retry --from-failed`` runs again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEnd:
    """What the runner needs to know of a task's job (joined from the jobs table)."""

    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    run_id: str
    step: str
    index: int = 0
    item: Item | None = None
    state: TaskState = TaskState.WAITING
    attempt: int = 0
    """Attempts made since the run (or its last retry) started this task."""
    tries: int = 0
    """Jobs ever submitted for this task: the last part of their idempotency keys."""
    job_id: str | None = None
    not_before: float | None = None
    deadline: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    ready_at: float | None = None
    """When its last needed step ended (the run's creation for a first step)."""
    started_at: float | None = None
    finished_at: float | None = None
    job: JobEnd | None = None
    """The state of ``job_id`` when the task was loaded (not stored with the task)."""

    @property
    def key(self) -> tuple[str, int]:
        return self.step, self.index


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: str
    workflow: str
    spec_text: str
    filename: str = "workflow.yaml"
    params: dict[str, Any] = field(default_factory=dict)
    tenant: str = "default"
    state: RunState = RunState.RUNNING
    version: int = 1
    cancel_requested: bool = False
    idempotency_key: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    idle: tuple[tuple[float, float], ...] = ()
    """The spans it sat failed or cancelled before a retry, as (ended, retried): not part of
    its runtime. Read by the store from its events (:func:`idle_spans`)."""


@dataclass(slots=True, kw_only=True)
class Plan:
    """The changes one look at a run decided; the store applies them all or none."""

    tasks: list[Task] = field(default_factory=list)
    """Tasks whose stored fields change (their new values)."""
    jobs: list[tuple[str, JobSpec]] = field(default_factory=list)
    """(job id, spec) of the jobs to submit, each already recorded on its task."""
    cancel_jobs: list[str] = field(default_factory=list)
    """Live jobs to cancel (the run was cancelled, or an attempt ran past its timeout)."""
    state: RunState | None = None
    """The run's new state, when it changes."""
    events: list[Event] = field(default_factory=list)
    wake_at: float | None = None
    """The next time the run needs a look without any event (a retry or a timeout)."""

    @property
    def writes(self) -> bool:
        return bool(self.tasks or self.jobs or self.state is not None)


Router = Callable[[JobSpec], JobSpec]
"""Choose a cluster for a spec routed by labels; raises InvalidSpec when none fits."""
RunsArrays = Callable[[str], bool]
"""Whether a cluster runs job arrays (its agents' backend does)."""


def new_run_id() -> str:
    """``r-`` and a job-style id: runs made by one process sort by creation, even within a
    millisecond (``list_runs`` is newest first by id), then 40 random bits."""
    return f"r-{new_job_id()}"


def expand(spec: WorkflowSpec, run_id: str, params: Mapping[str, Any]) -> list[Task]:
    """A new run's tasks: one per step, one per item of a ``foreach`` step, in step order."""
    tasks: list[Task] = []
    for step in spec.steps:
        if step.foreach is None:
            tasks.append(Task(run_id=run_id, step=step.id))
            continue
        items = step.foreach.items(params)
        tasks.extend(Task(run_id=run_id, step=step.id, index=i, item=item)
                     for i, item in enumerate(items))
    return tasks


def plan(spec: WorkflowSpec, run: Run, tasks: Sequence[Task], *, now: float,
         router: Router | None = None, arrays: RunsArrays | None = None) -> Plan:
    """What to change in ``run`` now, from its tasks as stored (with their jobs' states).
    With ``arrays``, a fan-out starting on a cluster that runs job arrays is one array job
    (:func:`_submit_array`)."""
    if run.state.terminal:
        return Plan()
    out = Plan()
    current = {t.key: t for t in tasks}

    def change(task: Task, **updates: Any) -> Task:
        new = replace(task, **updates)
        current[task.key] = new
        out.tasks.append(new)
        if new.state is not task.state:
            out.events.append(task_event(run, new))
        return new

    for task in tasks:
        if task.state is TaskState.QUEUED:
            _on_job(spec, run, task, now, change, out)
    for task in list(current.values()):
        if run.cancel_requested and task.state in (TaskState.WAITING, TaskState.RETRY_WAIT):
            change(task, state=TaskState.CANCELLED, reason="the run was cancelled",
                   finished_at=now, not_before=None)
    if not run.cancel_requested:
        _start_ready(spec, run, current, now, change, out, router, arrays)
    _finish(run, current, now, out)
    return out


def _on_job(spec: WorkflowSpec, run: Run, task: Task, now: float,
            change: Callable[..., Task], out: Plan) -> None:
    """A queued task: its job ended -> settle it; still live -> cancel it if due."""
    job = task.job
    if job is None or not job.state.terminal:
        if task.job_id and (run.cancel_requested or (task.deadline and task.deadline <= now)):
            out.cancel_jobs.append(task.job_id)
        elif task.deadline is not None:
            out.wake_at = _earliest(out.wake_at, task.deadline)
        return
    ended = job.finished_at or now
    common = {"exit_code": job.exit_code, "started_at": job.started_at, "finished_at": ended}
    if job.state is JobState.SUCCEEDED:
        change(task, state=TaskState.SUCCEEDED, reason=None, **common)
        return
    timed_out = (job.state is JobState.CANCELLED and task.deadline is not None
                 and task.deadline <= ended and not run.cancel_requested)
    if job.state is JobState.CANCELLED and not timed_out:
        change(task, state=TaskState.CANCELLED, reason=job.reason or "cancelled", **common)
        return
    step = spec.step(task.step)
    reason = (f"timed out after {step.timeout_s}s" if timed_out
              else job.reason or f"job {job.state.value}")
    if task.attempt <= step.retries.count and not run.cancel_requested:
        due = ended + step.retries.delay(task.attempt)
        change(task, state=TaskState.RETRY_WAIT, not_before=due, reason=reason, **common)
    else:
        change(task, state=TaskState.FAILED, reason=reason, **common)


def _start_ready(spec: WorkflowSpec, run: Run, current: dict[tuple[str, int], Task],
                 now: float, change: Callable[..., Task], out: Plan,
                 router: Router | None, arrays: RunsArrays | None = None) -> None:
    """Skip or start the waiting tasks whose needs are settled, submit the retries due.

    Steps are visited in topological order and each need is judged on the tasks as this plan
    has left them, so a skip cascades down a chain in one plan. A step without tasks (an
    empty fan-out) succeeds once its own needs have, and blocks when one of them is blocked."""
    keys: dict[str, list[tuple[str, int]]] = {}
    for key in current:
        keys.setdefault(key[0], []).append(key)
    done_at: dict[str, float] = {}  # steps that succeeded: when their last task ended
    blocked: set[str] = set()  # steps that cannot succeed (a task failed, skipped, cancelled)
    for step in map(spec.step, spec.topological_order()):
        blocker = next((need for need in step.needs if need in blocked), None)
        ready = all(need in done_at for need in step.needs)
        starting = [current[key] for key in keys.get(step.id, ())
                    if current[key].state is TaskState.WAITING]
        if arrays is not None and step.foreach is not None and step.array and ready and (
                blocker is None and len(starting) > 1):
            ready_at = max((done_at[need] for need in step.needs), default=run.created_at)
            _submit_array(spec, run, starting, now, change, out, router, arrays,
                          ready_at=ready_at)
        for key in keys.get(step.id, ()):
            task = current[key]
            if task.state is TaskState.WAITING and blocker is not None:
                change(task, state=TaskState.SKIPPED, finished_at=now,
                       reason=f"needs {blocker!r}, which did not succeed")
            elif task.state is TaskState.WAITING and ready:
                ready_at = max((done_at[need] for need in step.needs), default=run.created_at)
                _submit(spec, run, task, now, change, out, router, ready_at=ready_at)
            elif task.state is TaskState.RETRY_WAIT:
                if task.not_before is not None and task.not_before > now:
                    out.wake_at = _earliest(out.wake_at, task.not_before)
                else:
                    _submit(spec, run, task, now, change, out, router)
        mine = [current[key] for key in keys.get(step.id, ())]
        if any(t.state in RETRYABLE for t in mine) or (not mine and blocker is not None):
            blocked.add(step.id)
        elif mine and all(t.state is TaskState.SUCCEEDED for t in mine):
            done_at[step.id] = max(t.finished_at or now for t in mine)
        elif not mine and ready:
            done_at[step.id] = max((done_at[need] for need in step.needs),
                                   default=run.created_at)


def _submit(spec: WorkflowSpec, run: Run, task: Task, now: float,
            change: Callable[..., Task], out: Plan, router: Router | None,
            **also: Any) -> None:
    """Submit the task's next try (one change of the task, with ``also``)."""
    step = spec.step(task.step)
    try:
        job_spec = job_spec_for(spec, run, task)
        if router is not None and not job_spec.cluster:
            job_spec = router(job_spec)
    except InvalidSpec as exc:
        change(task, state=TaskState.FAILED, reason=f"cannot submit: {exc.message}",
               finished_at=now, **also)
        return
    job_id = new_job_id()
    deadline = now + step.timeout_s if step.timeout_s else None
    change(task, state=TaskState.QUEUED, job_id=job_id, attempt=task.attempt + 1,
           tries=task.tries + 1, not_before=None, deadline=deadline, exit_code=None,
           started_at=None, finished_at=None, **also)
    out.jobs.append((job_id, job_spec))
    if deadline is not None:
        out.wake_at = _earliest(out.wake_at, deadline)


def _submit_array(spec: WorkflowSpec, run: Run, tasks: list[Task], now: float,
                  change: Callable[..., Task], out: Plan, router: Router | None,
                  arrays: RunsArrays, **also: Any) -> None:
    """Submit ``tasks`` (the waiting items of one fan-out) as ONE array job whose element
    ``<index>`` is task ``index``'s job, when their cluster runs arrays and their jobs differ
    only by the item (argv and env: :func:`bridgehead.domain.arrays.fanout_array`); else
    leave them waiting for one job each. A retry is a job of its own."""
    try:
        specs = [job_spec_for(spec, run, task) for task in tasks]
        if router is not None and not specs[0].cluster:
            cluster = router(specs[0]).cluster
            specs = [replace(s, cluster=cluster) for s in specs]
    except InvalidSpec:
        return  # each task's own submission says why
    if not arrays(specs[0].cluster):
        return
    joined = fanout_array(specs, [task.index for task in tasks])
    if joined is None:
        return
    step = spec.step(tasks[0].step)
    tries = max(task.tries for task in tasks) + 1
    parent_id = new_job_id()
    deadline = now + step.timeout_s if step.timeout_s else None
    for task in tasks:
        change(task, state=TaskState.QUEUED, job_id=element_id(parent_id, task.index),
               attempt=task.attempt + 1, tries=task.tries + 1, not_before=None,
               deadline=deadline, exit_code=None, started_at=None, finished_at=None, **also)
    out.jobs.append((parent_id, replace(
        joined, idempotency_key=f"wf:{run.id}:{step.id}:array:{tries}")))
    if deadline is not None:
        out.wake_at = _earliest(out.wake_at, deadline)


def job_spec_for(spec: WorkflowSpec, run: Run, task: Task) -> JobSpec:
    """The job of the task's next try: keyed ``wf:<run>:<step>:<index>:<try>`` (so a plan
    applied twice could not submit it twice either) and labelled with the run."""
    return step_job_spec(
        spec, spec.step(task.step), run.params, task.item, tenant=run.tenant,
        idempotency_key=f"wf:{run.id}:{task.step}:{task.index}:{task.tries + 1}",
        labels={"run": run.id})


def _finish(run: Run, current: dict[tuple[str, int], Task], now: float, out: Plan) -> None:
    states = {t.state for t in current.values()}
    if not states <= TASK_TERMINAL:
        return
    if run.cancel_requested:
        out.state = RunState.CANCELLED
    elif states <= {TaskState.SUCCEEDED}:
        out.state = RunState.SUCCEEDED
    else:
        out.state = RunState.FAILED
    out.wake_at = None
    out.events.append(run_event(replace(run, state=out.state, finished_at=now)))


def retry_tasks(tasks: Sequence[Task]) -> list[Task]:
    """``retry --from-failed``: the failed, skipped and cancelled tasks, waiting again with
    a fresh retry budget (their ``tries`` go on counting, so their jobs get new keys)."""
    return [replace(t, state=TaskState.WAITING, attempt=0, job_id=None, not_before=None,
                    deadline=None, exit_code=None, reason=None, ready_at=None,
                    started_at=None, finished_at=None, job=None)
            for t in tasks if t.state in RETRYABLE]


def run_event(run: Run, kind: str | None = None) -> Event:
    """``bridgehead.workflow.<started|succeeded|failed|cancelled|cancelling|retried>``."""
    return Event(type=f"bridgehead.workflow.{kind or run.state.value}", subject=f"runs/{run.id}",
                 data={"run_id": run.id, "workflow": run.workflow, "state": run.state.value,
                       "tenant": run.tenant, "params": run.params}, tenant=run.tenant)


def task_event(run: Run, task: Task) -> Event:
    """``bridgehead.workflow.task.<state>`` for one task of ``run``."""
    data: dict[str, Any] = {
        "run_id": run.id, "workflow": run.workflow, "step": task.step, "index": task.index,
        "state": task.state.value, "attempt": task.attempt, "job_id": task.job_id,
    }
    if task.item is not None:
        data["item"] = task.item
    if task.reason:
        data["reason"] = task.reason
    return Event(type=f"bridgehead.workflow.task.{task.state.value}",
                 subject=f"runs/{run.id}/{task.step}/{task.index}", data=data,
                 tenant=run.tenant)


RETRIED_EVENT = "bridgehead.workflow.retried"
PERIOD_EVENTS = (*(f"bridgehead.workflow.{s.value}" for s in RunState if s.terminal),
                 RETRIED_EVENT)
"""The run events that end a run's active period (its end states), or start one again."""


def idle_spans(marks: Sequence[tuple[str, float]]) -> tuple[tuple[float, float], ...]:
    """A run's :attr:`Run.idle` from its :data:`PERIOD_EVENTS` as (type, time), in log
    order: from each end to the retry that followed it."""
    spans: list[tuple[float, float]] = []
    ended: float | None = None
    for kind, at in marks:
        if kind != RETRIED_EVENT:
            ended = at
        elif ended is not None:
            spans.append((ended, at))
            ended = None
    return tuple(spans)


def active_seconds(start: float, end: float, idle: Sequence[tuple[float, float]]) -> float:
    """The seconds from ``start`` to ``end`` less those of the ``idle`` spans within them."""
    return end - start - sum(max(0.0, min(end, b) - max(start, a)) for a, b in idle)


def runtime(run: Run, now: float) -> float:
    """Seconds the run has been running: from its creation to its end (``now`` while it
    runs), less the time it sat failed or cancelled before each retry."""
    return active_seconds(run.created_at, run.finished_at or now, run.idle)


Tally = Mapping[str, tuple[int, float | None, float | None]]
"""A step's tasks by state: (how many, their first start, their last end)."""


def tally(tasks: Sequence[Task]) -> dict[str, dict[str, tuple[int, float | None, float | None]]]:
    """Per step, its tasks by state (:data:`Tally`): what :func:`step_summary` needs of them,
    which a store can also count without loading every task (a wide fan-out's page)."""
    out: dict[str, dict[str, tuple[int, float | None, float | None]]] = {}
    for t in tasks:
        n, start, end = out.setdefault(t.step, {}).get(t.state.value, (0, None, None))
        if t.started_at:
            start = t.started_at if start is None else min(start, t.started_at)
        if t.finished_at:
            end = t.finished_at if end is None else max(end, t.finished_at)
        out[t.step][t.state.value] = (n + 1, start, end)
    return out


def step_summary(spec: WorkflowSpec, tasks: Sequence[Task],
                 idle: Sequence[tuple[float, float]] = ()) -> list[dict[str, Any]]:
    """:func:`summarize` of ``tasks``."""
    return summarize(spec, tally(tasks), idle)


def summarize(spec: WorkflowSpec, tallies: Mapping[str, Tally],
              idle: Sequence[tuple[float, float]] = ()) -> list[dict[str, Any]]:
    """Per step, in file order: its state (the least advanced of its tasks'; for an empty
    fan-out, that of the steps it needs), counts and times, from each step's :data:`Tally`.
    Its ``duration_s`` runs from its first task's start to its last one's end, less the
    run's ``idle`` spans (a retried run's wait for the user) within them."""
    out = []
    state_of: dict[str, str] = {}
    for step in map(spec.step, spec.topological_order()):
        mine = tallies.get(step.id, {})
        states = {TaskState(state) for state in mine}
        state_of[step.id] = _step_state(states) if mine else _empty_state(
            [state_of[need] for need in step.needs])
        starts = [start for _, start, _ in mine.values() if start]
        ends = [end for _, _, end in mine.values() if end]
        done = all(state.terminal for state in states)
        started, finished = min(starts, default=None), max(ends, default=None) if done else None
        out.append({
            "id": step.id, "needs": list(step.needs), "state": state_of[step.id],
            "total": sum(n for n, _, _ in mine.values()),
            "counts": {state: n for state, (n, _, _) in mine.items()},
            "started_at": started, "finished_at": finished,
            "duration_s": active_seconds(started, finished, idle)
            if started and finished else None,
        })
    position = {step.id: i for i, step in enumerate(spec.steps)}
    return sorted(out, key=lambda summary: position[summary["id"]])


_STEP_ORDER = [TaskState.FAILED, TaskState.QUEUED, TaskState.RETRY_WAIT, TaskState.WAITING,
               TaskState.CANCELLED, TaskState.SKIPPED, TaskState.SUCCEEDED]


def _step_state(states: set[TaskState]) -> str:
    """A step's state: failed if any task failed; else live if any is; else the rest."""
    return next(s.value for s in _STEP_ORDER if s in states)


def _empty_state(needs: Sequence[str]) -> str:
    """An empty fan-out: skipped once a step it needs did not succeed, succeeded once they
    all did, waiting before."""
    if any(state in RETRYABLE for state in needs):
        return TaskState.SKIPPED.value
    if all(state == TaskState.SUCCEEDED for state in needs):
        return TaskState.SUCCEEDED.value
    return TaskState.WAITING.value


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
