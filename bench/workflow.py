"""Workflow benchmark: a 1,000-wide fan-out run by the server vs the same jobs sent directly.

    python bench/workflow.py [--quick] [--width N] [--slots S]

One real Bridgehead server (SQLite, temporary dir) and one real local agent with S slots
(default: the width, so no job waits for a slot and what is measured is scheduling, not
queueing). The workflow is ``start -> fan (foreach over N items) -> gather``, every step
``true``. It runs twice on the same server:

- **workflow**: ``POST /v1/workflows/runs``; the server's runner submits each step's jobs when
  the event log says its dependencies ended. Total = from the request to the run's end.
- **direct** (the baseline): the same N + 2 jobs submitted by a client through the jobs API,
  the way a script that drives the stages itself would do it at best: it follows the event
  log by long-poll (no sleeping) and submits each stage the moment the last job it depends
  on has ended. Total = from the first submit to the last job's end.

Per-step scheduling overhead = the time a job was claimed by the agent (its
``bridgehead.job.claimed`` event) minus the time its last dependency's job finished
(``finished_at``), for every job but the first. Results: ``bench/results/workflow.json``
(``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import console, latency_figures, publish  # noqa: E402
from rich.table import Table  # noqa: E402
from tests.procs import Stack, stack  # noqa: E402

from bridgehead.client import AsyncClient  # noqa: E402
from bridgehead.domain.jobs import Job, JobSpec  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "workflow.json"
WORKFLOW = """
name: fanout-bench
params: {{width: {width}}}
defaults:
  cluster: local
  resources: {{cores: 1, walltime: 10m}}
steps:
  - id: start
    command: ["true"]
  - id: fan
    needs: [start]
    foreach: {{param: width}}
    command: ["true"]
  - id: gather
    needs: [fan]
    command: ["true"]
"""
BATCH = 500
TIMEOUT_S = 600.0


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to (a job failed, a run did not end)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    width: int
    slots: int
    quick: bool
    output: Path


def parse_args(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a 200-wide fan-out (under a minute)")
    p.add_argument("--width", type=int, help="fan-out width (default 1,000; --quick 200)")
    p.add_argument("--slots", type=int, help="the local agent's slots (default: the width)")
    p.add_argument("--output", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    width = a.width or (200 if a.quick else 1000)
    if width < 1:
        p.error("--width must be >= 1")
    return Config(width=width, slots=a.slots or width, quick=a.quick, output=a.output)


async def claims_after(bh: AsyncClient, cursor: int) -> tuple[dict[str, float], int]:
    """job id -> the time of its first ``claimed`` event, from the log after ``cursor``."""
    out: dict[str, float] = {}
    while True:
        page = await bh.events(after=cursor, limit=1000)
        for e in page["events"]:
            if e["type"] == "bridgehead.job.claimed":
                out.setdefault(e["data"]["job_id"], _epoch(e["time"]))
        if page["next"] == cursor:
            return out, cursor
        cursor = page["next"]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def jobs_labelled(bh: AsyncClient, key: str, value: str) -> list[Job]:
    out: list[Job] = []
    after = None
    while True:
        page, after = await bh.list_jobs(labels={key: value}, limit=1000, after=after)
        out.extend(page)
        if after is None or not page:
            return out


def overheads(jobs: list[Job], claims: dict[str, float]) -> list[float]:
    """ms from each job's last dependency finishing to the job being claimed."""
    by_step: dict[str, list[Job]] = {}
    for job in jobs:
        if job.state.value != "succeeded":
            raise BenchError(f"job {job.id} ({job.spec.labels.get('step')}) ended {job.state}")
        by_step.setdefault(job.spec.labels["step"], []).append(job)
    [start], fan, [gather] = by_step["start"], by_step["fan"], by_step["gather"]
    samples = [(claims[j.id] - (start.finished_at or 0)) * 1000 for j in fan]
    samples.append((claims[gather.id] - max(j.finished_at or 0 for j in fan)) * 1000)
    return samples


async def run_workflow(bh: AsyncClient, width: int) -> tuple[float, list[Job], str]:
    started = time.perf_counter()
    run = await bh.start_run(WORKFLOW.format(width=width), filename="fanout.yaml")
    done = await bh.wait_run(run["id"], timeout=TIMEOUT_S)
    total = time.perf_counter() - started
    if done["state"] != "succeeded":
        raise BenchError(f"run {run['id']} ended {done['state']}: {done['counts']}")
    return total, await jobs_labelled(bh, "run", run["id"]), run["id"]


async def run_direct(bh: AsyncClient, width: int) -> tuple[float, list[Job]]:
    """Drive the three stages from the client, woken by the event log."""
    tag = f"direct-{time.time_ns()}"

    def spec(step: str) -> JobSpec:
        return JobSpec(cluster="local", command=("true",), name=f"fanout-bench.{step}",
                       labels={"bench": tag, "step": step})

    cursor = (await bh.events(after=0, limit=1))["next"]
    cursor = await _end_of_log(bh, cursor)
    started = time.perf_counter()
    for stage in (["start"], ["fan"] * width, ["gather"]):
        ids: set[str] = set()
        for i in range(0, len(stage), BATCH):
            jobs = await bh.submit_many([spec(s) for s in stage[i:i + BATCH]])
            ids.update(j.id for j in jobs)
        cursor = await _until_finished(bh, ids, cursor)
    total = time.perf_counter() - started
    return total, await jobs_labelled(bh, "bench", tag)


async def _end_of_log(bh: AsyncClient, cursor: int) -> int:
    while True:
        page = await bh.events(after=cursor, limit=1000)
        if page["next"] == cursor:
            return cursor
        cursor = page["next"]


async def _until_finished(bh: AsyncClient, ids: set[str], cursor: int) -> int:
    left = set(ids)
    deadline = time.monotonic() + TIMEOUT_S
    while left:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(left)} direct jobs did not finish in {TIMEOUT_S}s")
        page = await bh.events(after=cursor, limit=1000, wait=10.0)
        for e in page["events"]:
            if e["type"] == "bridgehead.job.finished":
                left.discard(e["data"]["job_id"])
        cursor = page["next"]
    return cursor


async def measure(cfg: Config, bh_stack: Stack) -> dict[str, Any]:
    async with AsyncClient(bh_stack.server.url, bh_stack.admin) as bh:
        await _warm_up(bh)
        cursor = await _end_of_log(bh, 0)
        console.log(f"workflow: start -> fan x{cfg.width} -> gather")
        wf_total, wf_jobs, run_id = await run_workflow(bh, cfg.width)
        claims, cursor = await claims_after(bh, cursor)
        wf_over = overheads(wf_jobs, claims)
        console.log(f"workflow run {run_id}: {wf_total:.2f}s; direct submission next")
        direct_total, direct_jobs = await run_direct(bh, cfg.width)
        claims, _ = await claims_after(bh, cursor)
        direct_over = overheads(direct_jobs, claims)
    return {
        "steps": cfg.width + 2,
        "total_s": round(wf_total, 3),
        "direct_total_s": round(direct_total, 3),
        "ratio": round(wf_total / direct_total, 3),
        "step_overhead_ms": latency_figures(wf_over),
        "direct_step_overhead_ms": latency_figures(direct_over),
    }


async def _warm_up(bh: AsyncClient) -> None:
    """One job through the agent, so neither mode pays for the first claim and fork."""
    job = await bh.submit(JobSpec(cluster="local", command=("true",), name="warm-up"))
    await bh.wait(job.id, timeout=60)


def table(r: dict[str, Any]) -> Table:
    t = Table(title=f"{r['steps']:,}-step fan-out (start -> fan x{r['steps'] - 2:,} -> gather), "
                    "local backend")
    for column in ("mode", "total s", "overhead p50 ms", "overhead p99 ms", "max ms"):
        t.add_column(column, justify="left" if column == "mode" else "right")
    for label, total, key in (("workflow (server runner)", r["total_s"], "step_overhead_ms"),
                              ("direct submission", r["direct_total_s"],
                               "direct_step_overhead_ms")):
        o = r[key]
        t.add_row(label, f"{total:.2f}", f"{o['p50']:,}", f"{o['p99']:,}", f"{o['max']:,}")
    p50_ok = "met" if r["step_overhead_ms"]["p50"] < 100 else "NOT met"
    ratio_ok = "met" if r["ratio"] <= 1.5 else "NOT met"
    t.caption = (f"workflow / direct total = {r['ratio']}x (aim <= 1.5x: {ratio_ok}); "
                 f"overhead p50 aim < 100 ms: {p50_ok}")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bh-workflow-bench-") as tmp, \
            stack(Path(tmp), slots=cfg.slots, poll=1.0) as bh_stack:
        try:
            results = asyncio.run(measure(cfg, bh_stack))
        except (BenchError, AssertionError, OSError) as exc:
            console.print(f"[bold red]benchmark failed:[/] {exc}", soft_wrap=True)
            return 1
    results["run"] = {"quick": cfg.quick, "width": cfg.width, "slots": cfg.slots,
                      "store": "sqlite", "python": platform.python_version(),
                      "duration_s": round(time.monotonic() - started, 1)}
    publish(results, cfg.output, table(results), width=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
