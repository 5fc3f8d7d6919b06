"""The scheduler on real stores (SQLite and PostgreSQL) driven by a fake clock: one run per
tick, ticks waiting for max_active_runs, catch-up bounds, a crash between a tick's run and
its mark, and two schedulers racing on one store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from textwrap import dedent
from typing import cast

from bridgehead.controllers.runner import WorkflowRunner
from bridgehead.controllers.scheduler import KEEP_TICKS_S, Scheduler
from bridgehead.domain.schedules import tick_key
from bridgehead.store import JobStore, create_store
from bridgehead.store.schedules_sql import ScheduleStore
from bridgehead.workflows.launch import create_run

T0 = 1_800_000_000  # a multiple of 60: ticks of `every: 60` fall at T0 + 60 k


def workflow(folder: Path, schedule: str, name: str = "nightly") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(dedent(f"""\
        name: {name}
        params: {{day: today}}
        defaults: {{cluster: local}}
        steps:
          - id: a
            command: [echo, "{{{{ params.day }}}}"]
        schedule: {schedule}
        """))
    return path


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def runs_of(store: JobStore, name: str = "nightly") -> list[tuple[str, str]]:
    """(idempotency key, state) of the workflow's runs, oldest first."""
    runs = await store.list_runs(workflow=name, limit=100)
    return sorted((r.idempotency_key or "", r.state.value) for r in runs)


async def finish(store: JobStore, key: str) -> None:
    """Cancel the run of ``key`` and let the real runner end it."""
    [run] = [r for r in await store.list_runs(limit=100) if r.idempotency_key == key]
    await store.request_run_cancel(run.id)
    runner = WorkflowRunner(store)
    for _ in range(5):
        advanced = await runner.advance(run.id)
        if advanced is not None and advanced.state.terminal:
            return
    raise AssertionError(f"run {run.id} did not end")


async def test_one_run_per_tick_and_no_overlap(store: JobStore, tmp_path: Path) -> None:
    clock = Clock(T0 + 1)
    workflow(tmp_path / "wf", "{every: 60, catchup: all, max_catchup: 3, params: {day: x}}")
    sched = Scheduler(cast(ScheduleStore, store), folder=tmp_path / "wf", clock=clock)
    await sched.run_pass()
    assert await runs_of(store) == []  # the first tick is the first one after it appeared
    clock.now = T0 + 60
    await sched.run_pass()
    await sched.run_pass()
    first = tick_key("nightly", T0 + 60)
    assert await runs_of(store) == [(first, "running")]
    [run] = await store.list_runs(workflow="nightly")
    assert run.params == {"day": "x"}

    clock.now = T0 + 180  # two more ticks while the first run still runs: they wait
    await sched.run_pass()
    assert await runs_of(store) == [(first, "running")]
    ticks = await cast(ScheduleStore, store).recent_ticks("nightly", 10)
    assert [(t.at - T0, t.state) for t in ticks] == [(180, "waiting"), (120, "waiting"),
                                                     (60, "started")]
    await finish(store, first)
    await sched.run_pass()  # the oldest waiting tick starts, the next still waits
    assert await runs_of(store) == [(first, "cancelled"),
                                    (tick_key("nightly", T0 + 120), "running")]


async def test_catchup_after_an_outage(store: JobStore, tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    workflow(folder, "{every: 60, catchup: all, max_catchup: 2, max_active_runs: 5}", "all")
    workflow(folder, "{every: 60, catchup: latest, max_active_runs: 5}", "latest")
    workflow(folder, "{every: 600, catchup: none, max_active_runs: 5}", "none")
    clock = Clock(T0)
    sched = Scheduler(cast(ScheduleStore, store), folder=folder, clock=clock)
    await sched.run_pass()
    clock.now = T0 + 600 + 5  # ten ticks (every: 60) fell while no scheduler ran
    await sched.run_pass()
    assert [k for k, _ in await runs_of(store, "all")] == [
        tick_key("all", T0 + 540), tick_key("all", T0 + 600)]
    assert [k for k, _ in await runs_of(store, "latest")] == [tick_key("latest", T0 + 600)]
    # none: the newest tick is 5 s late, within the grace: it starts; older ones never
    assert [k for k, _ in await runs_of(store, "none")] == [tick_key("none", T0 + 600)]
    clock.now = T0 + 1200 + 120  # none: two minutes late is missed
    await sched.run_pass()
    assert len(await runs_of(store, "none")) == 1
    assert len(await runs_of(store, "latest")) == 2


async def test_a_crash_between_the_run_and_the_mark_neither_loses_nor_doubles(
        store: JobStore, tmp_path: Path) -> None:
    path = workflow(tmp_path / "wf", "{every: 60}")
    clock = Clock(T0)
    schedules = cast(ScheduleStore, store)
    sched = Scheduler(schedules, folder=tmp_path / "wf", clock=clock)
    await sched.run_pass()
    # what a scheduler killed right after creating the run leaves: the tick waiting, the run
    await schedules.add_ticks("nightly", "default", T0, [T0 + 60])
    run, _ = await create_run(store, path.read_text(), filename=path.name,
                              idempotency_key=tick_key("nightly", T0 + 60))
    clock.now = T0 + 60
    await sched.run_pass()
    assert await runs_of(store) == [(tick_key("nightly", T0 + 60), "running")]
    [tick] = await schedules.recent_ticks("nightly", 5)
    assert (tick.state, tick.run_id) == ("started", run.id)


async def test_two_schedulers_racing_start_one_run_per_tick(store_dsn: str,
                                                            tmp_path: Path) -> None:
    workflow(tmp_path / "wf", "{every: 60, catchup: all, max_catchup: 5, max_active_runs: 10}")
    stores = [create_store(store_dsn) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        clock = Clock(T0)
        scheds = [Scheduler(cast(ScheduleStore, s), folder=tmp_path / "wf", clock=clock)
                  for s in stores]
        await scheds[0].run_pass()
        for step in range(1, 4):
            clock.now = T0 + 60 * step * 2
            await asyncio.gather(*(s.run_pass() for s in scheds))
        keys = [k for k, _ in await runs_of(stores[0])]
        assert keys == [tick_key("nightly", T0 + 60 * i) for i in range(1, 7)]
    finally:
        for s in stores:
            await s.close()


async def test_pause_resume_and_files_that_change(store: JobStore, tmp_path: Path) -> None:
    path = workflow(tmp_path / "wf", "{every: 60, paused: true}")
    schedules = cast(ScheduleStore, store)
    clock = Clock(T0)
    sched = Scheduler(schedules, folder=tmp_path / "wf", clock=clock)
    await sched.run_pass()
    assert [s.paused for s in await schedules.schedules()] == [True]
    clock.now = T0 + 300
    await sched.run_pass()
    assert await runs_of(store) == []
    await schedules.set_paused("nightly", False, clock.now)  # ticks while paused are not run
    await sched.run_pass()
    assert await runs_of(store) == []
    clock.now = T0 + 360
    await sched.run_pass()
    assert [k for k, _ in await runs_of(store)] == [tick_key("nightly", T0 + 360)]
    # an edit that keeps `paused: true` keeps the API's resume; the file's change pauses
    path.write_text(path.read_text().replace("{day: today}", "{day: later}"))
    await sched.run_pass()
    assert [s.paused for s in await schedules.schedules()] == [False]
    path.write_text(path.read_text().replace("paused: true", "paused: false"))
    await sched.run_pass()
    assert [s.paused for s in await schedules.schedules()] == [False]
    clock.now = T0 + 360 + KEEP_TICKS_S + 60  # ended ticks are forgotten after KEEP_TICKS_S
    sched._next_prune = 0.0
    await sched.run_pass()
    assert [t.at - T0 for t in await schedules.recent_ticks("nightly", 5)] == [
        360 + int(KEEP_TICKS_S) + 60]  # the 360 tick pruned, the new one waiting
    path.unlink()  # a file gone: its schedule too
    await sched.run_pass()
    assert await schedules.schedules() == []
