"""``BridgeheadJobTrigger``: waits in the triggerer for one Bridgehead job to end.

It holds no worker slot and polls no scheduler: it long-polls the server's log endpoint for
stdout and stderr (which also answers when the job ends), writes each new log line into the
task log as it arrives, then fires one event with the job's outcome.

Airflow may run the same trigger twice at once (while moving it between triggerers): it only
reads, so both runs fire the same event. ``cleanup()`` never cancels the job — a trigger is
cleaned up on every reassignment; cancelling belongs to the operator.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from bridgehead.airflow._compat import BaseTrigger, TaskSuccessEvent, TriggerEvent
from bridgehead.airflow.hooks.bridgehead import BridgeheadHook
from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import Job
from bridgehead.errors import BridgeheadError, ServerUnavailable

logger = logging.getLogger(__name__)

TAIL_LINES = 20
LINES_PER_TURN = 50
"""Log lines a trigger writes to its task log in one turn (see :func:`_log_turn`)."""
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def _log_turn() -> asyncio.Lock:
    """The event loop's one right to write log lines. Writing a line costs tens of
    microseconds; 200 jobs ending at once bring 200 triggers tens of thousands of lines in
    the same loop step, which would block the triggerer for seconds. A trigger holds the
    turn until the next loop step, so at most :data:`LINES_PER_TURN` lines are written per
    step, whichever triggers they are from."""
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    return lock
MAX_LINE = 1000
_STREAMS = ("stdout", "stderr")


def job_event(job: Job, tail: list[str] | None = None) -> dict[str, Any]:
    """The trigger's event payload (plain JSON types only)."""
    return {"job_id": job.id, "state": job.state.value, "exit_code": job.exit_code,
            "reason": job.reason, "native_id": job.native_id, "cluster": job.cluster,
            "tail": tail}


def job_summary(event: dict[str, Any]) -> dict[str, Any]:
    """What a succeeded task returns (its ``return_value`` XCom)."""
    return {k: event.get(k) for k in ("job_id", "state", "exit_code", "native_id", "cluster")}


class BridgeheadJobTrigger(BaseTrigger):
    """Long-polls (or, with ``poll_interval_s``, polls every so many seconds: for a server
    behind a proxy that cuts long requests). Fires once, when job ``job_id`` has ended:
    ``{"job_id", "state", "exit_code", "reason", "native_id", "cluster", "tail"}``; or
    ``{"job_id", "state": "error", "reason"}`` when the server refuses (unknown job, bad
    token). With ``end_task_on_success``, a succeeded job ends the task right here
    (``TaskSuccessEvent``, Airflow >= 2.10) instead of resuming it on a worker; any other
    outcome still resumes it, so the task fails with the full message. A server that cannot
    be reached is retried."""

    def __init__(self, job_id: str, bridgehead_conn_id: str = BridgeheadHook.default_conn_name,
                 *, stream_logs: bool = True, wait_s: float = 25.0,
                 retry_s: float = 2.0, poll_interval_s: float | None = None,
                 end_task_on_success: bool = False) -> None:
        super().__init__()
        self.job_id = job_id
        self.bridgehead_conn_id = bridgehead_conn_id
        self.stream_logs = stream_logs
        self.wait_s = wait_s
        self.retry_s = retry_s
        self.poll_interval_s = poll_interval_s
        self.end_task_on_success = end_task_on_success and TaskSuccessEvent is not None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "job_id": self.job_id, "bridgehead_conn_id": self.bridgehead_conn_id,
            "stream_logs": self.stream_logs, "wait_s": self.wait_s, "retry_s": self.retry_s,
            "poll_interval_s": self.poll_interval_s,
            "end_task_on_success": self.end_task_on_success})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            bh = await BridgeheadHook(self.bridgehead_conn_id).aget_async_client()
        except Exception as exc:  # a missing/broken connection: fail the task with why
            yield TriggerEvent({"job_id": self.job_id, "state": "error", "reason": str(exc)})
            return
        async with bh:
            try:
                job, tail = await self._wait(bh)
            except BridgeheadError as exc:  # refused (4xx): retrying cannot help
                yield TriggerEvent({"job_id": self.job_id, "state": "error",
                                    "reason": exc.message})
                return
        event = job_event(job, tail)
        if self.end_task_on_success and job.state.value == "succeeded":
            # the task ends here, in the triggerer: no worker start-up between job and task
            self.log.info("Bridgehead job %s succeeded", job.id)
            yield TaskSuccessEvent(xcoms={"return_value": job_summary(event)})
            return
        yield TriggerEvent(event)

    async def _wait(self, bh: AsyncClient) -> tuple[Job, list[str]]:
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        if self.poll_interval_s is not None:  # plain polling, for servers behind proxies
            while not (await self._retrying(bh.get, self.job_id)).terminal:
                await asyncio.sleep(self.poll_interval_s)
        if self.stream_logs:
            await asyncio.gather(*(self._follow(bh, stream, tail) for stream in _STREAMS))
            return await self._retrying(bh.get, self.job_id), list(tail)
        while True:
            job = await self._retrying(bh.wait, self.job_id, until="terminal",
                                       timeout=self.wait_s)
            if job.terminal:
                return job, []

    async def _follow(self, bh: AsyncClient, stream: str, tail: deque[str]) -> None:
        """Copy one stream into the task log, a line at a time, until the job has ended and
        everything is read. A partial last line waits for its newline (or the end)."""
        offset, pending = 0, b""
        prefix = "" if stream == "stdout" else "[stderr] "
        while True:
            data, offset, state = await self._retrying(
                bh.read_logs, self.job_id, stream=stream, offset=offset, wait=self.wait_s)
            *lines, pending = (pending + data).split(b"\n")
            if not data and state.terminal:
                lines, pending = ([pending] if pending else []), b""
            for start in range(0, len(lines), LINES_PER_TURN):
                async with _log_turn():
                    for raw in lines[start:start + LINES_PER_TURN]:
                        line = raw.decode(errors="replace").rstrip("\r")[:MAX_LINE]
                        self.log.info("%s%s", prefix, line)
                        tail.append(prefix + line)
                    await asyncio.sleep(0)  # holding the turn: no other writes in this step
            if not data and state.terminal:
                return

    async def _retrying(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call`` until the server answers: a restart of Bridgehead must not fail tasks."""
        delay = self.retry_s
        while True:
            try:
                return await call(*args, **kwargs)
            except ServerUnavailable as exc:
                self.log.warning("Bridgehead unreachable (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def cleanup(self) -> None:
        """Nothing to release, and never a cancel: see the module docstring."""
