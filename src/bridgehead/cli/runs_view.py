"""Workflow runs for people: the live view of a run and the tables of runs, steps and tasks.

:func:`follow_run` follows a run to its end by long-polling it (``get_run(wait=, version=)``:
the server answers when the run changed), draws a progress row per step on stderr and, as
each task's job ends, prints its log under a header. ``workflow run``, ``workflow retry
--follow`` and ``demo`` all follow a run with it. Runs are the API's JSON (``RunOut``,
``RunDetailOut``), not domain objects: the CLI shows what the server answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridgehead.cli import output
from bridgehead.domain.jobs import Job

Detail = dict[str, Any]
TaskKey = tuple[str, int]
DONE = frozenset({"succeeded", "failed", "skipped", "cancelled"})
"""Task states that are final (until a retry)."""
COLOURS = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "yellow",
           "running": "cyan", "queued": "cyan", "retry_wait": "magenta", "waiting": "dim"}
POLL_S = 30.0
"""The longest single long-poll; the server may answer sooner."""


def state_text(state: str) -> str:
    colour = COLOURS.get(state)
    return f"[{colour}]{state}[/]" if colour else state


def epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def seconds(value: float | None) -> str:
    """``0.4s``, ``12.3s``, ``2m05s``, ``1h02m``; ``-`` for nothing."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def run_duration(run: Mapping[str, Any]) -> float | None:
    """The server's ``duration_s``: the time the run ran, not the time it sat failed before
    a retry (from its creation to its end when a server does not give it)."""
    if run.get("duration_s") is not None:
        return float(run["duration_s"])
    start = epoch(run.get("created_at"))
    return None if start is None else (epoch(run.get("finished_at")) or time.time()) - start


def done_of(counts: Mapping[str, int]) -> int:
    return sum(n for state, n in counts.items() if state in DONE)


def _when(value: str | None) -> str:
    at = epoch(value)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"


def task_label(task: Mapping[str, Any]) -> str:
    """``merge``, or ``index[3]`` for one item of a fan-out."""
    return task["step"] if task["item"] is None else f"{task['step']}[{task['item']}]"


# -- tables ----------------------------------------------------------------------------------
def run_line(run: Mapping[str, Any]) -> str:
    """``run r-.. (crystallography) succeeded in 12.3s: 9/9 tasks``."""
    counts = run.get("counts") or {}
    cancelling = " (cancel requested)" if run["cancel_requested"] and run["state"] == "running"\
        else ""
    return (f"run [bold]{run['id']}[/] ({escape(run['workflow'])}) {state_text(run['state'])}"
            f"{cancelling} in {seconds(run_duration(run))}: "
            f"{done_of(counts)}/{sum(counts.values())} tasks done")


def show_run(run: Detail, *, tasks: bool = False) -> None:
    """The run's steps (or tasks) table, then its state, duration and task counts."""
    output.console.print(tasks_table(run) if tasks else summary_table(run))
    output.console.print(run_line(run), highlight=False)


def summary_table(run: Detail) -> Table:
    """A row per step: state, tasks done/total, attempts (summed), duration, and why not."""
    table = Table("step", "state", "tasks", "attempts", "duration", "note")
    for step in run["steps"]:
        mine = [t for t in run["tasks"] if t["step"] == step["id"]]
        table.add_row(escape(step["id"]), state_text(step["state"]),
                      f"{done_of(step['counts'])}/{step['total']}",
                      str(sum(t["attempt"] for t in mine)), seconds(step["duration_s"]),
                      escape(_note(mine)))
    return table


def _note(tasks: Sequence[Mapping[str, Any]]) -> str:
    """The first reason a task of the step did not succeed (or is waiting to retry)."""
    for state in ("failed", "retry_wait", "cancelled", "skipped"):
        for task in tasks:
            if task["state"] == state and task["reason"]:
                return f"{task_label(task)}: {task['reason']}"
    return ""


def tasks_table(run: Detail) -> Table:
    table = Table("step", "item", "state", "attempt", "job", "exit", "reason")
    table.columns[4].no_wrap = True
    for task in run["tasks"]:
        table.add_row(escape(task["step"]), "-" if task["item"] is None
                      else escape(str(task["item"])), state_text(task["state"]),
                      str(task["attempt"]), task["job_id"] or "-",
                      "-" if task["exit_code"] is None else str(task["exit_code"]),
                      escape(task["reason"] or "-"))
    return table


def runs_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    table = Table("id", "workflow", "state", "tasks", "created", "duration")
    table.columns[0].no_wrap = table.columns[4].no_wrap = True
    for run in runs:
        counts = run["counts"]
        table.add_row(run["id"], escape(run["workflow"]), state_text(run["state"]),
                      f"{done_of(counts)}/{sum(counts.values())}", _when(run["created_at"]),
                      seconds(run_duration(run)))
    return table


# -- live ------------------------------------------------------------------------------------
class StepsView:
    """A progress row per step (tasks done/total, state, time since it started) on stderr."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
            console=output.progress_console)
        self._rows: dict[str, Any] = {}

    @property
    def console(self) -> Console:
        """Where to print logs: above the live rows when both go to a terminal."""
        if output.console.is_terminal and self.progress.console.is_terminal:
            return self.progress.console
        return output.console

    def update(self, run: Detail) -> None:
        for step in run["steps"]:
            row = self._rows.get(step["id"])
            if row is None:
                row = self._rows[step["id"]] = self.progress.add_task(
                    escape(step["id"]), total=step["total"], start=False, state="")
            if set(step["counts"]) - {"waiting"}:
                self.progress.start_task(row)  # no-op once started
            self.progress.update(row, total=step["total"], completed=done_of(step["counts"]),
                                 state=state_text(step["state"]))

    def __enter__(self) -> StepsView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


class JobEnds:
    """Which tasks' jobs ended since the last look: each try of each task once, even when a
    look missed a try (it ended and was retried in between; found by its idempotency key).

    ``seen`` maps a task to the tries already shown (a retried run's earlier jobs)."""

    def __init__(self, seen: Mapping[TaskKey, int] | None = None) -> None:
        self.shown: dict[TaskKey, int] = dict(seen or {})

    def ended(self, tasks: Sequence[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any],
                                                                          int, str | None]]:
        """(task, try, job id when known) of every job that ended and was not yielded yet."""
        for task in tasks:
            if task["job_id"] is None:
                continue
            key, tries = (task["step"], task["index"]), task["tries"]
            last = tries if task["state"] != "queued" else tries - 1
            for n in range(self.shown.get(key, 0) + 1, last + 1):
                yield task, n, task["job_id"] if n == tries else None
            self.shown[key] = max(self.shown.get(key, 0), last)


def tries_of(run: Detail) -> dict[TaskKey, int]:
    """Every task's tries so far: what a follower of a retried run has seen already."""
    return {(t["step"], t["index"]): t["tries"] for t in run["tasks"]}


async def _job_of(bh: Any, run_id: str, task: Mapping[str, Any], n: int,
                  job_id: str | None) -> Job | None:
    """The job of the task's ``n``-th try: by id, or by its key among the run's jobs."""
    if job_id is not None:
        return await bh.get(job_id)
    key = f"wf:{run_id}:{task['step']}:{task['index']}:{n}"
    after = None
    while True:
        jobs, after = await bh.list_jobs(labels={"run": run_id, "step": task["step"]},
                                         limit=1000, after=after)
        found = next((j for j in jobs if j.spec.idempotency_key == key), None)
        if found is not None or after is None:
            return found


async def _read_all(bh: Any, job_id: str, stream: str) -> bytes:
    parts: list[bytes] = []
    offset = 0
    while True:
        data, offset, _ = await bh.read_logs(job_id, stream=stream, offset=offset)
        if not data:
            return b"".join(parts)
        parts.append(data)


def job_seconds(job: Job) -> float | None:
    if job.usage and job.usage.elapsed_s:
        return job.usage.elapsed_s
    return job.finished_at - job.started_at if job.finished_at and job.started_at else None


async def print_log(bh: Any, job: Job, label: str, console: Console) -> None:
    """``── find_peaks (job j-.., succeeded, 1.4s) ──``, its stdout, then its stderr lines
    prefixed ``[stderr]``."""
    exit_code = f" exit {job.exit_code}" if job.exit_code not in (None, 0) else ""
    what = f"job {job.id}, {job.state.value}{exit_code}, {seconds(job_seconds(job))}"
    console.print(f"[bold]── {escape(label)} ({what}) ──[/]", highlight=False)
    out, err = await asyncio.gather(_read_all(bh, job.id, "stdout"),
                                    _read_all(bh, job.id, "stderr"))
    text = out.decode(errors="replace")
    if text:
        console.print(text, end="" if text.endswith("\n") else "\n", markup=False,
                      highlight=False, soft_wrap=True)
    for line in err.decode(errors="replace").splitlines():
        console.print(f"[stderr] {line}", markup=False, highlight=False, soft_wrap=True)


async def follow_run(bh: Any, run_id: str, *, live: bool = True, logs: bool = True,
                     timeout: float | None = None,
                     seen: Mapping[TaskKey, int] | None = None) -> Detail:
    """Follow the run until it ends (or ``timeout`` seconds pass): with ``live``, a progress
    row per step and, with ``logs``, each task's log as its job ends. The run as it is then."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    ends = JobEnds(seen)
    view = StepsView() if live else None
    with view or nullcontext():
        run = await bh.get_run(run_id)
        while True:
            if view is not None:
                view.update(run)
                if logs:
                    await _print_ended(bh, run, ends, view.console)
            left = POLL_S if deadline is None else min(POLL_S, deadline - loop.time())
            if run["state"] != "running" or left <= 0:
                return run
            run = await bh.get_run(run_id, wait=left, version=run["version"])


async def _print_ended(bh: Any, run: Detail, ends: JobEnds, console: Console) -> None:
    for task, n, job_id in list(ends.ended(run["tasks"])):
        job = await _job_of(bh, run["id"], task, n, job_id)
        if job is not None:
            await print_log(bh, job, task_label(task), console)


@contextmanager
def interrupted_note(run_id: str) -> Iterator[None]:
    """Ctrl-C stops following, not the run: say how to look at it again (exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"stopped following; run {run_id} goes on: "
                   f"bridgehead workflow status {run_id}", err=True)
        raise SystemExit(130) from None
