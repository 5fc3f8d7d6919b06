"""The Slurm benchmark's Bridgehead side: real agent processes on a lab cluster, the bench's
own slurmctld hook (a hook.d drop-in), the agents' wake-up counts and the server's event
stream (SSE), which times each job's states."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import BenchError, process, tail
from slurm_base import LAB_DIR, Run

from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import JobState

HEARTBEAT_S = 1.0
"""The bench agents' heartbeat: it carries their wake-up counts (checked after each run)."""
STEP_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True)
class Ended:
    state: JobState
    received: float
    """time.time() when the client read the job's terminal event."""
    at: float
    """The server's time of that event."""



def clean_env(work: Path, **extra: str) -> dict[str, str]:
    """Our environment without BRIDGEHEAD_* (no stray settings), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
    return {**env, "BRIDGEHEAD_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1", **extra}


@contextlib.asynccontextmanager
async def slurm_agent(run: Run, url: str, token: str, name: str, *, poll_s: float,
                      hook: bool, backend: str = "slurm_cli"
                      ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A real agent process for Bridgehead cluster ``name`` on the run's Slurm cluster. With
    ``hook`` its wake socket is in the cluster's wake dir, where the hook looks; without, only
    its polls and the server's "poll now" (a hook's event posted to the server) wake it."""
    argv = [sys.executable, "-m", "bridgehead.cli.main", "agent", "--cluster", name,
            "--server", url, "--state-dir", str(run.work / f"agent-{name}"),
            "--backend", backend, "--poll-interval", str(poll_s)]
    if hook:
        argv += ["--wake-dir", run.lab.wake_dir]
    env = clean_env(run.work, BRIDGEHEAD_TOKEN=token, BRIDGEHEAD_LOG_LEVEL="INFO",
                    BRIDGEHEAD_HEARTBEAT_S=str(HEARTBEAT_S), **run.lab.agent_env(),
                    BRIDGEHEAD_SLURM__JOB_ROOT=str(run.scratch / f"jobs-{name}"))
    async with process(argv, env, agent_log(run, name)) as proc:
        yield proc


@contextlib.contextmanager
def hook_drop_in(run: Run, *, server: str | None = None, cluster: str | None = None,
                 token: str | None = None) -> Iterator[Path]:
    """Make the lab's slurmctld hook run ``bridgehead slurm-event`` with THIS interpreter
    (a drop-in of the cluster's hook.d): wake the agents whose sockets are in the wake dir
    and, with ``server``, post each job's start/end there as Bridgehead cluster ``cluster``'s
    scheduler event. Yields the spool dir; the drop-in is removed on exit."""
    hook_dir = Path(run.lab.hook_dir)
    hook_dir.mkdir(parents=True, exist_ok=True)
    spool = run.work / f"hook-spool-{cluster or 'wake'}"
    argv = [sys.executable, "-m", "bridgehead.backends.slurm_event",
            "--wake-dir", run.lab.wake_dir]
    if server is not None and cluster is not None and token is not None:
        token_file = run.work / f"hook-{cluster}.token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        argv += ["--server", server, "--cluster", cluster, "--token-file", str(token_file),
                 "--spool-dir", str(spool)]
    script = hook_dir / f"{run.prefix}-{cluster or 'wake'}"
    tmp = hook_dir / f".{script.name}.tmp"
    tmp.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in argv) + "\n")
    tmp.chmod(0o755)
    tmp.rename(script)  # never run half-written
    try:
        yield spool
    finally:
        script.unlink(missing_ok=True)


async def wake_ups(admin: AsyncClient, name: str, by: str, at_least: int) -> int:
    """How often the agent of ``name`` was woken ``by`` ("socket": the hook's datagram,
    "server": the hook's event through the server), from its heartbeat; BenchError if fewer
    than ``at_least`` within a few heartbeats: then the hook did not fire, and a latency
    "with the hook" would be a polling figure."""
    deadline = time.monotonic() + HEARTBEAT_S * 5 + 5
    count = 0
    while True:
        for c in await admin.clusters():
            if c["name"] == name:
                count = int((c.get("info") or {}).get("wakes", {}).get(by, 0))
        if count >= at_least or time.monotonic() > deadline:
            break
        await asyncio.sleep(HEARTBEAT_S / 2)
    if count < at_least:
        raise BenchError(f"the agent of {name} was woken {count} times by {by!r} (expected "
                         f">= {at_least}): the lab's slurmctld hook did not fire (see "
                         f"{LAB_DIR}/<cluster>/hook.cmd and the hook's spool dir last-error)")
    return count


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
        self.received: dict[str, dict[JobState, float]] = defaultdict(dict)
        """Per job, the client's receipt time (time.time()) of the first event of each state."""
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
        self.received[job_id].setdefault(state, received)
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

