"""The workflow-run planner: pure, driven by a fake clock and simulated job outcomes.

``Sim`` plays the store and the agents: it keeps the run's tasks in a dict, applies each
plan's task changes to it, records the plan's jobs and, when told that a job ended, joins
that outcome onto the task (``Task.job``) the way ``run_tasks`` does.
"""

from __future__ import annotations

from dataclasses import replace
from textwrap import dedent
from typing import Any

import pytest

from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.runs import (
    PERIOD_EVENTS,
    RETRIED_EVENT,
    RETRYABLE,
    TASK_TERMINAL,
    JobEnd,
    Plan,
    Run,
    RunState,
    Task,
    TaskState,
    active_seconds,
    expand,
    idle_spans,
    new_run_id,
    plan,
    retry_tasks,
    runtime,
    step_summary,
)
from bridgehead.errors import InvalidSpec
from bridgehead.workflows import parse_workflow

T = 1_000.0
"""The fake clock's origin: times in these tests are ``T + seconds``."""
J = JobState
W = TaskState

DIAMOND = """\
name: diamond
defaults: {cluster: c1}
steps:
  - {id: a, command: [echo, a]}
  - {id: b, needs: [a], command: [echo, b]}
  - {id: c, needs: [a], command: [echo, c]}
  - {id: d, needs: [b, c], command: [echo, d]}
"""

CHAIN = """\
name: chain
defaults: {cluster: c1}
steps:
  - {id: a, command: [echo, a]}
  - {id: b, needs: [a], command: [echo, b]}
  - {id: c, needs: [b], command: [echo, c]}
"""


class Sim:
    """One run, its tasks as a store holds them, and the jobs its plans submitted."""

    def __init__(self, text: str, params: dict[str, Any] | None = None, *,
                 run_id: str = "r-1", tenant: str = "default") -> None:
        self.spec = parse_workflow(dedent(text), "w.yaml")
        resolved = self.spec.resolve_params(params)
        self.run = Run(id=run_id, workflow=self.spec.name, spec_text=text, params=resolved,
                       tenant=tenant, created_at=T, updated_at=T)
        self.tasks = {t.key: t for t in expand(self.spec, run_id, resolved)}
        self.ends: dict[str, JobEnd] = {}
        self.jobs: dict[str, JobSpec] = {}
        """Every job any plan submitted, by id, in submission order."""
        self.marks: list[tuple[str, float]] = []
        """(type, time) of the run's end and retry events, as the store reads them."""

    def loaded(self) -> list[Task]:
        """The tasks as ``run_tasks`` returns them: each with its job's state joined."""
        return [replace(t, job=self.ends.get(t.job_id) if t.job_id else None)
                for t in self.tasks.values()]

    def look(self, at: float, **kw: Any) -> Plan:
        """Plan at ``at`` and apply the plan like the store (tasks, jobs, run state)."""
        out = plan(self.spec, self.run, self.loaded(), now=at, **kw)
        for task in out.tasks:
            self.tasks[task.key] = replace(task, job=None)
        for job_id, spec in out.jobs:
            assert job_id not in self.jobs, "a job id was submitted twice"
            self.jobs[job_id] = spec
            self.ends[job_id] = JobEnd(state=J.QUEUED)
        if out.writes:
            self.run = replace(self.run, version=self.run.version + 1,
                               state=out.state or self.run.state,
                               finished_at=at if out.state else None)
        self.marks += [(e.type, at) for e in out.events if e.type in PERIOD_EVENTS]
        return out

    def retry(self, at: float) -> None:
        """``retry --from-failed`` at ``at``, as the store does it."""
        for task in retry_tasks(list(self.tasks.values())):
            self.tasks[task.key] = task
        self.marks.append((RETRIED_EVENT, at))
        self.run = replace(self.run, state=RunState.RUNNING, finished_at=None,
                           idle=idle_spans(self.marks))

    def end(self, step: str, index: int = 0, state: JobState = J.SUCCEEDED, *, at: float,
            reason: str | None = None) -> None:
        """The job of task (step, index) ended at ``at``."""
        task = self.tasks[step, index]
        assert task.state is W.QUEUED and task.job_id, task
        code = {J.SUCCEEDED: 0, J.FAILED: 1}.get(state)
        self.ends[task.job_id] = JobEnd(state=state, exit_code=code, reason=reason,
                                        started_at=at - 1, finished_at=at)

    def end_and_look(self, step: str, index: int = 0, state: JobState = J.SUCCEEDED, *,
                     at: float, reason: str | None = None) -> Plan:
        self.end(step, index, state, at=at, reason=reason)
        return self.look(at)

    def state(self, step: str, index: int = 0) -> TaskState:
        return self.tasks[step, index].state

    def states(self) -> dict[str, str]:
        return {f"{s}/{i}" if i else s: t.state.value for (s, i), t in self.tasks.items()}


def submitted(p: Plan) -> list[str]:
    """The steps (``step/index`` for a fan-out item) whose jobs the plan submits."""
    return [f"{s.labels['step']}/{s.idempotency_key.split(':')[3]}"  # type: ignore[union-attr]
            for _, s in p.jobs]


def event_types(p: Plan) -> list[str]:
    return [e.type.removeprefix("bridgehead.workflow.") for e in p.events]


# -- dependency order ------------------------------------------------------------------------
def test_a_diamond_runs_each_step_after_all_it_needs() -> None:
    sim = Sim(DIAMOND)
    first = sim.look(T)
    assert submitted(first) == ["a/0"]
    assert sim.states() == {"a": "queued", "b": "waiting", "c": "waiting", "d": "waiting"}
    assert first.state is None and sim.tasks["a", 0].ready_at == T

    second = sim.end_and_look("a", at=T + 5)
    assert submitted(second) == ["b/0", "c/0"]
    assert sim.tasks["b", 0].ready_at == T + 5

    third = sim.end_and_look("b", at=T + 7)
    assert third.jobs == [] and sim.state("d") is W.WAITING  # c still runs

    fourth = sim.end_and_look("c", at=T + 9)
    assert submitted(fourth) == ["d/0"]
    assert sim.tasks["d", 0].ready_at == T + 9  # the later of its needs' ends

    last = sim.end_and_look("d", at=T + 12)
    assert last.state is RunState.SUCCEEDED and last.jobs == [] and last.wake_at is None
    assert event_types(last)[-1] == "succeeded"
    assert len(sim.jobs) == 4


def test_roots_start_first_in_file_order() -> None:
    sim = Sim("""\
        name: roots
        defaults: {cluster: c1}
        steps:
          - {id: late, needs: [x], command: [echo]}
          - {id: x, command: [echo]}
          - {id: y, command: [echo]}
        """)
    assert submitted(sim.look(T)) == ["x/0", "y/0"]
    assert sim.state("late") is W.WAITING


def test_a_plan_with_nothing_new_writes_nothing() -> None:
    sim = Sim(DIAMOND)
    sim.look(T)
    again = sim.look(T + 1)  # a's job is still queued
    assert not again.writes and again.events == [] and again.jobs == []
    assert again.cancel_jobs == [] and again.wake_at is None


# -- fan-out -----------------------------------------------------------------------------
FANOUT = """\
name: fan
params: {bins: 3, sample: lyso}
defaults: {cluster: c1}
steps:
  - id: index
    foreach: {param: bins}
    command: [echo, "{{ params.sample }}-{{ item }}"]
  - {id: merge, needs: [index], command: [echo, merge]}
"""


def test_a_foreach_param_gives_one_task_per_item() -> None:
    sim = Sim(FANOUT)
    assert [(t.step, t.index, t.item) for t in sim.tasks.values()] == [
        ("index", 0, 0), ("index", 1, 1), ("index", 2, 2), ("merge", 0, None)]
    p = sim.look(T)
    assert submitted(p) == ["index/0", "index/1", "index/2"]
    assert [s.command for _, s in p.jobs] == [("echo", f"lyso-{i}") for i in range(3)]
    for i in range(2):
        assert sim.end_and_look("index", i, at=T + 1).jobs == []  # merge waits for all
    assert submitted(sim.end_and_look("index", 2, at=T + 2)) == ["merge/0"]


def test_run_params_override_the_fan_out_width() -> None:
    sim = Sim(FANOUT, {"bins": 5})
    assert [t.index for t in sim.tasks.values() if t.step == "index"] == [0, 1, 2, 3, 4]
    assert len(sim.look(T).jobs) == 5


def test_an_empty_fan_out_succeeds_at_once_and_its_dependents_start() -> None:
    sim = Sim(FANOUT, {"bins": 0})
    assert list(sim.tasks) == [("merge", 0)]
    p = sim.look(T)
    assert submitted(p) == ["merge/0"]
    assert sim.end_and_look("merge", at=T + 1).state is RunState.SUCCEEDED


EMPTY_IN_THE_MIDDLE = """\
name: middle
params: {n: 0}
defaults: {cluster: c1}
steps:
  - {id: a, command: [echo, a]}
  - {id: fan, needs: [a], foreach: {param: n}, command: [echo, "{{ item }}"]}
  - {id: c, needs: [fan], command: [echo, c]}
"""


def test_an_empty_fan_out_still_waits_for_the_steps_it_needs() -> None:
    sim = Sim(EMPTY_IN_THE_MIDDLE)
    assert submitted(sim.look(T)) == ["a/0"]  # c may not jump ahead of a through fan
    assert sim.state("c") is W.WAITING
    assert submitted(sim.end_and_look("a", at=T + 3)) == ["c/0"]
    assert sim.tasks["c", 0].ready_at == T + 3


def test_an_empty_fan_out_after_a_failure_skips_its_dependents() -> None:
    sim = Sim(EMPTY_IN_THE_MIDDLE)
    sim.look(T)
    p = sim.end_and_look("a", state=J.FAILED, at=T + 3)
    assert p.jobs == [] and sim.states() == {"a": "failed", "c": "skipped"}
    assert p.state is RunState.FAILED


def test_a_list_param_fans_out_over_its_items() -> None:
    sim = Sim("""\
        name: samples
        params: {samples: [lyso, thau]}
        defaults: {cluster: c1}
        steps:
          - {id: s, foreach: {param: samples}, command: [run, "{{ item }}"],
             env: {SAMPLE: "{{ item }}"}}
        """, {"samples": ["x", "y z", "$(rm -rf /)"]})
    p = sim.look(T)
    assert [t.item for t in sim.tasks.values()] == ["x", "y z", "$(rm -rf /)"]
    assert [s.command for _, s in p.jobs] == [("run", "x"), ("run", "y z"), ("run", "$(rm -rf /)")]
    assert [s.env for _, s in p.jobs] == [{"SAMPLE": i} for i in ("x", "y z", "$(rm -rf /)")]


# -- job specs -----------------------------------------------------------------------------
def test_job_specs_are_keyed_labelled_and_rendered() -> None:
    sim = Sim(FANOUT, {"bins": 2}, run_id="r-abc", tenant="team1")
    p = sim.look(T)
    (id0, job0), (id1, job1) = p.jobs
    assert [sim.tasks["index", i].job_id for i in (0, 1)] == [id0, id1]
    assert job0.idempotency_key == "wf:r-abc:index:0:1"
    assert job1.idempotency_key == "wf:r-abc:index:1:1"
    assert job0.labels == {"run": "r-abc", "workflow": "fan", "step": "index"}
    assert job0.tenant == "team1" and job0.cluster == "c1" and job0.name == "fan.index"
    assert job1.command == ("echo", "lyso-1")
    task = sim.tasks["index", 1]
    assert (task.state, task.attempt, task.tries, task.deadline) == (W.QUEUED, 1, 1, None)


# -- failure -------------------------------------------------------------------------------
def test_a_failure_skips_its_dependents_transitively_and_fails_the_run() -> None:
    sim = Sim(CHAIN)
    sim.look(T)
    p = sim.end_and_look("a", state=J.FAILED, at=T + 4, reason="exit code 1")
    assert sim.states() == {"a": "failed", "b": "skipped", "c": "skipped"}
    assert p.jobs == [] and p.state is RunState.FAILED
    a, b, c = (sim.tasks[s, 0] for s in "abc")
    assert (a.reason, a.exit_code, a.finished_at) == ("exit code 1", 1, T + 4)
    assert b.reason == "needs 'a', which did not succeed"
    assert c.reason == "needs 'b', which did not succeed"
    assert event_types(p) == ["task.failed", "task.skipped", "task.skipped", "failed"]


def test_an_independent_branch_still_runs_after_a_failure() -> None:
    sim = Sim(CHAIN.replace("steps:\n", "steps:\n  - {id: lone, command: [echo]}\n"))
    assert submitted(sim.look(T)) == ["lone/0", "a/0"]
    p = sim.end_and_look("a", state=J.FAILED, at=T + 1)
    assert p.state is None and sim.state("lone") is W.QUEUED
    assert sim.state("b") is W.SKIPPED and sim.state("c") is W.SKIPPED
    done = sim.end_and_look("lone", at=T + 2)
    assert sim.state("lone") is W.SUCCEEDED and done.state is RunState.FAILED


@pytest.mark.parametrize("state", [J.FAILED, J.TIMED_OUT, J.LOST])
def test_every_unsuccessful_end_fails_the_task(state: JobState) -> None:
    sim = Sim(CHAIN)
    sim.look(T)
    sim.end_and_look("a", state=state, at=T + 1)
    assert sim.state("a") is W.FAILED
    assert sim.tasks["a", 0].reason == f"job {state.value}"


# -- retries -------------------------------------------------------------------------------
RETRIED = """\
name: retried
defaults: {cluster: c1}
steps:
  - {id: a, command: [flaky], retries: {count: 2, backoff: 10s}}
  - {id: b, needs: [a], command: [echo]}
"""


def test_retries_wait_for_their_backoff_then_submit_a_new_try() -> None:
    sim = Sim(RETRIED)
    first_id = sim.look(T).jobs[0][0]

    failed = sim.end_and_look("a", state=J.FAILED, at=T)
    a = sim.tasks["a", 0]
    assert (a.state, a.not_before, a.attempt, a.tries) == (W.RETRY_WAIT, T + 10, 1, 1)
    assert failed.wake_at == T + 10 and failed.jobs == [] and failed.state is None
    assert event_types(failed) == ["task.retry_wait"]

    early = sim.look(T + 5)
    assert early.jobs == [] and not early.writes and early.wake_at == T + 10

    second = sim.look(T + 10)
    [(second_id, spec)] = second.jobs
    assert second_id != first_id and spec.idempotency_key == "wf:r-1:a:0:2"
    a = sim.tasks["a", 0]
    assert (a.state, a.attempt, a.tries, a.job_id, a.not_before) == (
        W.QUEUED, 2, 2, second_id, None)

    sim.end_and_look("a", state=J.FAILED, at=T + 11)
    assert sim.tasks["a", 0].not_before == T + 11 + 20  # the backoff doubles
    third = sim.look(T + 31)
    assert third.jobs[0][1].idempotency_key == "wf:r-1:a:0:3"
    assert sim.tasks["a", 0].attempt == 3

    last = sim.end_and_look("a", state=J.FAILED, at=T + 40)
    assert sim.states() == {"a": "failed", "b": "skipped"}
    assert last.state is RunState.FAILED and last.wake_at is None
    assert len(sim.jobs) == 3


def test_a_retry_that_succeeds_lets_the_run_go_on() -> None:
    sim = Sim(RETRIED)
    sim.look(T)
    sim.end_and_look("a", state=J.FAILED, at=T)
    sim.look(T + 10)
    p = sim.end_and_look("a", at=T + 12)
    assert sim.state("a") is W.SUCCEEDED and submitted(p) == ["b/0"]


def test_a_zero_backoff_retry_is_submitted_in_the_same_plan() -> None:
    sim = Sim(RETRIED.replace("backoff: 10s", "backoff: 0"))
    sim.look(T)
    p = sim.end_and_look("a", state=J.FAILED, at=T + 1)
    assert [s.idempotency_key for _, s in p.jobs] == ["wf:r-1:a:0:2"]
    assert sim.tasks["a", 0].attempt == 2


# -- timeouts ------------------------------------------------------------------------------
TIMED = """\
name: timed
defaults: {cluster: c1}
steps:
  - {id: a, command: [sleep, "99"], timeout: 30, retries: RETRIES}
  - {id: b, needs: [a], command: [echo]}
"""


def test_a_step_past_its_timeout_has_its_job_cancelled_then_retried() -> None:
    sim = Sim(TIMED.replace("RETRIES", "{count: 1, backoff: 5s}"))
    first = sim.look(T)
    job_id = first.jobs[0][0]
    assert sim.tasks["a", 0].deadline == T + 30 and first.wake_at == T + 30

    before = sim.look(T + 29)
    assert before.cancel_jobs == [] and before.wake_at == T + 30
    due = sim.look(T + 30)
    assert due.cancel_jobs == [job_id] and not due.writes
    assert sim.look(T + 31).cancel_jobs == [job_id]  # asked again until it ends

    p = sim.end_and_look("a", state=J.CANCELLED, at=T + 32, reason="cancelled by user")
    a = sim.tasks["a", 0]
    assert (a.state, a.reason, a.not_before) == (W.RETRY_WAIT, "timed out after 30s", T + 37)
    assert p.wake_at == T + 37
    retry = sim.look(T + 37)
    assert retry.jobs[0][1].idempotency_key == "wf:r-1:a:0:2"
    assert sim.tasks["a", 0].deadline == T + 37 + 30


def test_a_timed_out_step_without_retries_fails() -> None:
    sim = Sim(TIMED.replace("RETRIES", "0"))
    sim.look(T)
    p = sim.end_and_look("a", state=J.CANCELLED, at=T + 30)
    assert sim.states() == {"a": "failed", "b": "skipped"}
    assert sim.tasks["a", 0].reason == "timed out after 30s" and p.state is RunState.FAILED


def test_a_user_cancelled_job_cancels_its_task_and_fails_the_run() -> None:
    sim = Sim(TIMED.replace("RETRIES", "{count: 3}"))
    sim.look(T)
    p = sim.end_and_look("a", state=J.CANCELLED, at=T + 5, reason="cancelled by user")
    assert sim.states() == {"a": "cancelled", "b": "skipped"}  # no retry for a user's cancel
    assert sim.tasks["a", 0].reason == "cancelled by user"
    assert p.state is RunState.FAILED and p.jobs == []


# -- cancelling a run ----------------------------------------------------------------------
CANCELLABLE = """\
name: cancellable
defaults: {cluster: c1}
steps:
  - {id: a, command: [echo]}
  - {id: flaky, command: [echo], retries: {count: 3, backoff: 60s}}
  - {id: slow, command: [echo], timeout: 10}
  - {id: after, needs: [a], command: [echo]}
"""


def test_cancelling_a_run_cancels_waiting_tasks_then_its_live_jobs() -> None:
    sim = Sim(CANCELLABLE)
    sim.look(T)
    sim.end_and_look("flaky", state=J.FAILED, at=T + 1)
    assert sim.state("flaky") is W.RETRY_WAIT
    live = [sim.tasks[s, 0].job_id for s in ("a", "slow")]

    sim.run = replace(sim.run, cancel_requested=True)
    p = sim.look(T + 20)  # past slow's deadline, too: still a cancel, not a timeout
    assert sorted(p.cancel_jobs) == sorted(live)  # type: ignore[type-var]
    assert p.jobs == [] and p.state is None
    assert sim.states() == {"a": "queued", "flaky": "cancelled", "slow": "queued",
                            "after": "cancelled"}
    assert sim.tasks["after", 0].reason == "the run was cancelled"
    assert sim.tasks["flaky", 0].not_before is None

    sim.end("a", state=J.CANCELLED, at=T + 21)
    sim.end("slow", state=J.CANCELLED, at=T + 22)
    done = sim.look(T + 22)
    assert sim.states() == {"a": "cancelled", "flaky": "cancelled", "slow": "cancelled",
                            "after": "cancelled"}
    assert done.state is RunState.CANCELLED and done.jobs == []
    assert event_types(done)[-1] == "cancelled"
    assert done.events[-1].data["state"] == "cancelled"


def test_a_job_that_fails_while_the_run_is_cancelled_is_not_retried() -> None:
    sim = Sim(CANCELLABLE)
    sim.look(T)
    sim.run = replace(sim.run, cancel_requested=True)
    for step in ("a", "slow"):
        sim.end(step, state=J.CANCELLED, at=T + 1)
    sim.end("flaky", state=J.FAILED, at=T + 1)
    p = sim.look(T + 1)
    assert sim.state("flaky") is W.FAILED and p.jobs == [] and p.wake_at is None
    assert p.state is RunState.CANCELLED


# -- retry --from-failed --------------------------------------------------------------------
def test_retry_tasks_resets_only_the_unsuccessful() -> None:
    base = {"run_id": "r-1", "attempt": 2, "tries": 3, "job_id": "j", "reason": "x",
            "exit_code": 1, "not_before": T, "deadline": T, "started_at": T, "finished_at": T,
            "ready_at": T, "job": JobEnd(state=J.FAILED)}
    tasks = [Task(step=s.value, state=s, **base) for s in TaskState]  # type: ignore[arg-type]
    again = retry_tasks(tasks)
    assert [t.step for t in again] == [s.value for s in TaskState if s in RETRYABLE]
    assert {t.step for t in again} == {"failed", "skipped", "cancelled"}
    for t in again:
        assert (t.state, t.attempt, t.tries) == (W.WAITING, 0, 3)
        assert (t.job_id, t.reason, t.exit_code, t.not_before, t.deadline, t.job) == (
            None, None, None, None, None, None)
        assert (t.ready_at, t.started_at, t.finished_at) == (None, None, None)


def test_a_retried_run_submits_new_tries_with_a_fresh_budget() -> None:
    sim = Sim(RETRIED.replace("count: 2", "count: 1"))
    sim.look(T)
    sim.end_and_look("a", state=J.FAILED, at=T)
    sim.look(T + 10)
    sim.end_and_look("a", state=J.FAILED, at=T + 11)
    assert sim.run.state is RunState.FAILED
    assert sim.look(T + 12) == Plan()  # a finished run plans nothing

    sim.retry(T + 20)
    p = sim.look(T + 20)
    assert [s.idempotency_key for _, s in p.jobs] == ["wf:r-1:a:0:3"]
    a = sim.tasks["a", 0]
    assert (a.attempt, a.tries) == (1, 3)
    sim.end_and_look("a", state=J.FAILED, at=T + 21)
    assert sim.state("a") is W.RETRY_WAIT  # the retry budget is whole again


# -- routing -------------------------------------------------------------------------------
ROUTED = """\
name: routed
steps:
  - {id: local, cluster: c1, command: [echo]}
  - {id: far, cluster_labels: {site: hpc}, command: [echo]}
  - {id: after, needs: [far], cluster: c1, command: [echo]}
"""


def test_a_routed_step_gets_its_cluster_from_the_router() -> None:
    seen: list[JobSpec] = []

    def router(job: JobSpec) -> JobSpec:
        seen.append(job)
        return replace(job, cluster="hpc-1")

    sim = Sim(ROUTED)
    p = sim.look(T, router=router)
    assert [s.cluster for _, s in p.jobs] == ["c1", "hpc-1"]
    assert [(j.cluster, j.cluster_labels) for j in seen] == [("", {"site": "hpc"})]
    assert p.jobs[1][1].idempotency_key == "wf:r-1:far:0:1"


def test_a_router_refusal_fails_only_that_task() -> None:
    def router(job: JobSpec) -> JobSpec:
        raise InvalidSpec("no cluster has the labels site=hpc")

    sim = Sim(ROUTED)
    p = sim.look(T, router=router)
    assert submitted(p) == ["local/0"]
    far = sim.tasks["far", 0]
    assert (far.state, far.reason, far.job_id, far.tries) == (
        W.FAILED, "cannot submit: no cluster has the labels site=hpc", None, 0)
    assert sim.state("local") is W.QUEUED and sim.state("after") is W.SKIPPED
    assert p.state is None
    assert sim.end_and_look("local", at=T + 1).state is RunState.FAILED


# -- finished runs, summaries, events ------------------------------------------------------
@pytest.mark.parametrize("state", [RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED])
def test_a_finished_run_plans_nothing(state: RunState) -> None:
    sim = Sim(DIAMOND)
    sim.run = replace(sim.run, state=state, cancel_requested=True)
    assert sim.look(T) == Plan()


def test_step_summary_gives_states_counts_and_times() -> None:
    sim = Sim(FANOUT.replace("id: merge, needs: [index]", "id: merge, needs: [index, none]")
              .replace("steps:\n", "steps:\n  - {id: none, foreach: {param: zero}, "
                                   "command: [echo, '{{ item }}']}\n")
              .replace("params: {", "params: {zero: 0, "))
    sim.look(T)
    sim.end_and_look("index", 0, at=T + 4)
    sim.end_and_look("index", 1, J.FAILED, at=T + 6)
    none, index, merge = step_summary(sim.spec, list(sim.tasks.values()))
    assert none == {"id": "none", "needs": [], "state": "succeeded", "total": 0, "counts": {},
                    "started_at": None, "finished_at": None, "duration_s": None}
    assert index["state"] == "failed" and index["total"] == 3
    assert index["counts"] == {"succeeded": 1, "failed": 1, "queued": 1}
    assert index["started_at"] == T + 3 and index["finished_at"] is None  # one still runs
    assert merge["state"] == "skipped" and merge["needs"] == ["index", "none"]

    sim.end_and_look("index", 2, at=T + 9)
    index = step_summary(sim.spec, list(sim.tasks.values()))[1]
    assert (index["finished_at"], index["duration_s"]) == (T + 9, 6)


def test_step_states_rank_live_before_finished() -> None:
    sim = Sim(FANOUT)
    sim.look(T)
    sim.end_and_look("index", 0, at=T + 1)
    index, merge = step_summary(sim.spec, list(sim.tasks.values()))
    assert (index["state"], merge["state"]) == ("queued", "waiting")


def test_events_tell_each_task_change_and_the_run_end() -> None:
    sim = Sim(FANOUT, {"bins": 2}, run_id="r-ev")
    p = sim.look(T)
    assert event_types(p) == ["task.queued", "task.queued"]
    e = p.events[1]
    assert e.subject == "runs/r-ev/index/1"
    assert e.data == {"run_id": "r-ev", "workflow": "fan", "step": "index", "index": 1,
                      "state": "queued", "attempt": 1, "job_id": sim.tasks["index", 1].job_id,
                      "item": 1}
    sim.end_and_look("index", 0, at=T + 1)
    p = sim.end_and_look("index", 1, at=T + 2)
    assert event_types(p) == ["task.succeeded", "task.queued"]
    last = sim.end_and_look("merge", at=T + 3)
    assert event_types(last) == ["task.succeeded", "succeeded"]
    assert last.events[-1].subject == "runs/r-ev"
    assert last.events[-1].data["state"] == "succeeded"
    assert last.events[-1].data["params"] == {"bins": 2, "sample": "lyso"}
    assert all(t.state in TASK_TERMINAL for t in sim.tasks.values())


def test_run_ids_sort_by_creation_even_within_a_second() -> None:
    ids = [new_run_id() for _ in range(2000)]  # list_runs is newest first by id
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.startswith("r-") for i in ids)


def test_an_empty_fan_out_takes_its_state_from_the_steps_it_needs() -> None:
    text = ("name: empty\nparams: {zero: 0}\ndefaults: {cluster: c1}\nsteps:\n"
            "  - {id: a, command: [echo, a]}\n"
            "  - {id: none, needs: [a], foreach: {param: zero}, command: [echo, x]}\n"
            "  - {id: last, needs: [none], command: [echo, last]}\n")
    sim = Sim(text)
    sim.look(T)
    assert [s["state"] for s in step_summary(sim.spec, list(sim.tasks.values()))] == [
        "queued", "waiting", "waiting"]
    sim.end_and_look("a", 0, J.FAILED, at=T + 1)
    assert [s["state"] for s in step_summary(sim.spec, list(sim.tasks.values()))] == [
        "failed", "skipped", "skipped"]

    ok = Sim(text)
    ok.look(T)
    ok.end_and_look("a", 0, at=T + 1)
    assert [s["state"] for s in step_summary(ok.spec, list(ok.tasks.values()))] == [
        "succeeded", "succeeded", "queued"]


# -- durations of a retried run ----------------------------------------------------------
def test_a_retried_run_and_step_last_the_time_they_ran_not_the_wait_for_the_retry() -> None:
    sim = Sim(FANOUT, {"bins": 2})
    sim.look(T)
    sim.end_and_look("index", 0, at=T + 2)  # each job ran 1 s, ending at ``at``
    assert sim.end_and_look("index", 1, J.FAILED, at=T + 3).state is RunState.FAILED
    assert runtime(sim.run, now=T + 50) == 3

    sim.retry(T + 100)  # the run sat failed for 97 s
    assert sim.run.idle == ((T + 3, T + 100),)
    assert runtime(sim.run, now=T + 100) == 3  # running again, nothing done yet
    sim.look(T + 100)
    sim.end_and_look("index", 1, at=T + 102)
    assert sim.end_and_look("merge", at=T + 104).state is RunState.SUCCEEDED
    index, merge = step_summary(sim.spec, list(sim.tasks.values()), sim.run.idle)
    assert (index["started_at"], index["finished_at"]) == (T + 1, T + 102)
    assert index["duration_s"] == 4  # 2 s before the failure, 2 s after the retry
    assert merge["duration_s"] == 1
    assert runtime(sim.run, now=T + 500) == 7  # 3 s, then 4 s after the retry


def test_idle_spans_go_from_each_end_to_the_retry_that_followed() -> None:
    failed, cancelled, succeeded = (f"bridgehead.workflow.{s}"
                                    for s in ("failed", "cancelled", "succeeded"))
    assert idle_spans([]) == idle_spans([(succeeded, T)]) == ()
    assert idle_spans([(RETRIED_EVENT, T)]) == ()  # no end before it: nothing to skip
    marks = [(failed, T + 1), (RETRIED_EVENT, T + 5), (cancelled, T + 7),
             (RETRIED_EVENT, T + 20), (succeeded, T + 30)]
    assert idle_spans(marks) == ((T + 1, T + 5), (T + 7, T + 20))
    assert idle_spans([*marks[:4], (failed, T + 25)]) == ((T + 1, T + 5), (T + 7, T + 20))
    assert active_seconds(T, T + 30, idle_spans(marks)) == 13
    assert active_seconds(T + 3, T + 10, idle_spans(marks)) == 2  # 5..7: the rest idles
