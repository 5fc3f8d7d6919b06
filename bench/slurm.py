"""Slurm benchmark: Bridgehead on a real Slurm cluster against driving Slurm by hand.

    python bench/slurm.py [--quick] [--jobs N] [--held-jobs H] [--latency-jobs K]
                          [--poll-interval S] [--logs DIR] [--no-start-lab]

Runs on cluster ``alpha`` of ``scripts/slurm-lab`` (started if it is down; exit 2 if it cannot
start). Results go to ``bench/results/slurm.json``; ``bench/README.md`` explains each figure.

1. Throughput. N trivial jobs (``true``) through Bridgehead: a real server process (SQLite in a
   temporary dir) and one real agent process (``--backend slurm_cli``, poll interval 1 s, wake
   socket in the cluster's wake dir, so the EpilogSlurmctld/PrologSlurmctld hook wakes it). The
   client submits them with ``submit_many`` and follows the server's event stream (SSE); the
   wall time runs from the first submit to the receipt of the last ``succeeded`` event. The
   baseline: a loop of ``sbatch --parsable --job-name=... --wrap true`` (argv lists, no shell,
   ``SLURM_CONF`` set), then ``squeue`` every second until none of them is pending or running,
   then ``sacct`` until it shows every one COMPLETED with exit code 0 (the clock stops there).
   The baseline runs first, so Bridgehead's run meets the N finished job records the baseline
   left in slurmctld.
2. Scheduler commands per poll cycle with H jobs in flight (held with ``--hold``: pending, and
   cheap). In-process, ``SlurmCliBackend.poll`` over the H native ids, counting its ``calls``
   (one ``squeue``; one ``sacct`` more only when some left the queue: a few are cancelled for
   that cycle), against a per-job poller that runs ``squeue -h -j ID -o %T`` for each job (the
   reference systems' way). Both timed per cycle. Every held job is cancelled at the end.
3. Job end -> ``succeeded`` on the server. Each job sleeps a moment and writes ``time.time()``
   to a file as its last act; the client follows the event stream and takes the receipt time
   of the job's terminal event. Latency = receipt - recorded end. One agent with the hook (its
   wake socket in the wake dir) and then one without it (polling only), both with a long poll
   interval (5 s, the reference systems'). The K jobs go in ONE batch: a job submitted later
   would wake the agent (every submit starts a poll) and flatter the polling-only figure; the
   cluster's 2 CPUs run them two at a time, so their ends are spread out anyway.

Sizes: N = H = 500 and K = 30; ``--quick``: N = 20, H = 100, K = 20, under a minute (alpha
starts only 2-4 jobs a second, so N = 100 each way alone would take close to a minute).

Every process started here is stopped (TERM, then KILL) and every Slurm job of this run that
is still pending or running at the end is cancelled, also on failure. Jobs of other users of
the lab are left alone (and counted: they would skew the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from broker import (
    BATCH,
    STAMP,
    BenchError,
    Tokens,
    _until_online,
    console,
    latency_figures,
    make_tokens,
    process,
    publish,
    read_stamp,
    server,
    tail,
)
from rich.table import Table

from bridgehead.backends.slurm_cli import SlurmCliBackend, SlurmCliConfig
from bridgehead.client import AsyncClient
from bridgehead.config import SlurmSettings
from bridgehead.domain.jobs import JobSpec, JobState

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "slurm.json"
LAB_SCRIPT = ROOT / "scripts" / "slurm-lab"
LAB_DIR = Path(os.environ.get("SLURM_LAB_DIR", "/tmp/bh-slurm-lab"))
SLURM_CLUSTER = "alpha"
THROUGHPUT_POLL_S = 1.0
"""The throughput agent's poll interval: the baseline's squeue cadence."""
SQUEUE_EVERY_S = 1.0
ACTIVE_STATES = "PENDING,CONFIGURING,RUNNING,COMPLETING,SUSPENDED,REQUEUED,RESIZING,SIGNALING"
"""squeue --states for "still in flight" (the baseline's loop ends when none of its jobs is)."""
BRIDGEHEAD_CYCLES = 5
BASELINE_CYCLES = 3
ENDED_IN_CYCLE = 5
"""Held jobs cancelled before the one cycle that must also ask sacct."""
SUBMIT_CONCURRENCY = 8
"""Parallel sbatch calls to put the held jobs in place (setup, not measured)."""
LATENCY_SLEEP_S = (0.2, 0.8)
"""A latency job sleeps U(lo, hi) seconds before writing its end time."""
ENDED_BADLY = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                         "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
ACCOUNTING_WAIT_S = 60.0
SLURM_COMMAND_TIMEOUT_S = 60.0
STEP_TIMEOUT_S = 1800.0


class LabDown(RuntimeError):
    """The Slurm lab is down and could not be started."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    jobs: int
    """Throughput jobs, each way."""
    held_jobs: int
    """Jobs in flight for the poll-cycle count."""
    latency_jobs: int
    poll_interval_s: float
    quick: bool
    output: Path
    logs: Path | None
    """Where to copy the server's and agents' logs (else they go with the temporary dir)."""
    start_lab: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Lab:
    """Cluster alpha of the lab, as ``lab.json`` describes it."""

    slurm_conf: str
    wake_dir: str
    cpus: int

    def env(self) -> dict[str, str]:
        """The environment of a Slurm client command on this cluster."""
        return {**os.environ, "SLURM_CONF": self.slurm_conf}


@dataclass(frozen=True, slots=True)
class Run:
    """What one benchmark run shares: its lab, scratch dir and the prefix of its job names."""

    lab: Lab
    work: Path
    prefix: str


@dataclass(frozen=True, slots=True)
class Ended:
    state: JobState
    received: float
    """time.time() when the client read the job's terminal event."""
    at: float
    """The server's time of that event."""


# -- the lab and Slurm commands -----------------------------------------------------------------
def load_lab(*, start: bool = True) -> Lab:
    """The lab's alpha cluster; the lab is started (if ``start``) when ``status`` says it is
    down."""
    if _lab("status").returncode != 0:
        if not start:
            raise LabDown("scripts/slurm-lab status says the lab is down (--no-start-lab)")
        console.log("the Slurm lab is down; starting it: scripts/slurm-lab up")
        started = _lab("up", timeout=900)
        if started.returncode != 0:
            last = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LabDown(f"scripts/slurm-lab up failed ({last[0]})")
    try:
        info = json.loads((LAB_DIR / "lab.json").read_text())["clusters"][SLURM_CLUSTER]
    except (OSError, ValueError, KeyError) as exc:
        raise LabDown(f"{LAB_DIR / 'lab.json'} has no cluster {SLURM_CLUSTER}: {exc}") from exc
    return Lab(slurm_conf=info["slurm_conf"], wake_dir=info["wake_dir"], cpus=int(info["cpus"]))


def _lab(command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["bash", str(LAB_SCRIPT), command], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabDown(f"scripts/slurm-lab {command}: {exc}") from exc


async def slurm(lab: Lab, *argv: str, cwd: Path | None = None, check: bool = True) -> str:
    """One Slurm client command (an argv list, no shell); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=lab.env(), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SLURM_COMMAND_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise BenchError(f"{argv[0]} did not answer in {SLURM_COMMAND_TIMEOUT_S:.0f} s") from None
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])}...: exit {proc.returncode}: "
                         f"{err.decode(errors='replace').strip()[:300]}")
    return out.decode(errors="replace")


async def active_jobs(lab: Lab) -> dict[str, str]:
    """{native id: job name} of every pending or running job on the cluster."""
    out = await slurm(lab, "squeue", "--noheader", f"--states={ACTIVE_STATES}",
                      "--format=%i|%j")
    return dict(line.strip().split("|", 1) for line in out.splitlines() if "|" in line)


async def cancel(lab: Lab, ids: Sequence[str]) -> None:
    for lo in range(0, len(ids), 500):
        await slurm(lab, "scancel", *ids[lo:lo + 500], check=False)


async def cancel_ours(run: Run) -> int:
    """Cancel this run's jobs still pending or running; how many there were."""
    ours = [i for i, name in (await active_jobs(run.lab)).items()
            if name.startswith(run.prefix)]
    await cancel(run.lab, ours)
    return len(ours)


async def clean_up(run: Run) -> None:
    """Cancel what is left of this run on the cluster; a failure here is only reported."""
    try:
        left = await cancel_ours(run)
    except (BenchError, OSError, TimeoutError) as exc:
        console.log(f"[yellow]warning:[/] could not cancel this run's jobs "
                    f"(names {run.prefix}-*): {exc}")
        return
    if left:
        console.log(f"cancelled {left} leftover jobs of this run on alpha")


async def foreign_jobs(run: Run, since: float) -> list[str]:
    """Names of other users' jobs that were on the cluster since ``since`` (they skew the
    figures: alpha has 2 CPUs)."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
    out = await slurm(run.lab, "sacct", "--noheader", "--parsable2", "--allusers",
                      "--allocations", f"--starttime={start}", "--format=JobIDRaw,JobName",
                      check=False)
    names = [line.partition("|")[2] for line in out.splitlines() if "|" in line]
    return [name for name in names if not name.startswith(run.prefix)]


async def slurm_version(lab: Lab) -> str:
    return (await slurm(lab, "sbatch", "--version", check=False)).strip()


# -- Bridgehead processes and the event stream --------------------------------------------------
def clean_env(work: Path, **extra: str) -> dict[str, str]:
    """Our environment without BRIDGEHEAD_* (no stray settings), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
    return {**env, "BRIDGEHEAD_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1", **extra}


@contextlib.asynccontextmanager
async def slurm_agent(run: Run, url: str, token: str, name: str, *, poll_s: float,
                      hook: bool) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A real agent process for Bridgehead cluster ``name`` on Slurm cluster alpha (slurm_cli).
    With ``hook`` its wake socket is in the cluster's wake dir, where the hook looks."""
    argv = [sys.executable, "-m", "bridgehead.cli.main", "agent", "--cluster", name,
            "--server", url, "--state-dir", str(run.work / f"agent-{name}"),
            "--backend", "slurm_cli", "--poll-interval", str(poll_s)]
    if hook:
        argv += ["--wake-dir", run.lab.wake_dir]
    env = clean_env(run.work, BRIDGEHEAD_TOKEN=token, BRIDGEHEAD_LOG_LEVEL="INFO",
                    BRIDGEHEAD_SLURM__CONF=run.lab.slurm_conf,
                    BRIDGEHEAD_SLURM__JOB_ROOT=str(run.work / f"jobs-{name}"))
    async with process(argv, env, agent_log(run, name)) as proc:
        yield proc


def agent_log(run: Run, name: str) -> Path:
    return run.work / f"agent-{name}.log"


async def event_cursor(client: AsyncClient) -> int:
    """The seq of the newest event: a follower started there sees only what comes next."""
    cursor = 0
    while (page := await client.events(after=cursor, limit=1000))["events"]:
        cursor = int(page["next"])
    return cursor


class EventFollower:
    """Follows ``GET /v1/events/stream`` (SSE): per job, the server time of each state it
    reached, and the client's receipt time of its terminal event."""

    def __init__(self, url: str, token: str, after: int) -> None:
        self._http = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                       timeout=httpx.Timeout(10.0, read=None))
        self._after = after
        self._task: asyncio.Task[None] | None = None
        self._targets: set[str] = set()
        self._all_ended = asyncio.Event()
        self.reached: dict[str, dict[JobState, float]] = defaultdict(dict)
        self.ended: dict[str, Ended] = {}
        self.batches: Counter[tuple[JobState, float]] = Counter()
        """(state, server time) -> jobs: one entry per store transaction (claim, report)."""

    async def __aenter__(self) -> EventFollower:
        connected = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._follow(connected))
        await asyncio.wait([connected, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task
        await self._http.aclose()

    async def _follow(self, connected: asyncio.Future[None]) -> None:
        params = {"after": self._after}
        async with self._http.stream("GET", "/v1/events/stream", params=params) as response:
            response.raise_for_status()
            connected.set_result(None)
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    self._on_event(json.loads(line[6:]), time.time())

    def _on_event(self, event: dict[str, Any], received: float) -> None:
        data = event.get("data") or {}
        job_id, state = data.get("job_id"), data.get("state")
        if not job_id or not state:
            return
        state, at = JobState(state), datetime.fromisoformat(event["time"]).timestamp()
        self.reached[job_id].setdefault(state, at)
        self.batches[(state, at)] += 1
        if state.terminal:
            self.ended[job_id] = Ended(state, received, at)
            if self._targets and self._targets <= self.ended.keys():
                self._all_ended.set()

    async def until_ended(self, ids: Sequence[str], agent: subprocess.Popen[bytes],
                          log: Path, timeout: float = STEP_TIMEOUT_S) -> None:
        """Wait until every job of ``ids`` is terminal; BenchError if the agent or the stream
        dies or ``timeout`` passes."""
        self._targets = set(ids)
        if self._targets <= self.ended.keys():
            return
        deadline = time.monotonic() + timeout
        while not self._all_ended.is_set():
            if agent.poll() is not None:
                raise BenchError(f"the agent exited with {agent.returncode}:\n{tail(log)}")
            if self._task is not None and self._task.done():
                raise BenchError(f"the event stream ended: {self._task.exception()!r}")
            if time.monotonic() > deadline:
                left = len(self._targets - self.ended.keys())
                raise BenchError(f"{left} jobs not terminal after {timeout:.0f} s:\n{tail(log)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_ended.wait(), 1.0)

    def sizes(self, state: JobState) -> list[int]:
        """Jobs per transaction that moved jobs to ``state`` (claim sizes, report sizes)."""
        return [n for (s, _), n in self.batches.items() if s is state]


def check_all(ended: dict[str, Ended], ids: Sequence[str], what: str) -> None:
    """BenchError unless every job of ``ids`` ended ``succeeded``."""
    states = Counter(ended[i].state.value for i in ids if i in ended)
    if states[JobState.SUCCEEDED.value] != len(ids):
        raise BenchError(f"{what}: of {len(ids)} jobs, {dict(states)} "
                         f"({len(ids) - sum(states.values())} not terminal)")


async def check_on_server(admin: AsyncClient, cluster: str, ids: Sequence[str]) -> None:
    """BenchError unless the server lists every job of ``ids`` as ``succeeded``."""
    seen: set[str] = set()
    after: str | None = None
    while True:
        page, after = await admin.list_jobs(cluster=cluster, states=["succeeded"], limit=1000,
                                            after=after)
        seen.update(j.id for j in page)
        if after is None:
            break
    if missing := set(ids) - seen:
        raise BenchError(f"the server lists {len(missing)} of {len(ids)} jobs as not succeeded")


# -- 1. throughput --------------------------------------------------------------------------------
async def bridgehead_throughput(run: Run, url: str, tokens: Tokens, n: int) -> dict[str, Any]:
    """Submit N ``true`` jobs with submit_many; seconds until the last one is ``succeeded``."""
    name = SLURM_CLUSTER
    specs = [JobSpec(cluster=name, command=("true",), name=f"{run.prefix}-bh-{i}")
             for i in range(n)]
    async with AsyncClient(url, tokens.admin) as admin, \
            slurm_agent(run, url, tokens.agents[name], name, poll_s=THROUGHPUT_POLL_S,
                        hook=True) as agent:
        await _until_online(admin, name, agent, agent_log(run, name))
        async with EventFollower(url, tokens.admin, await event_cursor(admin)) as events:
            start = time.time()
            ids = [j.id for lo in range(0, n, BATCH)
                   for j in await admin.submit_many(specs[lo:lo + BATCH])]
            await events.until_ended(ids, agent, agent_log(run, name))
        await check_on_server(admin, name, ids)
    check_all(events.ended, ids, "Bridgehead")
    last = max(events.ended[i].received for i in ids)
    in_slurm = max(events.reached[i].get(JobState.SUBMITTED, events.ended[i].at) for i in ids)
    claims, reports = events.sizes(JobState.CLAIMED), events.sizes(JobState.SUCCEEDED)
    return {"wall_s": round(last - start, 3), "jobs_per_s": round(n / (last - start), 1),
            "all_in_slurm_s": round(in_slurm - start, 3),
            "claims": len(claims), "mean_claim_size": _mean(claims),
            "succeeded_reports": len(reports), "mean_succeeded_report_size": _mean(reports),
            "agent_poll_interval_s": THROUGHPUT_POLL_S, "hook": True}


async def direct_throughput(run: Run, n: int) -> dict[str, Any]:
    """sbatch N ``true`` jobs in a loop, squeue every second until none is in flight, then
    sacct until all show COMPLETED 0:0."""
    cwd = run.work / "direct"
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
    root = run.work / "held"
    backend = SlurmCliBackend(
        SlurmSettings(conf=Path(run.lab.slurm_conf), job_root=root),
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
        spec = JobSpec(cluster=SLURM_CLUSTER, command=("true",), name=f"{run.prefix}-held-{i}",
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


# -- 3. job end -> succeeded on the server -----------------------------------------------------
async def end_to_state(run: Run, url: str, tokens: Tokens, name: str, k: int, poll_s: float,
                       *, hook: bool) -> list[float]:
    """ms from each job's recorded end to the client's receipt of its terminal event."""
    stamps = run.work / f"stamps-{name}"
    stamps.mkdir()
    rng = random.Random(k)  # the same job durations for both agents
    specs = [JobSpec(cluster=name, name=f"{run.prefix}-lat-{name}-{i}", command=(
        sys.executable, "-c", STAMP, str(stamps / str(i)), f"{rng.uniform(*LATENCY_SLEEP_S):.3f}"))
        for i in range(k)]
    async with AsyncClient(url, tokens.admin) as admin, \
            slurm_agent(run, url, tokens.agents[name], name, poll_s=poll_s, hook=hook) as agent:
        await _until_online(admin, name, agent, agent_log(run, name))
        async with EventFollower(url, tokens.admin, await event_cursor(admin)) as events:
            ids = [j.id for j in await admin.submit_many(specs)]
            await events.until_ended(ids, agent, agent_log(run, name))
    check_all(events.ended, ids, f"latency ({name})")
    return [(events.ended[i].received - read_stamp(stamps / str(n))) * 1000
            for n, i in enumerate(ids)]


# -- the run ---------------------------------------------------------------------------------
LATENCY_RUNS = {"hook": ("alpha-hook", True), "polling": ("alpha-poll", False)}
"""JSON key -> (Bridgehead cluster, hook). Both on Slurm cluster alpha; one Bridgehead cluster
per agent, so that jobs of one run can never be claimed by another run's agent."""


async def run(cfg: BenchConfig, lab: Lab) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bh-bench-slurm-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        os.environ["BRIDGEHEAD_HOME"] = str(work / "home")  # no user config.toml/client.toml
        bench = Run(lab=lab, work=work, prefix=f"bhbench-{secrets.token_hex(3)}")
        since = time.time()
        try:
            results = await measure(cfg, bench)
        finally:
            await clean_up(bench)
            if cfg.logs is not None:
                keep_logs(work, cfg.logs)
        foreign = await foreign_jobs(bench, since)
    if foreign:
        console.log(f"[yellow]warning:[/] {len(foreign)} jobs of others ran on alpha during "
                    f"this run and competed for its {lab.cpus} CPUs: {', '.join(foreign[:5])}")
    results["machine"] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "slurm": await slurm_version(lab),
                          "alpha_cpus": lab.cpus}
    results["run"] = {"quick": cfg.quick, "foreign_jobs": len(foreign),
                      "foreign_job_names": sorted(set(foreign))[:20],
                      "duration_s": round(time.perf_counter() - started, 1),
                      "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return results


def keep_logs(work: Path, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for log in work.glob("*.log"):
        shutil.copy(log, to / log.name)
    console.log(f"logs copied to {to}")


async def measure(cfg: BenchConfig, bench: Run) -> dict[str, Any]:
    since = time.time()
    console.log(f"direct: {cfg.jobs} x sbatch --wrap true, squeue every {SQUEUE_EVERY_S} s")
    direct = await direct_throughput(bench, cfg.jobs)
    dsn = f"sqlite:///{bench.work / 'bridgehead.db'}"
    tokens = await make_tokens(dsn, [SLURM_CLUSTER, *(c for c, _ in LATENCY_RUNS.values())])
    async with server(dsn, bench.work, "sqlite") as url:
        console.log(f"bridgehead: {cfg.jobs} jobs through {url} and one slurm_cli agent")
        bridgehead = await bridgehead_throughput(bench, url, tokens, cfg.jobs)
        console.log(f"poll cycles: {cfg.held_jobs} held jobs")
        cycles = await commands_per_cycle(bench, cfg.held_jobs)
        latency: dict[str, Any] = {}
        for key, (name, hook) in LATENCY_RUNS.items():
            console.log(f"end -> succeeded, {key}: {cfg.latency_jobs} jobs, agent poll "
                        f"{cfg.poll_interval_s} s")
            samples = await end_to_state(bench, url, tokens, name, cfg.latency_jobs,
                                         cfg.poll_interval_s, hook=hook)
            latency[key] = latency_figures(samples, poll_interval_s=cfg.poll_interval_s)
    direct["slurm_starts_per_s"] = await slurm_start_rate(bench, since, f"{bench.prefix}-direct")
    bridgehead["slurm_starts_per_s"] = await slurm_start_rate(bench, since, f"{bench.prefix}-bh-")
    ratio = bridgehead["wall_s"] / direct["wall_s"]
    results: dict[str, Any] = {
        "jobs": cfg.jobs,
        "bridgehead_wall_s": bridgehead["wall_s"], "direct_wall_s": direct["wall_s"],
        "ratio": round(ratio, 2),
        "throughput": {"bridgehead": bridgehead, "direct": direct},
        "commands_per_cycle": cycles["commands"],
        "poll_cycle": cycles["detail"],
        "end_to_state_ms": latency,
    }
    results["aims"] = aims(results)
    return results


def _mean(values: Sequence[int]) -> float:
    return round(statistics.fmean(values), 1) if values else 0.0


def _ms_stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}


# -- report -----------------------------------------------------------------------------------
def aims(r: dict[str, Any]) -> dict[str, bool]:
    """The aims of the issue, for reference (never asserted)."""
    return {"bridgehead_wall <= 1.2 x direct": r["ratio"] <= 1.2,
            "commands_per_cycle <= 2": r["commands_per_cycle"]["bridgehead"] <= 2,
            "hook p50 < 1000 ms": r["end_to_state_ms"]["hook"]["p50"] < 1000}


def _met(flag: bool) -> str:
    return "[green]met[/]" if flag else "[red]not met[/]"


def _rate(per_s: float | None) -> str:
    return "-" if per_s is None else f"{per_s:.1f}"


def _latency(figures: dict[str, Any]) -> str:
    return f"p50 {figures['p50']:,.0f} / p99 {figures['p99']:,.0f}"


def table(r: dict[str, Any]) -> Table:
    a, t1, c = r["aims"], r["throughput"], r["poll_cycle"]
    hook, polling = r["end_to_state_ms"]["hook"], r["end_to_state_ms"]["polling"]
    t = Table(title=f"Bridgehead on Slurm (cluster alpha, {r['machine']['alpha_cpus']} CPUs; "
                    f"Slurm {r['machine']['slurm'].split()[-1]}; {r['machine']['nproc']} CPUs "
                    "on the machine)")
    for column in ("Measurement", "Bridgehead", "Baseline", "Ratio", "Aim", ""):
        t.add_column(column, justify="left" if column in ("Measurement", "Aim") else "right")
    t.add_row(f"{r['jobs']:,} x `true`: first submit -> all succeeded (s)",
              f"{r['bridgehead_wall_s']:.1f}", f"{r['direct_wall_s']:.1f}",
              f"{r['ratio']:.2f}x", "<= 1.2x sbatch + squeue",
              _met(a["bridgehead_wall <= 1.2 x direct"]))
    t.add_row("  of which: until all are in Slurm (s)",
              f"{t1['bridgehead']['all_in_slurm_s']:.1f}",
              f"{t1['direct']['all_in_slurm_s']:.1f}", "", "", "")
    t.add_row("  Slurm's job starts per second meanwhile",
              *(_rate(t1[side]["slurm_starts_per_s"]) for side in ("bridgehead", "direct")),
              "", "", "")
    t.add_row(f"Scheduler commands per poll cycle ({c['jobs_in_flight']:,} in flight)",
              f"{r['commands_per_cycle']['bridgehead']}",
              f"{r['commands_per_cycle']['per_job_baseline']:,}", "", "<= 2 (squeue + sacct)",
              _met(a["commands_per_cycle <= 2"]))
    bh_ms, per_job_ms = (c[key]["median"] for key in ("bridgehead_cycle_ms",
                                                       "per_job_baseline_cycle_ms"))
    t.add_row("Poll cycle time, median (ms)", f"{bh_ms:,.0f}", f"{per_job_ms:,.0f}",
              f"{bh_ms / per_job_ms:.3f}x", "", "")
    t.add_row(f"Job end -> server `succeeded` (ms), hook vs polling every "
              f"{hook['poll_interval_s']:g} s", _latency(hook), _latency(polling),
              f"{hook['p50'] / polling['p50']:.2f}x", "hook p50 < 1 s",
              _met(a["hook p50 < 1000 ms"]))
    return t


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (under a minute)")
    parser.add_argument("--jobs", type=int,
                        help="jobs for the throughput runs, each way (500; quick 20), and "
                             "the default of --held-jobs")
    parser.add_argument("--held-jobs", type=int,
                        help="jobs in flight for the poll-cycle count (--jobs; quick 100)")
    parser.add_argument("--latency-jobs", type=int,
                        help="jobs per latency run (30; quick 20)")
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="the latency agents' poll interval in seconds (5)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="copy the server and agent logs here")
    parser.add_argument("--no-start-lab", action="store_true",
                        help="exit 2 if the lab is down instead of starting it")
    args = parser.parse_args(argv)
    jobs = args.jobs or (20 if args.quick else 500)
    held = args.held_jobs or (100 if args.quick and not args.jobs else jobs)
    latency_jobs = args.latency_jobs or (20 if args.quick else 30)
    if jobs < 1 or held <= ENDED_IN_CYCLE or latency_jobs < 2 or args.poll_interval <= 0:
        parser.error(f"--jobs must be >= 1, --held-jobs > {ENDED_IN_CYCLE}, --latency-jobs >= 2,"
                     " --poll-interval > 0")
    return BenchConfig(jobs=jobs, held_jobs=held, latency_jobs=latency_jobs,
                       poll_interval_s=args.poll_interval,
                       quick=args.quick, output=args.output,
                       logs=args.logs, start_lab=not args.no_start_lab)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        results = asyncio.run(run(cfg, load_lab(start=cfg.start_lab)))
    except LabDown as exc:
        console.print(f"[bold red]Slurm lab unavailable:[/] {exc}", soft_wrap=True)
        return 2
    except (BenchError, OSError) as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}", soft_wrap=True)
        return 1
    publish(results, cfg.output, table(results), width=150)
    return 0


if __name__ == "__main__":
    sys.exit(main())
