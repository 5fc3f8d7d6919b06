"""The Slurm benchmark's (1) throughput, Bridgehead against an sbatch loop, and (2) scheduler
commands per poll cycle, Bridgehead's batched poll against a per-job poller."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from common import BATCH, BenchError, Tokens, until_online
from slurm_agents import (
    EventFollower,
    agent_log,
    check_all,
    check_on_server,
    event_cursor,
    slurm_agent,
    wake_ups,
)
from slurm_base import ACTIVE_STATES, Lab, Run, cancel, slurm

from bridgehead.backends.slurm_cli import SlurmCliBackend, SlurmCliConfig
from bridgehead.client import AsyncClient
from bridgehead.config import SlurmSettings
from bridgehead.domain.jobs import JobSpec, JobState

THROUGHPUT_POLL_S = 1.0
"""The throughput agent's poll interval: the baseline's squeue cadence."""
SQUEUE_EVERY_S = 1.0
BRIDGEHEAD_CYCLES = 5
BASELINE_CYCLES = 3
ENDED_IN_CYCLE = 5
"""Held jobs cancelled before the one cycle that must also ask sacct."""
SUBMIT_CONCURRENCY = 8
"""Parallel sbatch calls to put the held jobs in place (setup, not measured)."""
ENDED_BADLY = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                         "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
ACCOUNTING_WAIT_S = 60.0


# -- 1. throughput --------------------------------------------------------------------------------
async def bridgehead_throughput(run: Run, url: str, tokens: Tokens, n: int) -> dict[str, Any]:
    """Submit N ``true`` jobs with submit_many; seconds until the last one is ``succeeded``."""
    name = run.lab.name
    specs = [JobSpec(cluster=name, command=("true",), name=f"{run.prefix}-bh-{i}")
             for i in range(n)]
    async with AsyncClient(url, tokens.admin) as admin, \
            slurm_agent(run, url, tokens.agents[name], name, poll_s=THROUGHPUT_POLL_S,
                        hook=True) as agent:
        await until_online(admin, name, agent, agent_log(run, name))
        async with EventFollower(url, tokens.admin, await event_cursor(admin)) as events:
            start = time.time()
            ids = [j.id for lo in range(0, n, BATCH)
                   for j in await admin.submit_many(specs[lo:lo + BATCH])]
            await events.until_ended(ids, agent, agent_log(run, name))
        await check_on_server(admin, name, ids)
        wakes = await wake_ups(admin, name, "socket", 1)
    check_all(events.ended, ids, "Bridgehead")
    last = max(events.ended[i].received for i in ids)
    in_slurm = max(events.reached[i].get(JobState.SUBMITTED, events.ended[i].at) for i in ids)
    claims, reports = events.sizes(JobState.CLAIMED), events.sizes(JobState.SUCCEEDED)
    return {"wall_s": round(last - start, 3), "jobs_per_s": round(n / (last - start), 1),
            "all_in_slurm_s": round(in_slurm - start, 3),
            "claims": len(claims), "mean_claim_size": _mean(claims),
            "succeeded_reports": len(reports), "mean_succeeded_report_size": _mean(reports),
            "agent_poll_interval_s": THROUGHPUT_POLL_S, "hook": True, "hook_wake_ups": wakes}


async def direct_throughput(run: Run, n: int) -> dict[str, Any]:
    """sbatch N ``true`` jobs in a loop, squeue every second until none is in flight, then
    sacct until all show COMPLETED 0:0."""
    cwd = run.scratch / "direct"
    cwd.mkdir()
    start = time.time()
    ids = [await sbatch_wrap(run, cwd) for _ in range(n)]
    submitted = time.time()
    polls = await squeue_until_done(run.lab, ids)
    drained = time.time()
    await sacct_until_completed(run.lab, ids)
    done = time.time()
    return {"wall_s": round(done - start, 3), "jobs_per_s": round(n / (done - start), 1),
            "all_in_slurm_s": round(submitted - start, 3),
            "squeue_wall_s": round(drained - start, 3), "squeue_polls": polls,
            "sacct_confirm_s": round(done - drained, 3)}


async def sbatch_wrap(run: Run, cwd: Path) -> str:
    out = await slurm(run.lab, "sbatch", "--parsable", f"--job-name={run.prefix}-direct",
                      "--wrap", "true", cwd=cwd)
    return out.strip().split(";")[0]


async def squeue_until_done(lab: Lab, ids: Sequence[str]) -> int:
    """Poll squeue every SQUEUE_EVERY_S until none of ``ids`` is in flight; polls made."""
    polls, tick = 0, time.monotonic()
    while True:
        polls += 1
        out = await slurm(lab, "squeue", "--noheader", f"--states={ACTIVE_STATES}",
                          "--format=%i", f"--jobs={','.join(ids)}", check=False)
        if not out.strip():
            return polls
        tick += SQUEUE_EVERY_S
        await asyncio.sleep(max(0.0, tick - time.monotonic()))


async def sacct_until_completed(lab: Lab, ids: Sequence[str]) -> None:
    """Until sacct shows every job COMPLETED with exit 0:0 (accounting may lag a moment);
    BenchError if one ended otherwise or accounting does not catch up."""
    deadline = time.monotonic() + ACCOUNTING_WAIT_S
    while True:
        out = await slurm(lab, "sacct", "--noheader", "--parsable2", "--allocations",
                          "--format=JobIDRaw,State,ExitCode", f"--jobs={','.join(ids)}")
        rows = {c[0]: f"{c[1]} {c[2]}" for c in (line.split("|") for line in out.splitlines())
                if len(c) == 3}
        seen = Counter(rows.get(i, "(not in sacct yet)") for i in ids)
        if seen == Counter({"COMPLETED 0:0": len(ids)}):
            return
        if any(row.split()[0] in ENDED_BADLY for row in seen):
            raise BenchError(f"direct: not every job completed: {dict(seen)}")
        if time.monotonic() > deadline:
            raise BenchError(f"direct: sacct after {ACCOUNTING_WAIT_S:.0f} s: {dict(seen)}")
        await asyncio.sleep(0.2)


async def slurm_start_rate(run: Run, since: float, name_prefix: str) -> float | None:
    """Jobs Slurm started per second (sacct Start, whole seconds) among this run's jobs whose
    name starts with ``name_prefix``: what the cluster gave that side, whoever submitted.
    None if they all started within one second."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
    out = await slurm(run.lab, "sacct", "--noheader", "--parsable2", "--allocations",
                      f"--starttime={start}", "--format=JobName,Start")
    starts = sorted(datetime.fromisoformat(at).timestamp() for name, _, at in
                    (line.partition("|") for line in out.splitlines())
                    if name.startswith(name_prefix) and at[:1].isdigit())
    span = starts[-1] - starts[0] if starts else 0.0
    return round((len(starts) - 1) / span, 2) if span > 0 else None


# -- 2. scheduler commands per poll cycle ----------------------------------------------------------
async def commands_per_cycle(run: Run, n: int) -> dict[str, Any]:
    """Hold N jobs, poll them with Bridgehead's backend and per job; cancel them all."""
    root = run.scratch / "held"
    backend = SlurmCliBackend(
        SlurmSettings(conf=Path(run.lab.slurm_conf), job_root=root,
                      bin_dir=Path(run.lab.bin_dir) if run.lab.bin_dir else None),
        SlurmCliConfig(state_dir=root))
    ids: list[str] = []
    try:
        ids = await submit_held(run, backend, n)
        steady = [await bridgehead_cycle(backend, ids) for _ in range(BRIDGEHEAD_CYCLES)]
        per_job = [await per_job_cycle(run.lab, ids) for _ in range(BASELINE_CYCLES)]
        await cancel(run.lab, ids[:ENDED_IN_CYCLE])
        with_ended = await bridgehead_cycle(backend, ids, expect_pending=False)
    finally:
        await cancel(run.lab, ids)
    bridgehead = max(sum(calls.values()) for calls, _ in steady)
    return {
        "commands": {"bridgehead": bridgehead, "per_job_baseline": max(c for c, _ in per_job)},
        "detail": {
            "jobs_in_flight": len(ids),
            "bridgehead_cycles": [dict(calls) for calls, _ in steady],
            "bridgehead_cycle_with_ended": {**with_ended[0], "ended": ENDED_IN_CYCLE},
            "bridgehead_cycle_ms": _ms_stats([ms for _, ms in steady]),
            "per_job_baseline_cycle_ms": _ms_stats([ms for _, ms in per_job]),
            "bridgehead_with_ended_cycle_ms": round(with_ended[1], 1),
        },
    }


async def submit_held(run: Run, backend: SlurmCliBackend, n: int) -> list[str]:
    """N held (pending) ``true`` jobs through the backend's own submit."""
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

    async def one(i: int) -> str:
        spec = JobSpec(cluster=run.lab.name, command=("true",), name=f"{run.prefix}-held-{i}",
                       scheduler_options=("--hold",))
        async with gate:
            return await backend.submit(f"held-{i}", spec)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def bridgehead_cycle(backend: SlurmCliBackend, ids: list[str], *,
                           expect_pending: bool = True) -> tuple[Counter[str], float]:
    """One ``poll`` over every id: (commands run, by name; milliseconds)."""
    backend.calls.clear()
    start = time.perf_counter()
    statuses = await backend.poll(ids)
    ms = (time.perf_counter() - start) * 1000
    if expect_pending and (len(statuses) != len(ids) or any(
            s.state is not JobState.SUBMITTED for s in statuses.values())):
        raise BenchError(f"held jobs not all pending: {Counter(s.state for s in statuses.values())}"
                         f", {len(ids) - len(statuses)} unknown")
    return Counter(backend.calls), ms


async def per_job_cycle(lab: Lab, ids: Sequence[str]) -> tuple[int, float]:
    """The per-job poller: ``squeue -h -j ID -o %T`` for each job, one after the other."""
    start = time.perf_counter()
    states = Counter([(await slurm(lab, "squeue", "-h", "-j", i, "-o", "%T")).strip()
                      for i in ids])
    ms = (time.perf_counter() - start) * 1000
    if states != Counter({"PENDING": len(ids)}):
        raise BenchError(f"per-job poller: held jobs not all pending: {dict(states)}")
    return len(ids), ms



def _mean(values: Sequence[int]) -> float:
    return round(statistics.fmean(values), 1) if values else 0.0


def _ms_stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}

