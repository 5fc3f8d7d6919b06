"""Launch an Airflow DAG run and follow it: task state changes, and every Bridgehead job's log
of the run as one stream (``bridgehead airflow run`` / ``follow``).

The jobs of a run are found by the labels ``BridgeheadOperator`` puts on every job
(``airflow.dag_id``, ``airflow.run_id``, ``airflow.task_id``, ``airflow.map_index``), so the
stream holds every job of every task, mapped ones and retries included, each line prefixed
``[task_id]`` or ``[task_id[map_index]]``. One loop polls, every ``poll_interval_s``: the run,
its task instances, new jobs, and the logs of the jobs that are due; a job whose log is quiet
is read less often (up to every ``MAX_QUIET_S``), so a run of hundreds of jobs costs a few
requests a second and no open connection per job.

The stream keeps the run's order: when a task instance's try ends (``TASK_ENDED``), the rest
of its jobs' logs is read and shown first, then its new state, then the states of the tasks
that started meanwhile.

This module needs httpx and the Bridgehead SDK only, never Airflow itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from bridgehead.airflow.rest import AirflowApi
from bridgehead.client import AsyncClient
from bridgehead.config import AirflowSettings, config_file, home
from bridgehead.domain.jobs import Job, JobSpec
from bridgehead.errors import InvalidSpec, NotFound, ServerUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

RUN_DONE = frozenset({"success", "failed"})
TASK_ENDED = frozenset({"success", "failed", "up_for_retry", "upstream_failed", "skipped",
                        "removed"})
"""Task instance states that end a try: its jobs' last lines are shown before the state."""
STDERR_MARK = "(stderr) "
MAX_QUIET_S = 5.0
"""A job whose log had nothing new is read again after 2x the last wait, up to this."""
READ_CONCURRENCY = 8
DRAIN_GRACE_S = 15.0
"""After the run ended, how long to wait for its jobs' last log bytes."""
TAIL_LINES = 10
"""Lines kept per task, to show with a failed task."""
FULL_SCAN_EVERY = 10
"""Cycles between full listings of the run's jobs (between them: only newer ids)."""
MAX_LINE = 64 << 10
"""A longer run of bytes without a newline is printed as a line of its own."""
GIVE_UP_S = 300.0
"""How long a follow rides out Airflow or Bridgehead being unreachable before it fails."""
RETRY_S = 2.0
"""Seconds between tries while unreachable."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a job's log, and whether it came from its stderr."""

    text: str
    stderr: bool = False

    @property
    def marked(self) -> str:
        """The text as the stream shows it: ``(stderr) `` before a stderr line."""
        return f"{STDERR_MARK}{self.text}" if self.stderr else self.text


class RunOutput(Protocol):
    """Where a follow writes, in the run's order: the CLI renders it
    (``bridgehead.cli.airflow.RunConsole``)."""

    def job_line(self, prefix: str, text: str, *, stderr: bool) -> None: ...
    def task_state(self, prefix: str, old: str | None, new: str, try_number: int) -> None: ...
    def note(self, text: str) -> None: ...
    def failed_task(self, prefix: str, jobs: str, last_lines: list[LogLine]) -> None: ...
    def run_state(self, dag_id: str, run_id: str, state: str) -> None: ...


def task_prefix(task_id: str, map_index: int) -> str:
    """``[task_id]``, or ``[task_id[3]]`` for a mapped task instance."""
    return f"[{task_id}]" if map_index < 0 else f"[{task_id}[{map_index}]]"


def parse_conf(pairs: Sequence[str], conf_json: str | None = None) -> dict[str, Any]:
    """``--conf-json`` (an object), then each ``--conf key=value`` on top: the value is JSON
    when it parses (``4``, ``true``, ``{"cores": 8}``), else the string as given."""
    conf: dict[str, Any] = {}
    if conf_json is not None:
        try:
            conf = json.loads(conf_json)
        except ValueError as exc:
            raise InvalidSpec(f"--conf-json is not valid JSON: {exc}") from exc
        if not isinstance(conf, dict):
            raise InvalidSpec("--conf-json must be a JSON object")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidSpec(f"--conf {pair!r} is not KEY=VALUE")
        try:
            conf[key.strip()] = json.loads(text)
        except ValueError:
            conf[key.strip()] = text
    return conf


def new_run_id() -> str:
    """``bh-launch-20250101T120000Z-a1b2c3``: sortable, and unique across launchers."""
    return f"bh-launch-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class TaskView:
    """What the follower knows of one task instance."""

    task_id: str
    map_index: int
    state: str | None = None
    try_number: int = 0
    jobs: list[str] = field(default_factory=list)
    tail: deque[LogLine] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    @property
    def prefix(self) -> str:
        return task_prefix(self.task_id, self.map_index)


class _Change(NamedTuple):
    """A task instance's new state (or try), not shown yet."""

    view: TaskView
    state: str
    try_number: int


@dataclass
class _Tail:
    """Where the follower is in one job's stdout and stderr."""

    job: Job
    task: TaskView
    offsets: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    partial: dict[str, bytes] = field(default_factory=lambda: {"stdout": b"", "stderr": b""})
    due: float = 0.0
    quiet_s: float = 0.0
    done: bool = False


@dataclass
class RunResult:
    """The end of a follow: the run's state, its task instances and its jobs."""

    dag_id: str
    run_id: str
    state: str
    tasks: list[TaskView]
    jobs: dict[str, Job]
    finished: bool = True
    """False when ``--timeout`` ended the follow before the run."""

    def to_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "run_id": self.run_id, "state": self.state,
                "finished": self.finished, "tasks": [
                    {"task_id": t.task_id, "map_index": t.map_index, "state": t.state,
                     "try_number": t.try_number,
                     "jobs": [_job_summary(self.jobs[j]) for j in t.jobs if j in self.jobs]}
                    for t in self.tasks]}


def _job_summary(job: Job) -> dict[str, Any]:
    return {"id": job.id, "state": job.state.value, "exit_code": job.exit_code}


class RunFollower:
    """Follow one DAG run until it ends (or ``timeout_s``): print task state changes and
    every one of its Bridgehead jobs' log lines as they arrive."""

    def __init__(self, api: AirflowApi, bh: AsyncClient, console: RunOutput, dag_id: str,
                 run_id: str, *, poll_s: float, timeout_s: float | None = None) -> None:
        self.api, self.bh, self.console = api, bh, console
        self.dag_id, self.run_id = dag_id, run_id
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self.tasks: dict[tuple[str, int], TaskView] = {}
        self.tails: dict[str, _Tail] = {}
        self._cursor: str | None = None
        self._reads = asyncio.Semaphore(READ_CONCURRENCY)
        self._down_since: float | None = None

    async def follow(self) -> RunResult:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        cycle, state = 0, "unknown"
        while True:
            state = await self._riding_out(self._cycle, full=cycle % FULL_SCAN_EVERY == 0,
                                           default=state)
            if state in RUN_DONE:
                while not await self._riding_out(self._wind_up, default=False):
                    pass
                return self._result(state)
            if deadline is not None and loop.time() >= deadline:
                return self._result(state, finished=False)
            cycle += 1
            await asyncio.sleep(self.poll_s)

    async def _cycle(self, *, full: bool) -> str:
        """One look at everything; returns the run's state. The tries that ended are shown
        after the rest of their jobs' logs, and before the tasks that started."""
        run = await self.api.get_run(self.dag_id, self.run_id)
        state = str(run["state"])
        changes = self._changes(await self.api.task_instances(self.dag_id, self.run_id))
        ended = [c for c in changes if c.state in TASK_ENDED]
        unseen = any(not c.view.jobs for c in ended)  # its jobs came and went since the last look
        await self._discover(full=full or unseen or state in RUN_DONE)
        await self._settle([c.view for c in ended])
        for change in [*ended, *(c for c in changes if c.state not in TASK_ENDED)]:
            self.console.task_state(change.view.prefix, change.view.state, change.state,
                                    change.try_number)
            change.view.state, change.view.try_number = change.state, change.try_number
        await self._pump()
        return state

    async def _wind_up(self) -> bool:
        """The run ended: the rest of every job's log, then the jobs' final states."""
        await self._drain()
        await self._discover(full=True)
        return True

    async def _riding_out(self, step: Callable[..., Awaitable[T]], *, default: T,
                          **kw: Any) -> T:
        """``step``; while Airflow or Bridgehead is unreachable, say so once and try again
        every few seconds, up to ``GIVE_UP_S`` (then the error goes up). Returns ``default``
        after a failed try, so the caller's loop goes on."""
        try:
            result = await step(**kw)
        except ServerUnavailable as exc:
            loop = asyncio.get_running_loop()
            if self._down_since is None:
                self._down_since = loop.time()
                self.console.note(f"{exc.message}; trying again")
            if loop.time() - self._down_since > GIVE_UP_S:
                raise
            await asyncio.sleep(RETRY_S)
            return default
        if self._down_since is not None:
            self.console.note("reachable again")
            self._down_since = None
        return result

    # -- task instances ----------------------------------------------------------------------
    def _changes(self, task_instances: list[dict[str, Any]]) -> list[_Change]:
        """The task instances whose state or try changed (their views keep the old one until
        the change is shown: a cycle cut short by an outage finds it again)."""
        changes = []
        for ti in task_instances:
            key = (ti["task_id"], int(ti.get("map_index", -1)))
            view = self.tasks.setdefault(key, TaskView(task_id=key[0], map_index=key[1]))
            state, tries = ti.get("state"), int(ti.get("try_number") or 0)
            if not state:
                view.state, view.try_number = None, tries
            elif state != view.state or tries != view.try_number:
                changes.append(_Change(view, state, tries))
        return changes

    # -- jobs and their logs -----------------------------------------------------------------
    async def _discover(self, *, full: bool) -> None:
        """Add the run's jobs not seen yet: the ids after the last one seen, and every so often
        all of them (ids made by several server replicas need not arrive in order)."""
        labels = {"airflow.dag_id": self.dag_id, "airflow.run_id": self.run_id}
        after = None if full else self._cursor
        while True:
            jobs, after = await self.bh.list_jobs(labels=labels, limit=500, after=after)
            for job in jobs:
                self._track(job)
            if jobs:
                self._cursor = max(self._cursor or "", jobs[-1].id)
            if after is None:
                return

    def _track(self, job: Job) -> None:
        tail = self.tails.get(job.id)
        if tail is not None:
            tail.job = job
            return
        task_id, map_index = _task_key(job)
        view = self.tasks.setdefault((task_id, map_index),
                                     TaskView(task_id=task_id, map_index=map_index))
        view.jobs.append(job.id)
        self.tails[job.id] = _Tail(job=job, task=view)
        logger.debug("following job %s of %s", job.id, view.prefix)

    async def _pump(self, *, everything: bool = False) -> None:
        """Read the logs of the jobs that are due (or of every unfinished one)."""
        now = time.monotonic()
        due = [t for t in self.tails.values() if not t.done and (everything or t.due <= now)]
        await asyncio.gather(*(self._read(t) for t in due))

    async def _settle(self, views: list[TaskView]) -> None:
        """Read these tasks' jobs' logs to their end, before their tries' end is shown. A job
        Bridgehead still runs is not waited for: it outlives its task, its later lines come
        later."""
        pending = [self.tails[j] for view in views for j in view.jobs
                   if not self.tails[j].done]
        while pending:
            more = await asyncio.gather(*(self._read(t) for t in pending))
            pending = [t for t, again in zip(pending, more, strict=True)
                       if again and not t.done]

    async def _read(self, tail: _Tail) -> bool:
        """Read both streams once; True when the job has ended and there may be more."""
        got, ended = False, True
        async with self._reads:
            for stream in ("stdout", "stderr"):
                data, tail.offsets[stream], state = await self.bh.read_logs(
                    tail.job.id, stream=stream, offset=tail.offsets[stream])
                got = got or bool(data)
                ended = ended and not data and state.terminal  # this stream is complete
                if data:
                    self._emit(tail, stream, tail.partial[stream] + data)
        if ended:
            self._finish(tail)
        tail.quiet_s = self.poll_s if got else min(MAX_QUIET_S, max(self.poll_s,
                                                                      tail.quiet_s * 2))
        tail.due = time.monotonic() + (0.0 if got and state.terminal else tail.quiet_s)
        return got and state.terminal

    def _emit(self, tail: _Tail, stream: str, data: bytes) -> None:
        *lines, rest = data.split(b"\n")
        if len(rest) > MAX_LINE:
            lines, rest = [*lines, rest], b""
        tail.partial[stream] = rest
        for raw in lines:
            self._line(tail, stream, raw)

    def _line(self, tail: _Tail, stream: str, raw: bytes) -> None:
        line = LogLine(raw.decode("utf-8", errors="replace").rstrip("\r"), stream == "stderr")
        self.console.job_line(tail.task.prefix, line.text, stderr=line.stderr)
        tail.task.tail.append(line)

    def _finish(self, tail: _Tail) -> None:
        for stream, rest in tail.partial.items():
            if rest:
                self._line(tail, stream, rest)
        tail.partial = {"stdout": b"", "stderr": b""}
        tail.done = True

    async def _drain(self) -> None:
        """The run ended: read what is left of every job's log; a job that outlives the run
        by more than ``DRAIN_GRACE_S`` is named and left running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_GRACE_S
        while any(not t.done for t in self.tails.values()) and loop.time() < deadline:
            await self._pump(everything=True)
            if any(not t.done for t in self.tails.values()):
                await asyncio.sleep(self.poll_s)
        for tail in self.tails.values():
            if not tail.done:
                self.console.note(f"{tail.task.prefix} job {tail.job.id} still {tail.job.state}: "
                                  "not waiting for it")

    def _result(self, state: str, *, finished: bool = True) -> RunResult:
        tasks = sorted(self.tasks.values(), key=lambda t: (t.task_id, t.map_index))
        jobs = {job_id: tail.job for job_id, tail in self.tails.items()}
        return RunResult(dag_id=self.dag_id, run_id=self.run_id, state=state, tasks=tasks,
                         jobs=jobs, finished=finished)


def _task_key(job: Job) -> tuple[str, int]:
    """(task_id, map_index) from the job's labels (a job without them: its own name)."""
    labels = job.spec.labels
    try:
        map_index = int(labels.get("airflow.map_index", "-1"))
    except ValueError:
        map_index = -1
    return labels.get("airflow.task_id", f"job {job.id}"), map_index


async def trigger_run(api: AirflowApi, console: RunOutput, dag_id: str,
                      conf: dict[str, Any], run_id: str | None = None) -> str:
    """Unpause the DAG if it is paused, trigger a run with ``conf``; returns its run id."""
    try:
        dag = await api.get_dag(dag_id)
    except NotFound as exc:
        raise NotFound(f"Airflow at {api.url} has no DAG {dag_id!r}") from exc
    if dag.get("has_import_errors"):
        console.note(f"DAG {dag_id} has import errors; the run may use an older version")
    if dag.get("is_paused"):
        await api.unpause(dag_id)
        console.note(f"unpaused DAG {dag_id}")
    run_id = run_id or new_run_id()
    await api.trigger(dag_id, run_id, conf)
    console.note(f"triggered {dag_id} run {run_id}")
    return run_id


def report(console: RunOutput, result: RunResult) -> None:
    """The end of a follow: the run's state, and each failed task with its last lines."""
    for task in result.tasks:
        if task.state != "failed":
            continue
        jobs = [result.jobs[j] for j in task.jobs if j in result.jobs]
        what = ", ".join(f"job {j.id} {j.state.value}"
                         + (f" (exit {j.exit_code})" if j.exit_code is not None else "")
                         for j in jobs) or "no Bridgehead job"
        console.failed_task(task.prefix, what, list(task.tail))
    if not result.finished:
        console.note(f"run {result.run_id} still {result.state}: stopped following "
                     "(the run goes on)")
    else:
        console.run_state(result.dag_id, result.run_id, result.state)


def follower_spec(dag_id: str, run_id: str, *, cluster: str, log_file: Path | None,
                  airflow: AirflowSettings, bridgehead_url: str) -> JobSpec:
    """The job that runs ``bridgehead airflow follow DAG RUN`` for a detached launch.

    Its environment holds no secret: only where to look (the Bridgehead and Airflow URLs, the
    Airflow user, ``BRIDGEHEAD_HOME`` and ``BRIDGEHEAD_CONFIG``); the token and password come
    from the config files where the job runs. Its labels are not the run's, so it does not
    follow itself."""
    command = ["-m", "bridgehead.cli.main", "airflow", "follow", dag_id, run_id]
    if log_file is not None:
        command += ["--log-file", str(log_file.absolute())]
    env = {"BRIDGEHEAD_HOME": str(home().absolute()),
           "BRIDGEHEAD_CONFIG": str(config_file().absolute()),
           "BRIDGEHEAD_URL": bridgehead_url, "BRIDGEHEAD_AIRFLOW__URL": airflow.url,
           "BRIDGEHEAD_AIRFLOW__API_VERSION": airflow.api_version,
           "BRIDGEHEAD_AIRFLOW__POLL_INTERVAL_S": str(airflow.poll_interval_s)}
    if airflow.username:
        env["BRIDGEHEAD_AIRFLOW__USERNAME"] = airflow.username
    return JobSpec(cluster=cluster, command=(sys.executable, *command),
                   name=f"follow {dag_id}/{run_id}"[:200], env=env,
                   labels={"bridgehead.follow.dag_id": dag_id,
                           "bridgehead.follow.run_id": run_id})
