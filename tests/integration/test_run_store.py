"""The run store and the workflow runner: every test runs on SQLite and on a real PostgreSQL
(the ``store`` / ``store_dsn`` fixtures of ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from bridgehead.controllers.runner import WorkflowRunner
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import JobSpec, JobState, Transition, new_job_id
from bridgehead.domain.runs import (
    JobEnd,
    Plan,
    Run,
    RunState,
    Task,
    TaskState,
    expand,
    new_run_id,
    plan,
)
from bridgehead.domain.workflows import WorkflowSpec
from bridgehead.errors import Conflict, NotFound
from bridgehead.store import JobFilter, JobStore, create_store
from bridgehead.workflows import parse_workflow
from tests.integration.test_store_contract import walk

S = JobState
W = TaskState

FLOW = """\
name: flow
params: {n: 2}
defaults: {cluster: c1}
steps:
  - {id: ok, command: [echo, ok]}
  - {id: a, command: [echo, a]}
  - {id: fan, needs: [a], foreach: {param: n}, command: [echo, "{{ item }}"]}
  - {id: z, needs: [fan], command: [echo, z]}
"""


async def new_run(store: JobStore, text: str = FLOW, params: dict[str, Any] | None = None,
                  *, run_id: str | None = None, key: str | None = None,
                  tenant: str = "default") -> tuple[Run, bool]:
    spec = parse_workflow(text, "flow.yaml")
    resolved = spec.resolve_params(params)
    run = Run(id=run_id or new_run_id(), workflow=spec.name, spec_text=text,
              filename="flow.yaml", params=resolved, tenant=tenant, idempotency_key=key)
    return await store.create_run(run, expand(spec, run.id, resolved))


async def look(store: JobStore, run_id: str) -> tuple[Run, WorkflowSpec, list[Task], Plan]:
    """What a runner sees: the run, its spec, its tasks and the plan for now."""
    run = await store.get_run(run_id)
    spec = parse_workflow(run.spec_text, run.filename)
    tasks = await store.run_tasks(run_id)
    return run, spec, tasks, plan(spec, run, tasks, now=time.time())


async def run_jobs(store: JobStore, run_id: str, **kw: Any) -> list[str]:
    """The ids of every job labelled with the run."""
    flt = JobFilter(labels=(("run", run_id),), **kw)
    return [j.id for j in await store.list_jobs(flt, limit=1000)]


async def end_job(store: JobStore, job_id: str, state: JobState = S.SUCCEEDED) -> None:
    """Claim the run's queued jobs (cluster c1) and take ``job_id`` to ``state``."""
    await store.claim("c1", "a1", limit=1000, lease_s=60)
    await walk(store, job_id, "a1", S.SUBMITTING, S.SUBMITTED, S.RUNNING)
    [job] = await store.transition(
        [Transition(job_id=job_id, state=state, exit_code=0 if state is S.SUCCEEDED else 3,
                    reason=None if state is S.SUCCEEDED else "exit code 3")],
        agent_id="a1")
    assert job is not None and job.state is state


def by_key(tasks: list[Task]) -> dict[str, Task]:
    return {f"{t.step}/{t.index}": t for t in tasks}


async def events_after(store: JobStore, seq: int) -> list[Event]:
    return await store.events(after=seq, limit=1000)


# -- create ------------------------------------------------------------------------------
async def test_create_run_stores_its_tasks_in_order_and_logs_started(store: JobStore) -> None:
    run, created = await new_run(store, params={"n": 3})
    assert created and run.version == 1 and run.state is RunState.RUNNING
    assert run.params == {"n": 3} and not run.cancel_requested and run.finished_at is None
    assert await store.get_run(run.id) == run
    tasks = await store.run_tasks(run.id)
    assert [(t.step, t.index, t.item) for t in tasks] == [
        ("ok", 0, None), ("a", 0, None), ("fan", 0, 0), ("fan", 1, 1), ("fan", 2, 2),
        ("z", 0, None)]
    assert all((t.state, t.attempt, t.tries, t.job_id, t.job) == (W.WAITING, 0, 0, None, None)
               for t in tasks)
    [started] = await store.events(after=0, limit=10)
    assert (started.type, started.subject) == ("bridgehead.workflow.started", f"runs/{run.id}")
    assert started.data["run_id"] == run.id and started.data["params"] == {"n": 3}
    assert await store.active_runs() == [run.id]
    with pytest.raises(NotFound):
        await store.get_run("r-missing")


async def test_an_idempotency_key_returns_the_same_run(store: JobStore) -> None:
    first, created = await new_run(store, key="nightly-42")
    again, created_again = await new_run(store, params={"n": 5}, key="nightly-42")
    other, other_created = await new_run(store, key="nightly-42", tenant="t2")
    assert created and not created_again and other_created
    assert again == first and other.id != first.id
    assert len(await store.run_tasks(first.id)) == 5  # the second call stored no tasks
    assert await store.run_tasks(again.id) == await store.run_tasks(first.id)
    started = [e for e in await store.events(after=0, limit=100)
               if e.type == "bridgehead.workflow.started"]
    assert [e.data["run_id"] for e in started] == [first.id, other.id]


# -- apply_plan: exactly once -------------------------------------------------------------
async def test_apply_plan_writes_jobs_tasks_and_events_and_bumps_the_version(
        store: JobStore) -> None:
    run, _ = await new_run(store)
    seq = await store.last_event_seq()
    _, _, _, p = await look(store, run.id)
    assert [s.labels["step"] for _, s in p.jobs] == ["ok", "a"]

    applied = await store.apply_plan(run, p)
    assert applied is not None and applied.version == 2 and applied.state is RunState.RUNNING
    assert (await store.get_run(run.id)).version == 2

    ids = [job_id for job_id, _ in p.jobs]
    assert await run_jobs(store, run.id) == sorted(ids)
    job = await store.get(ids[1])
    assert job.state is S.QUEUED and job.spec.idempotency_key == f"wf:{run.id}:a:0:1"
    assert job.spec.labels == {"run": run.id, "workflow": "flow", "step": "a"}
    tasks = by_key(await store.run_tasks(run.id))
    assert (tasks["a/0"].state, tasks["a/0"].job_id, tasks["a/0"].attempt) == (
        W.QUEUED, ids[1], 1)
    assert tasks["a/0"].job == JobEnd(state=S.QUEUED)
    assert tasks["fan/0"].state is W.WAITING and tasks["fan/0"].job is None

    logged = await events_after(store, seq)
    assert Counter(e.type for e in logged) == {"bridgehead.job.queued": 2,
                                               "bridgehead.workflow.task.queued": 2}
    queued = [e for e in logged if e.type == "bridgehead.job.queued"]
    assert {e.data["job_id"] for e in queued} == set(ids)
    assert all(e.data["labels"]["run"] == run.id for e in queued)


async def test_a_stale_plan_writes_nothing(store: JobStore) -> None:
    """Two runners that looked at version 1 each decide to submit the roots; only the first
    plan lands. The second must leave no job, no task change and no event behind."""
    run, _ = await new_run(store)
    _, spec, tasks, first = await look(store, run.id)
    second = plan(spec, run, tasks, now=time.time() + 1)
    stale_ids = {job_id for job_id, _ in second.jobs}
    assert len(stale_ids) == 2 and stale_ids.isdisjoint(job_id for job_id, _ in first.jobs)

    assert await store.apply_plan(run, first) is not None
    after_first = await store.run_tasks(run.id)
    seq = await store.last_event_seq()

    assert await store.apply_plan(run, second) is None
    assert await run_jobs(store, run.id) == sorted(job_id for job_id, _ in first.jobs)
    for job_id in stale_ids:
        with pytest.raises(NotFound):
            await store.get(job_id)
    assert await store.run_tasks(run.id) == after_first
    assert await store.last_event_seq() == seq
    assert (await store.get_run(run.id)).version == 2

    # A stale plan that would also finish the run changes nothing either.
    finishing = Plan(tasks=[replace(t, state=W.CANCELLED) for t in tasks],
                     jobs=[(new_job_id(), JobSpec(cluster="c1", command=("x",)))],
                     state=RunState.CANCELLED, events=[Event(type="x", subject="y")])
    assert await store.apply_plan(run, finishing) is None
    current = await store.get_run(run.id)
    assert (current.state, current.version, current.finished_at) == (RunState.RUNNING, 2, None)
    assert await store.run_tasks(run.id) == after_first
    assert await store.last_event_seq() == seq
    assert len(await store.list_jobs(JobFilter(), limit=100)) == 2


async def test_a_plan_made_before_a_cancel_is_refused(store: JobStore) -> None:
    run, _ = await new_run(store)
    _, _, _, p = await look(store, run.id)
    await store.request_run_cancel(run.id)
    assert await store.apply_plan(run, p) is None
    assert await run_jobs(store, run.id) == []


async def test_run_tasks_join_the_state_of_their_jobs(store: JobStore) -> None:
    run, _ = await new_run(store)
    _, _, _, p = await look(store, run.id)
    await store.apply_plan(run, p)
    ok_job, a_job = (job_id for job_id, _ in p.jobs)

    await end_job(store, ok_job)
    await end_job(store, a_job, S.FAILED)
    tasks = by_key(await store.run_tasks(run.id))
    ok, a = tasks["ok/0"].job, tasks["a/0"].job
    assert ok is not None and a is not None
    assert (ok.state, ok.exit_code, ok.reason) == (S.SUCCEEDED, 0, None)
    assert ok.started_at and ok.finished_at and ok.finished_at >= ok.started_at
    assert (a.state, a.exit_code, a.reason) == (S.FAILED, 3, "exit code 3")
    assert tasks["ok/0"].state is W.QUEUED  # the task itself moves when a plan says so

    run, _, _, settle = await look(store, run.id)
    applied = await store.apply_plan(run, settle)
    assert applied is not None and applied.state is RunState.FAILED and applied.finished_at
    states = {k: t.state.value for k, t in by_key(await store.run_tasks(run.id)).items()}
    assert states == {"ok/0": "succeeded", "a/0": "failed", "fan/0": "skipped",
                      "fan/1": "skipped", "z/0": "skipped"}
    assert await store.active_runs() == []


# -- cancel and retry ----------------------------------------------------------------------
async def test_request_run_cancel_flags_the_run_once(store: JobStore) -> None:
    run, _ = await new_run(store)
    seq = await store.last_event_seq()
    cancelling = await store.request_run_cancel(run.id)
    assert cancelling.cancel_requested and cancelling.version == 2
    assert cancelling.state is RunState.RUNNING
    again = await store.request_run_cancel(run.id)
    assert again == cancelling
    assert await store.get_run(run.id) == cancelling
    [event] = await events_after(store, seq)
    assert (event.type, event.subject) == ("bridgehead.workflow.cancelling", f"runs/{run.id}")
    with pytest.raises(NotFound):
        await store.request_run_cancel("r-missing")


async def test_cancelling_a_finished_run_changes_nothing(store: JobStore) -> None:
    run, _ = await new_run(store)
    done = await store.apply_plan(run, Plan(state=RunState.SUCCEEDED))
    assert done is not None and done.state is RunState.SUCCEEDED and done.finished_at
    seq = await store.last_event_seq()
    assert await store.request_run_cancel(run.id) == done
    assert await store.last_event_seq() == seq


async def fail_a(store: JobStore) -> Run:
    """A FLOW run in which ``ok`` succeeded and ``a`` failed (so the rest was skipped)."""
    run, _ = await new_run(store)
    _, _, _, p = await look(store, run.id)
    await store.apply_plan(run, p)
    ok_job, a_job = (job_id for job_id, _ in p.jobs)
    await end_job(store, ok_job)
    await end_job(store, a_job, S.FAILED)
    run, _, _, settle = await look(store, run.id)
    failed = await store.apply_plan(run, settle)
    assert failed is not None and failed.state is RunState.FAILED
    return failed


async def test_retry_run_resets_only_the_unsuccessful_tasks(store: JobStore) -> None:
    failed = await fail_a(store)
    before = by_key(await store.run_tasks(failed.id))
    seq = await store.last_event_seq()

    retried = await store.retry_run(failed.id)
    assert retried.state is RunState.RUNNING and retried.version == failed.version + 1
    assert retried.finished_at is None and not retried.cancel_requested
    after = by_key(await store.run_tasks(failed.id))
    assert after["ok/0"] == before["ok/0"]  # succeeded: kept, with its job
    for key in ("a/0", "fan/0", "fan/1", "z/0"):
        t = after[key]
        assert (t.state, t.attempt, t.tries, t.job_id, t.reason) == (
            W.WAITING, 0, before[key].tries, None, None)
    assert after["a/0"].tries == 1
    [event] = await events_after(store, seq)
    assert (event.type, event.data["state"]) == ("bridgehead.workflow.retried", "running")
    assert await store.active_runs() == [failed.id]

    _, _, _, p = await look(store, failed.id)
    assert [s.idempotency_key for _, s in p.jobs] == [f"wf:{failed.id}:a:0:2"]


async def test_a_retried_run_keeps_the_spans_it_sat_failed(store: JobStore) -> None:
    failed = await fail_a(store)
    assert failed.idle == () and (await store.get_run(failed.id)).idle == ()
    retried = await store.retry_run(failed.id)
    assert failed.finished_at is not None
    span = (failed.finished_at, retried.updated_at)
    assert retried.idle == (span,)
    assert (await store.get_run(failed.id)).idle == (span,)
    [listed] = [r for r in await store.list_runs() if r.id == failed.id]
    assert listed.idle == (span,)

    run, _, _, p = await look(store, failed.id)
    moved = await store.apply_plan(run, p)
    assert moved is not None and moved.idle == (span,)
    [a_job] = [job_id for job_id, _ in p.jobs]
    await end_job(store, a_job, S.FAILED)
    run, _, _, settle = await look(store, failed.id)
    again = await store.apply_plan(run, settle)
    assert again is not None and again.state is RunState.FAILED and again.finished_at
    twice = await store.retry_run(failed.id)
    assert twice.idle == (span, (again.finished_at, twice.updated_at))
    cancelling = await store.request_run_cancel(failed.id)
    assert cancelling.cancel_requested and cancelling.idle == twice.idle


async def test_only_a_failed_or_cancelled_run_can_be_retried(store: JobStore) -> None:
    run, _ = await new_run(store)
    with pytest.raises(Conflict):
        await store.retry_run(run.id)
    assert await store.get_run(run.id) == run  # nothing moved
    done = await store.apply_plan(run, Plan(state=RunState.SUCCEEDED))
    assert done is not None
    with pytest.raises(Conflict):
        await store.retry_run(run.id)

    cancelled, _ = await new_run(store)
    await store.request_run_cancel(cancelled.id)
    current, _, _, p = await look(store, cancelled.id)
    assert p.state is RunState.CANCELLED  # nothing was live: cancelled at once
    assert await store.apply_plan(current, p) is not None
    again = await store.retry_run(cancelled.id)
    assert again.state is RunState.RUNNING and not again.cancel_requested
    assert {t.state for t in await store.run_tasks(cancelled.id)} == {W.WAITING}
    with pytest.raises(NotFound):
        await store.retry_run("r-missing")


# -- listing -------------------------------------------------------------------------------
async def test_list_runs_newest_first_with_filters_and_pages(store: JobStore) -> None:
    other = FLOW.replace("name: flow", "name: other")
    r1, _ = await new_run(store, run_id="r-0001")
    await new_run(store, other, run_id="r-0002", tenant="t2")
    r3, _ = await new_run(store, run_id="r-0003")
    r4, _ = await new_run(store, run_id="r-0004")
    await store.apply_plan(r3, Plan(state=RunState.FAILED))

    async def ids(**kw: Any) -> list[str]:
        return [r.id for r in await store.list_runs(**kw)]

    assert await ids() == ["r-0004", "r-0003", "r-0002", "r-0001"]
    assert await ids(workflow="flow") == ["r-0004", "r-0003", "r-0001"]
    assert await ids(workflow="other") == ["r-0002"]
    assert await ids(state="failed") == ["r-0003"]
    assert await ids(state="running", workflow="flow") == ["r-0004", "r-0001"]
    assert await ids(tenant="t2") == ["r-0002"]
    assert await ids(limit=2) == ["r-0004", "r-0003"]
    assert await ids(limit=2, after="r-0003") == ["r-0002", "r-0001"]
    assert await ids(limit=2, after="r-0001") == []
    assert await ids(workflow="flow", after="r-0004", limit=1) == ["r-0003"]
    assert r1 in await store.list_runs() and r4.state is RunState.RUNNING


async def test_list_runs_orders_runs_made_within_one_second(store: JobStore) -> None:
    made = [(await new_run(store))[0].id for _ in range(8)]
    assert [r.id for r in await store.list_runs()] == made[::-1]


async def test_task_counts_by_run_and_state(store: JobStore) -> None:
    failed = await fail_a(store)
    fresh, _ = await new_run(store, params={"n": 5})
    counts = await store.task_counts([failed.id, fresh.id, "r-none"])
    assert counts == {failed.id: {"succeeded": 1, "failed": 1, "skipped": 3},
                      fresh.id: {"waiting": 8}, "r-none": {}}
    assert await store.task_counts([]) == {}


# -- cursors, leases, rules, external events -----------------------------------------------
async def test_cursors_round_trip(store: JobStore) -> None:
    assert await store.cursor("runner") is None
    await store.set_cursor("runner", 7)
    await store.set_cursor("rules", 3)
    await store.set_cursor("runner", 12)
    assert (await store.cursor("runner"), await store.cursor("rules")) == (12, 3)
    assert await store.last_event_seq() == 0
    await new_run(store)
    assert await store.last_event_seq() == (await store.events(after=0, limit=10))[-1].seq


async def test_events_of_some_types_and_the_cursor_to_go_on_from(store: JobStore) -> None:
    assert await store.events_of(after=0, limit=10, types=["a"]) == ([], 0)
    logged = [e for e, _ in await store.append_events(
        [Event(type=t, subject=f"s{i}", source="t") for i, t in enumerate("abab" + "c" * 5)])]
    found, scanned = await store.events_of(after=0, limit=10, types=["a", "c"])
    assert [e.type for e in found] == ["a", "a", "c", "c", "c", "c", "c"]
    assert scanned == logged[-1].seq  # read past the b's without returning them
    page, upto = await store.events_of(after=0, limit=2, types=["a"])
    assert [e.seq for e in page] == [logged[0].seq, logged[2].seq] and upto == logged[2].seq
    assert await store.events_of(after=upto, limit=5, types=["b"]) == (
        [logged[3]], logged[-1].seq)
    assert await store.events_of(after=logged[-1].seq, limit=5, types=["a"]) == (
        [], logged[-1].seq)


async def test_a_lease_has_one_holder_until_it_expires(store: JobStore) -> None:
    assert await store.acquire_lease("runner", "h1", 30)
    assert not await store.acquire_lease("runner", "h2", 30)
    assert await store.acquire_lease("other", "h2", 30)  # leases are by name
    assert await store.acquire_lease("runner", "h1", 0.2)  # the holder renews (shorter)
    await asyncio.sleep(0.4)
    assert await store.acquire_lease("runner", "h2", 0.2)  # expired: taken over
    assert not await store.acquire_lease("runner", "h1", 30)
    assert await store.acquire_lease("runner", "h2", 30)  # a renewal pushes the expiry
    await asyncio.sleep(0.4)
    assert not await store.acquire_lease("runner", "h1", 30)
    await store.release_lease("runner", "h1")  # not its holder: no effect
    assert not await store.acquire_lease("runner", "h1", 30)
    await store.release_lease("runner", "h2")
    assert await store.acquire_lease("runner", "h1", 30)


async def test_rules_are_put_listed_and_deleted(store: JobStore) -> None:
    assert await store.list_rules() == []
    await store.put_rules([("zeta", {"name": "zeta", "enabled": True}),
                           ("alpha", {"name": "alpha", "actions": [{"webhook": {"url": "u"}}]})])
    rules = await store.list_rules()
    assert [r["name"] for r in rules] == ["alpha", "zeta"]
    assert rules[0]["actions"] == [{"webhook": {"url": "u"}}]
    created = rules[1]["created_at"]
    assert created and rules[1]["updated_at"] == created

    await asyncio.sleep(0.01)
    await store.put_rules([("zeta", {"name": "zeta", "enabled": False})])
    zeta = (await store.list_rules())[1]
    assert zeta["enabled"] is False and zeta["created_at"] == created
    assert zeta["updated_at"] > created

    await store.delete_rule("alpha")
    assert [r["name"] for r in await store.list_rules()] == ["zeta"]
    with pytest.raises(NotFound):
        await store.delete_rule("alpha")


async def test_an_external_event_is_logged_once_per_source_and_id(store: JobStore) -> None:
    event = Event(type="file.created", subject="/data/x.nc", source="watch", id="e-1",
                  data={"path": "/data/x.nc"})
    [(first, new)] = await store.append_events([event])
    assert new and first.seq > 0
    [(again, new_again)] = await store.append_events(
        [replace(event, data={"path": "/other"})])
    assert not new_again and again.seq == first.seq and again.data == {"path": "/data/x.nc"}
    [(other, other_new)] = await store.append_events([replace(event, source="external")])
    assert other_new and other.seq > first.seq
    logged = await store.events(after=0, limit=100)
    assert [(e.source, e.id) for e in logged] == [("watch", "e-1"), ("external", "e-1")]


# -- the runner ----------------------------------------------------------------------------
async def test_the_runner_submits_the_roots_of_a_new_run(store: JobStore) -> None:
    run, _ = await new_run(store)
    runner = WorkflowRunner(store)
    advanced = await runner.advance(run.id)
    assert advanced is not None and advanced.version == 2
    jobs = [await store.get(i) for i in await run_jobs(store, run.id)]
    assert sorted(j.spec.labels["step"] for j in jobs) == ["a", "ok"]
    assert await runner.advance(run.id) == advanced  # nothing new: nothing written
    assert runner.plans_applied == 1
    assert await runner.advance("r-missing") is None


CHAIN = """\
name: chain
defaults: {cluster: c1}
steps:
  - {id: a, command: [echo, a]}
  - {id: b, needs: [a], command: [echo, b]}
  - {id: c, needs: [b], command: [echo, c]}
"""


async def test_the_runner_finishes_a_chain_whose_first_step_failed(store: JobStore) -> None:
    """No event will look at this run again: one advance must settle the whole chain."""
    run, _ = await new_run(store, CHAIN)
    runner = WorkflowRunner(store)
    await runner.advance(run.id)
    [job_id] = await run_jobs(store, run.id)
    await end_job(store, job_id, S.FAILED)
    done = await runner.advance(run.id)
    assert done is not None and done.state is RunState.FAILED
    assert [t.state for t in await store.run_tasks(run.id)] == [W.FAILED, W.SKIPPED, W.SKIPPED]


RACED = """\
name: raced
params: {n: 6}
defaults: {cluster: c1}
steps:
  - {id: a, command: [echo, a]}
  - id: fan
    needs: [a]
    foreach: {param: n}
    command: [echo, "{{ item }}"]
    retries: {count: 1, backoff: 0}
  - {id: z, needs: [fan], command: [echo, z]}
"""


async def test_two_runners_never_submit_a_task_try_twice(store_dsn: str) -> None:
    stores = [create_store(store_dsn) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        store = stores[0]
        run, _ = await new_run(store, RACED)
        runners = [WorkflowRunner(s) for s in stores]
        pointed: set[str] = set()  # every job id a task ever recorded
        for _ in range(12):
            results = await asyncio.gather(*(r.advance(run.id) for r in runners))
            assert all(r is not None for r in results)
            tasks = await store.run_tasks(run.id)
            pointed |= {t.job_id for t in tasks if t.job_id}
            jobs = [await store.get(i) for i in await run_jobs(store, run.id)]
            keys = Counter(j.spec.idempotency_key for j in jobs)
            assert all(n == 1 for n in keys.values()), keys
            assert len(jobs) == sum(t.tries for t in tasks)  # one job per task try
            assert {j.id for j in jobs} == pointed  # and each is the one its task recorded
            for t in tasks:
                if t.state is W.QUEUED:
                    assert t.job is not None and t.job_id in pointed
            if (await store.get_run(run.id)).state.terminal:
                break
            for job in jobs:  # end every live job; the first try of each fan item fails
                if job.state is S.QUEUED:
                    first_try = str(job.spec.idempotency_key).endswith(":1")
                    fails = job.spec.labels["step"] == "fan" and first_try
                    await end_job(store, job.id, S.FAILED if fails else S.SUCCEEDED)
        final = await store.get_run(run.id)
        assert final.state is RunState.SUCCEEDED
        tasks = await store.run_tasks(run.id)
        assert [(t.step, t.tries) for t in tasks] == [("a", 1)] + [("fan", 2)] * 6 + [("z", 1)]
        assert len(await run_jobs(store, run.id)) == 1 + 12 + 1
        assert sum(r.plans_applied for r in runners) == 5  # one per change, never two
    finally:
        for s in stores:
            await s.close()


# -- PostgreSQL: a run that moves between the read and the write of cancel/retry -----------
@pytest.mark.postgres
@pytest.mark.parametrize("action", ["cancel", "retry"])
async def test_cancel_and_retry_survive_a_concurrent_plan(pg_database: str, action: str) -> None:
    """A runner's plan may commit between cancel's (or retry's) read of the run and its
    compare-and-set: the request must still apply to the run as it now is."""
    import asyncpg

    store = create_store(pg_database)
    await store.open()
    try:
        run = await fail_a(store) if action == "retry" else (await new_run(store))[0]
        raw = await asyncpg.connect(pg_database)
        try:
            tx = raw.transaction()
            await tx.start()
            await raw.execute("UPDATE workflow_runs SET version = version + 1 WHERE id = $1",
                              run.id)  # a plan being applied: it holds the run's row
            request = asyncio.create_task(
                store.request_run_cancel(run.id) if action == "cancel"
                else store.retry_run(run.id))
            for _ in range(100):  # until the request waits for the row
                waiting = await raw.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")
                if waiting or request.done():
                    break
                await asyncio.sleep(0.02)
            await tx.commit()
            done = await asyncio.wait_for(request, 10)
        finally:
            await raw.close()
        assert done.version == run.version + 2
        if action == "cancel":
            assert done.cancel_requested
        else:
            assert done.state is RunState.RUNNING
            assert by_key(await store.run_tasks(run.id))["a/0"].state is W.WAITING
    finally:
        await store.close()
