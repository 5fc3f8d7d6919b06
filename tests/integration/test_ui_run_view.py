"""``run_view``: what a run's page shows of its tasks, counted by the store instead of loading
every task (a 10,000-wide fan-out's page), must be what the whole task list gives: the same
step summaries, the first tasks of each step, the first that started, the retry candidates.
On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import cast

from bridgehead.domain.runs import RETRYABLE, Task, step_summary, summarize
from bridgehead.store import JobStore
from bridgehead.store.ui_sql import UiStore
from bridgehead.workflows import parse_workflow
from tests.integration.test_run_store import fail_a


async def test_run_view_is_what_the_whole_task_list_gives(store: JobStore) -> None:
    run = await fail_a(store)  # ok succeeded, a failed, fan x2 and z skipped
    spec = parse_workflow(run.spec_text, run.filename)
    tasks = await store.run_tasks(run.id)
    ui = cast(UiStore, store)

    view = await ui.run_view(run.id, shown=1, retryable=True)
    assert summarize(spec, view.tallies, run.idle) == step_summary(spec, tasks, run.idle)
    first_of_each: dict[str, Task] = {}
    for t in tasks:
        first_of_each.setdefault(t.step, t)
    assert sorted(view.head, key=lambda t: t.key) == sorted(first_of_each.values(),
                                                           key=lambda t: t.key)
    started = sorted((t for t in tasks if t.started_at), key=lambda t: t.started_at or 0)
    assert started and view.first_started == started[:1] and view.started == len(started)
    assert view.retryable == [t for t in tasks if t.state in RETRYABLE]
    assert {t.state.value for t in view.retryable} == {"failed", "skipped"}

    whole = await ui.run_view(run.id, shown=200, retryable=False)
    assert sorted(whole.head, key=lambda t: t.key) == sorted(tasks, key=lambda t: t.key)
    assert whole.first_started == started and whole.retryable == []
