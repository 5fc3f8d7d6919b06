"""Rendering for people (rich tables, progress) and for scripts (``--json``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridgehead.domain.jobs import Job, JobSpec, JobState, Resources
from bridgehead.domain.spark import SparkApp

console = Console(width=None if sys.stdout.isatty() else 200)
"""Tables keep their width when piped (scripts should use --json)."""
progress_console = Console(stderr=True)
"""Progress goes to stderr, so ``--json`` output on stdout stays parseable."""
_COLOURS = {
    JobState.SUCCEEDED: "green", JobState.FAILED: "red", JobState.TIMED_OUT: "red",
    JobState.LOST: "red", JobState.CANCELLED: "yellow", JobState.RUNNING: "cyan",
}


def job_dict(job: Job) -> dict[str, Any]:
    data = asdict(job)
    data["state"] = job.state.value
    data["spec"] = job.spec.to_dict()
    data["cluster"] = job.cluster
    data["terminal"] = job.terminal
    return data


def _state(job: Job) -> str:
    colour = _COLOURS.get(job.state)
    return f"[{colour}]{job.state.value}[/]" if colour else job.state.value


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _duration(job: Job) -> str:
    if job.usage and job.usage.elapsed_s:
        return f"{job.usage.elapsed_s:.1f}s"
    if not job.started_at:
        return "-"
    return f"{(job.finished_at or time.time()) - job.started_at:.1f}s"


def _memory(mb: int) -> str:
    """``512M``, ``4G``, ``1T``: the largest unit that divides it, as ``--memory`` takes."""
    for unit, size in (("T", 1 << 20), ("G", 1 << 10)):
        if mb % size == 0:
            return f"{mb // size}{unit}"
    return f"{mb}M"


def _walltime(seconds: int) -> str:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _resources(resources: Resources) -> str:
    """What the job asks for, named as ``submit``'s flags: cores and nodes, then only what is
    set (memory, gpus, walltime, partition, account, caps)."""
    r = resources
    asked: list[tuple[str, object]] = [
        ("cores", r.cores), ("nodes", r.nodes),
        ("memory", r.memory_mb and _memory(r.memory_mb)), ("gpus", r.gpus),
        ("walltime", r.walltime_s and _walltime(r.walltime_s)), ("partition", r.partition),
        ("account", r.account), ("max-cores", r.max_cores), ("max-nodes", r.max_nodes)]
    return _pairs((name, value) for name, value in asked if value)


def _pairs(pairs: Iterable[tuple[str, object]]) -> str:
    return ", ".join(f"{key}={value}" for key, value in pairs)


def _spec_rows(spec: JobSpec) -> list[tuple[str, str]]:
    """The spec's labels, resources, env (its names only: values may be secrets), working
    directory and scheduler options; each only when it is set."""
    rows = [("labels", _pairs(sorted(spec.labels.items()))),
            ("resources", _resources(spec.resources)),
            ("env", " ".join(sorted(spec.env))), ("working dir", spec.working_dir or ""),
            ("scheduler options", " ".join(spec.scheduler_options))]
    return [(key, value) for key, value in rows if value]


def _spark_rows(app: SparkApp | None) -> list[tuple[str, str]]:
    """A Spark application's part: what it runs, its sizes, conf and files (when set)."""
    if app is None:
        return []
    mem = {k: "-" if v is None else f"{v}M" for k, v in (
        ("driver", app.driver_memory_mb), ("executor", app.executor_memory_mb))}
    rows = [("spark app", app.application + (f" ({app.main_class})" if app.main_class else "")),
            ("spark args", " ".join(app.arguments)),
            ("spark size", f"driver {app.driver_cores} cores {mem['driver']}, "
                           f"{app.executors} executors x {app.executor_cores} cores "
                           f"{mem['executor']} = {app.cores} cores"),
            ("spark conf", _pairs(sorted(app.conf.items()))),
            ("spark py-files", ",".join(app.py_files)), ("spark jars", ",".join(app.jars)),
            ("spark files", ",".join(app.files))]
    return [(key, value) for key, value in rows if value]


def show_job(job: Job, *, as_json: bool = False, brief: bool = False) -> None:
    if as_json:
        print(json.dumps(job_dict(job)))
        return
    if brief:
        console.print(f"{job.id}  {_state(job)}  cluster={job.cluster}")
        return
    table = Table(show_header=False, box=None)
    what = " ".join(job.spec.command) if job.spec.command else "(script)"
    if job.spec.spark is not None:
        what = "(spark application)"
    if job.parent_id is not None:
        what = f"element {job.array_index} of array job {job.parent_id}"
    rows = [
        ("id", job.id), ("name", escape(job.spec.name or "-")), ("state", _state(job)),
        ("cluster", job.cluster), ("tenant", job.spec.tenant), ("command", escape(what)),
        *_array_rows(job),
        *((key, escape(value)) for key, value in _spark_rows(job.spec.spark)),
        *((key, escape(value)) for key, value in _spec_rows(job.spec)),
        ("native id", job.native_id or "-"), ("exit code", str(job.exit_code)
                                              if job.exit_code is not None else "-"),
        ("reason", escape(job.reason or "-")), ("attempt", str(job.attempt)),
        ("created", _when(job.created_at)), ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)), ("duration", _duration(job)),
    ]
    if job.usage:
        rows.append(("core-seconds", f"{job.usage.core_seconds:.1f}"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)


def _array_rows(job: Job) -> list[tuple[str, str]]:
    if job.elements is None:
        return []
    return [("array", f"{escape(job.spec.array or '')}: {job.elements} elements "
                      f"(bridgehead list --parent {job.id})")]


def show_jobs(jobs: Sequence[Job], next_cursor: str | None, *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"jobs": [job_dict(j) for j in jobs], "next": next_cursor}))
        return
    table = Table("id", "name", "cluster", "state", "exit", "duration", "created")
    table.columns[0].no_wrap = True
    table.columns[6].no_wrap = True
    for j in jobs:
        name = j.spec.name or "-"
        if j.array_index is not None:
            name = f"{name} [{j.array_index}]"
        table.add_row(j.id, name, j.cluster, _state(j),
                      "-" if j.exit_code is None else str(j.exit_code), _duration(j),
                      _when(j.created_at))
    console.print(table)
    if next_cursor:
        console.print(f"more: --after {next_cursor}")


def show_clusters(clusters: list[dict[str, Any]], *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(clusters))
        return
    table = Table("cluster", "backend", "status", "queued", "running", "in flight", "labels",
                  "agent")
    for c in clusters:
        counts = c["counts"]
        flying = sum(counts.get(s, 0) for s in ("claimed", "submitting", "submitted"))
        status = "[green]online[/]" if c["online"] else "[red]offline[/]"
        labels = ", ".join(f"{k}={v}" for k, v in sorted((c.get("labels") or {}).items()))
        table.add_row(c["name"], c["backend"], status, str(counts.get("queued", 0)),
                      str(counts.get("running", 0)), str(flying), labels or "-",
                      c["agent_id"] or "-")
    console.print(table)


def show_tokens(tokens: list[dict[str, Any]], *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(tokens))
        return
    table = Table("id", "name", "role", "cluster", "tenant")
    for t in tokens:
        table.add_row(t["id"], t["name"], t["role"], t["cluster"] or "-", t["tenant"] or "-")
    console.print(table)


async def wait_with_progress(bh: Any, job_ids: list[str], timeout: float | None) -> list[Job]:
    """Wait for every job concurrently (server long-polls) with a live progress bar."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=progress_console, transient=False) as progress:
        task = progress.add_task("jobs finished", total=len(job_ids))

        async def one(job_id: str) -> Job:
            job = await bh.wait(job_id, until="terminal", timeout=timeout)
            progress.advance(task)
            return job

        return list(await asyncio.gather(*(one(i) for i in job_ids)))
