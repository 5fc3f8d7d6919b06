"""The Slurm benchmark's (4): a fan-out of N trivial elements as ONE Slurm array through
Bridgehead against N sbatch calls of the same script, as a user's loop makes them.

Both sides submit the same script (``#!/bin/sh`` + ``true``), held (``--hold``): what is
measured is the submission alone, the lab's few CPUs (shared with other users) run none of
the 2N jobs, and every one is cancelled at the end.

- Bridgehead: one ``POST /v1/jobs`` with ``array: "0-<N-1>"`` to a real server; one real
  slurm_cli agent (a Bridgehead cluster of its own) claims the parent and runs ONE
  ``sbatch --array``. ``submit_s``: the client's submit call returned (the submitter is free);
  ``native_ids_s``: the client received the parent's ``submitted`` event (the server then
  knows the array's Slurm id, so every element's ``N_<index>``).
- Baseline: ``sbatch --parsable --hold --job-name=... job.sh`` N times, one after the other;
  ``submit_s``: the loop's end (each sbatch returns once slurmctld holds its job).
- Both: ``all_in_slurm_s``, when ``squeue -r`` (polled every 50 ms from the first submit,
  the same poller for both sides) first lists all N jobs or elements.

The mechanism is checked, never assumed: the agent's log must say it submitted exactly one
job to Slurm, squeue must list N elements of ONE Slurm job, each carrying the parent's tag
(``--comment``), and the server must give each element its native id ``N_<index>``;
otherwise BenchError.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import BenchError, Tokens, tail, until_online
from slurm_agents import EventFollower, agent_log, event_cursor, slurm_agent
from slurm_base import Lab, Run, cancel, slurm

from bridgehead.client import AsyncClient
from bridgehead.domain.arrays import array_job_id
from bridgehead.domain.jobs import Job, JobSpec, JobState
from bridgehead.errors import BridgeheadError

SCRIPT = "#!/bin/sh\ntrue\n"
"""Every element's and every baseline job's script."""
AGENT_POLL_S = 1.0
IN_SLURM_TIMEOUT_S = 600.0
"""The longest either side may take to put all N in Slurm (the lab is shared)."""
SUBMITTED_TO_SLURM = re.compile(r"job \S+ submitted to Slurm as ")
"""The slurm_cli backend's log line for each sbatch that gave a job id."""


def array_cluster(bench: Run) -> str:
    """The Bridgehead cluster of the array's agent (no other agent of the run claims there)."""
    return f"{bench.lab.name}-array"


class SqueueCounter:
    """Polls ``squeue -r --name=NAME`` every 50 ms (a task) and records when it first lists
    ``n`` jobs or elements of that name: the same clock for both sides."""

    def __init__(self, lab: Lab, name: str, n: int, start: float) -> None:
        self.lab, self.name, self.n, self.start = lab, name, n, start
        self.rows: dict[str, str] = {}
        """{Slurm id (N_i for an element): comment} as the last poll listed them."""
        self.all_at: float | None = None
        self.polls = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SqueueCounter:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BenchError):
                await self._task

    async def _poll(self) -> None:
        while self.all_at is None:
            out = await slurm(self.lab, "squeue", "--noheader", "--array", "--states=all",
                              f"--name={self.name}", "--format=%i|%k", check=False)
            self.polls += 1
            self.rows = dict(line.strip().split("|", 1) for line in out.splitlines()
                             if "|" in line)
            if len(self.rows) >= self.n:
                self.all_at = time.time()
            else:
                await asyncio.sleep(0.05)

    async def until_all(self, alive: Callable[[], None]) -> float:
        """Seconds from ``start`` to the poll that listed all ``n``; ``alive`` raises if the
        side submitting them failed."""
        deadline = time.monotonic() + IN_SLURM_TIMEOUT_S
        assert self._task is not None
        while not self._task.done():
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"squeue lists {len(self.rows)} of {self.n} jobs named "
                                 f"{self.name} after {IN_SLURM_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.02)
        self._task.result()  # a failed squeue surfaces here
        assert self.all_at is not None
        return self.all_at - self.start


# -- the baseline: a user's sbatch loop -------------------------------------------------
async def sbatch_loop(run: Run, n: int) -> dict[str, Any]:
    """N held jobs of the same script, one sbatch after the other; cancelled at the end."""
    cwd = run.scratch / "array-loop"
    cwd.mkdir()
    (cwd / "job.sh").write_text(SCRIPT)
    name = f"{run.prefix}-loop"
    ids: list[str] = []
    start = time.time()
    try:
        async with SqueueCounter(run.lab, name, n, start) as seen:
            for _ in range(n):
                out = await slurm(run.lab, "sbatch", "--parsable", "--hold",
                                  f"--job-name={name}", str(cwd / "job.sh"), cwd=cwd)
                ids.append(out.strip().split(";")[0])
            submitted = time.time() - start
            in_slurm = await seen.until_all(lambda: None)
        if len(set(ids)) != n or set(seen.rows) != set(ids):
            raise BenchError(f"baseline: {n} sbatch calls gave {len(set(ids))} job ids, squeue "
                             f"lists {len(seen.rows)} of them")
    finally:
        await cancel(run.lab, ids)
    return {"submit_s": round(submitted, 3), "per_job_submit_s": round(submitted / n, 6),
            "all_in_slurm_s": round(in_slurm, 3), "sbatch_calls": n,
            "squeue_polls": seen.polls}


# -- Bridgehead: one array job ----------------------------------------------------------
async def bridgehead_array(run: Run, url: str, tokens: Tokens, n: int) -> dict[str, Any]:
    """One array job of N held elements through the server and one slurm_cli agent; the
    array is cancelled through the API (and with scancel) at the end."""
    cluster, name = array_cluster(run), f"{run.prefix}-array"
    log = agent_log(run, cluster)
    spec = JobSpec(cluster=cluster, name=name, script=SCRIPT, array=f"0-{n - 1}",
                   scheduler_options=("--hold",))
    parent: Job | None = None
    async with AsyncClient(url, tokens.admin) as admin, slurm_agent(
            run, url, tokens.agents[cluster], cluster, poll_s=AGENT_POLL_S,
            hook=False) as agent:
        await until_online(admin, cluster, agent, log)
        try:
            async with EventFollower(url, tokens.admin, await event_cursor(admin)) as events:
                start = time.time()
                async with SqueueCounter(run.lab, name, n, start) as seen:
                    parent = await submit(admin, spec)
                    submitted = time.time() - start
                    alive = _watch(parent.id, events, agent, log)
                    known = await _until_submitted(parent.id, events, alive) - start
                    in_slurm = await seen.until_all(alive)
            checked = await check_one_array(admin, parent, n, seen.rows, log)
        finally:
            if parent is not None:
                await cancel_array(run.lab, admin, parent.id)
    return {"elements": n, "submit_s": round(submitted, 3),
            "per_job_submit_s": round(submitted / n, 6), "native_ids_s": round(known, 3),
            "all_in_slurm_s": round(in_slurm, 3), **checked, "squeue_polls": seen.polls,
            "agent_poll_interval_s": AGENT_POLL_S}


async def submit(admin: AsyncClient, spec: JobSpec) -> Job:
    try:
        return await admin.submit(spec)
    except BridgeheadError as exc:
        raise BenchError(f"the server refused the array {spec.array}: {exc}") from exc


def _watch(parent: str, events: EventFollower, agent: subprocess.Popen[bytes],
           log: Path) -> Callable[[], None]:
    """A check that raises BenchError once the agent died or the array ended (refused)."""
    def alive() -> None:
        if agent.poll() is not None:
            raise BenchError(f"the array's agent exited with {agent.returncode}:\n{tail(log)}")
        if parent in events.ended:
            raise BenchError(f"the array ended {events.ended[parent].state.value} before all "
                             f"its elements were in Slurm:\n{tail(log)}")
    return alive


async def _until_submitted(parent: str, events: EventFollower,
                           alive: Callable[[], None]) -> float:
    """When the client received the parent's ``submitted`` event (time.time())."""
    deadline = time.monotonic() + IN_SLURM_TIMEOUT_S
    while (at := events.received[parent].get(JobState.SUBMITTED)) is None:
        alive()
        if time.monotonic() > deadline:
            raise BenchError(f"the array was not submitted in {IN_SLURM_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.01)
    return at


async def check_one_array(admin: AsyncClient, parent: Job, n: int, rows: dict[str, str],
                          log: Path) -> dict[str, Any]:
    """The sbatch calls the agent made (1) and the array's Slurm id, once it is proven to be
    ONE sbatch: BenchError unless the agent logged exactly one submission, squeue lists N
    elements of one job with the parent's tag, and the server gives each element its
    ``N_<index>``."""
    text = await asyncio.to_thread(log.read_text, errors="replace")
    made = len(SUBMITTED_TO_SLURM.findall(text))
    native = (await admin.get(parent.id)).native_id
    slurm_ids = Counter(array_job_id(i) for i in rows)
    tags = Counter(rows.values())
    if made != 1 or native is None or slurm_ids != Counter({native: n}) \
            or tags != Counter({parent.id: n}):
        raise BenchError(f"the array was not ONE sbatch: the agent logged {made} submissions, "
                         f"the server's native id is {native}, squeue lists {dict(slurm_ids)} "
                         f"with tags {dict(tags)} (expected {{{native}: {n}}})")
    elements, after = [], None
    while True:
        page, after = await admin.list_jobs(parent=parent.id, limit=1000, after=after)
        elements += page
        if after is None:
            break
    got = {e.array_index: e.native_id for e in elements}
    if got != {i: f"{native}_{i}" for i in range(n)}:
        wrong = sum(1 for i in range(n) if got.get(i) != f"{native}_{i}")
        raise BenchError(f"{wrong} of the array's {n} elements lack their native id {native}_i")
    return {"sbatch_calls": made, "slurm_array_id": native}


async def cancel_array(lab: Lab, admin: AsyncClient, parent: str,
                       timeout: float = 30.0) -> None:
    """Cancel the array through the API and wait (``timeout`` at most) until squeue lists
    none of its elements pending; then scancel it in any case (the agent may be gone)."""
    with contextlib.suppress(BridgeheadError):  # e.g. 409: it ended already
        await admin.cancel(parent)
    native = (await admin.get(parent)).native_id
    if native is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = await slurm(lab, "squeue", "--noheader", "--array", f"--jobs={native}",
                          "--states=PENDING,RUNNING", "--format=%i", check=False)
        if not out.strip():
            break
        await asyncio.sleep(0.5)
    await cancel(lab, [native])


# -- (4) --------------------------------------------------------------------------------
async def arrays(run: Run, url: str, tokens: Tokens, n: int) -> dict[str, Any]:
    """The baseline's loop, then Bridgehead's array (as (1): the baseline first)."""
    baseline = await sbatch_loop(run, n)
    bridgehead = await bridgehead_array(run, url, tokens, n)
    return {**bridgehead, "baseline": baseline,
            "submit_ratio": round(bridgehead["submit_s"] / baseline["submit_s"], 4),
            "all_in_slurm_ratio": round(bridgehead["all_in_slurm_s"]
                                        / baseline["all_in_slurm_s"], 4)}
