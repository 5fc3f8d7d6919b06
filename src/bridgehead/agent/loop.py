"""The per-cluster agent: claim -> submit -> poll (one batched call) -> report, with an outbox.

Exactly-once submission:
1. a claimed job is moved to ``submitting`` on the server (a synchronous CAS) before the
   scheduler is called; the native job is tagged with the Bridgehead id;
2. the native id goes into the durable outbox, then to the server;
3. at start (and every ``adopt`` cycle) the agent first flushes its outbox, then takes back its
   in-flight jobs: a job still ``submitting`` is looked up by tag on the scheduler — adopted if
   found, submitted if not. Never both.

Server outages: polling and log shipping go on; reports wait in the outbox and arrive in
order once the server answers again. Scheduler outages: back off, change no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from bridgehead.agent.outbox import Outbox
from bridgehead.agent.pools import PoolRunner
from bridgehead.backends.base import STREAMS, Adopts, Backend, NativeStatus, host_id
from bridgehead.client.core import AsyncClient
from bridgehead.config import AgentSettings
from bridgehead.domain.arrays import ARRAY_BACKENDS, element_jobs
from bridgehead.domain.clusters import refuse_spark
from bridgehead.domain.jobs import Job, JobState, Transition, attempt_tag
from bridgehead.errors import (
    AuthError,
    BackendUnavailable,
    ClientError,
    Forbidden,
    InvalidSpec,
    ServerUnavailable,
    SubmitRejected,
)
from bridgehead.store.base import LogChunk
from bridgehead.wake import WakeListener, prune_dead

logger = logging.getLogger(__name__)

SETTLE_POLL_S = 0.2
"""Poll interval while a job is settling (e.g. Slurm's COMPLETING, or accounting lagging)."""
CANCELLED_UNSEEN = "cancelled: after the cancel the scheduler kept no record of it"
MAX_CLAIM = 1000
"""The most jobs one claim takes (the free slots permitting; 1,000 is the API's limit): a wide
fan-out is leased at once, then handed to the scheduler; the leases of claimed jobs are renewed
with the agent's heartbeat, so a long submission round loses none."""


@dataclass
class Tracked:
    job: Job
    native_id: str | None = None
    state: JobState = JobState.SUBMITTED
    missing_since: float | None = None
    cancel_sent: bool = False
    offsets: dict[str, int] | None = None
    """Log bytes already recorded per stream; loaded from the outbox once, then kept here."""


def private_dir(path: Path) -> None:
    """Create ``path`` for the agent alone (mode 700), or make it so: it holds the outbox
    (every job's logs) and, on the local backend, the job files; jobs running as another user
    (``run_as``) must not read it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        logger.info("state dir %s: access for group and others removed (mode 700)", path)
        path.chmod(0o700)


def log_states(transitions: Iterable[Transition]) -> None:
    """One INFO line per state change this agent records (requests are DEBUG)."""
    for t in transitions:
        more = [f"as {t.native_id}" if t.native_id else "",
                f"exit {t.exit_code}" if t.exit_code is not None else "",
                f"({t.reason})" if t.reason and t.state.terminal else ""]
        logger.info("job %s %s%s", t.job_id, t.state.value, "".join(f" {m}" for m in more if m),
                    extra={"job_id": t.job_id, "state": t.state.value})


class Agent:
    def __init__(self, settings: AgentSettings, backend: Backend,
                 client: AsyncClient | None = None, *, handle_signals: bool = True) -> None:
        self.settings = settings
        self.handle_signals = handle_signals
        self.backend = backend
        self.client = client or AsyncClient(settings.server, settings.token,
                                            verify=settings.ca_bundle)
        private_dir(settings.state_dir)
        self.outbox = Outbox(settings.state_dir / "outbox.db")
        default_id = f"{socket.gethostname()}-{settings.cluster}-{secrets.token_hex(3)}"
        self.agent_id = self.outbox.meta("agent_id", default_id)
        self.tracked: dict[str, Tracked] = {}
        self._to_submit: dict[str, Job] = {}
        self._arrays: dict[str, Tracked] = {}
        """Array jobs on the scheduler, by parent id: never polled (their elements are, in
        ``tracked``), kept to cancel a whole array with one call."""
        self._uncertain: set[str] = set()
        """Jobs that may be on the scheduler already (a submit that failed as "unavailable", a
        lost answer): look the tag up before submitting them."""
        self._finished: dict[tuple[str, int], float] = {}
        """Attempts (job id, attempt) seen ending (monotonic time): their end may still be in
        the outbox, so the server's "in flight" list must not bring them back (a new attempt
        of a job whose attempt was lost is another key)."""
        self._stop = asyncio.Event()
        self._wake_poll = asyncio.Event()
        self._wake_flush = asyncio.Event()
        self.wakes: Counter[str] = Counter()
        """Push wake-ups by where they came from: ``socket`` (a local hook or supervisor),
        ``server`` (a scheduler event posted to the server, e.g. by a Slurm hook elsewhere)."""
        self._failpoint = settings.failpoint
        self.pools = PoolRunner(backend)
        """The providers of the cluster's elastic pools (none unless the server sends some)."""

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if self.handle_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        logger.info("agent %s serving cluster %s via %s", self.agent_id, self.settings.cluster,
                    self.settings.server)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings.wake_socket.parent.mkdir(parents=True, exist_ok=True)
        wake = WakeListener(self.settings.wake_socket, lambda _msg: self._woken("socket"))
        if wake.open() and self.settings.wake_dir is not None:
            prune_dead(self.settings.wake_dir, keep=self.settings.wake_socket)
        await self._until_server(self._flush_all)
        await self._until_server(self._adopt)
        with contextlib.suppress(ServerUnavailable, AuthError):  # as in the heartbeat loop
            await self._heartbeat()  # the cluster's pools, before any job is claimed
        tasks = [asyncio.create_task(self._supervise(name, fn), name=name) for name, fn in (
            ("claim", self._claim_loop), ("poll", self._poll_loop),
            ("flush", self._flush_loop), ("heartbeat", self._heartbeat_loop))]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pools.close()
        with contextlib.suppress(ClientError, AuthError, asyncio.TimeoutError):
            await asyncio.wait_for(self._flush_all(), 5)
        wake.close()
        await self.client.aclose()
        await self.backend.close()
        self.outbox.close()
        logger.info("agent %s stopped; %d jobs left to the next start", self.agent_id,
                    len(self.tracked))

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the agent's loops; an unexpected error is logged and the loop restarts."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("agent %s loop failed; restarting it in 1s", name)
                await asyncio.sleep(1.0)

    async def _until_server(self, step: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                return await step()
            except ServerUnavailable as exc:
                logger.warning("server unavailable (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- claim and submit ------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        delay = 0.2
        since: float | None = None  # the last answer's time: events between claims count
        while True:
            try:
                await self._submit_pending()
                free = self.backend.free_slots()
                room = MAX_CLAIM if free is None else min(free, MAX_CLAIM)
                cancelling = [i for i, t in (*self.tracked.items(), *self._arrays.items())
                              if t.cancel_sent]
                jobs, cancel, poll, since = await self.client.claim_work(
                    self.settings.cluster, self.agent_id, max_jobs=room,
                    wait_s=(2.0 if self._to_submit  # jobs wait for the scheduler to return
                            else 20.0 if room else self.settings.poll_interval_s),
                    cancelling=cancelling, poll_since=since)
                delay = 0.2
                if poll:
                    self._woken("server")
            except (ServerUnavailable, AuthError) as exc:
                logger.warning("claim failed: %s", exc)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            await self._cancel(cancel)
            for job in jobs:
                logger.info("job %s claimed", job.id,
                            extra={"job_id": job.id, "state": "claimed"})
                self._to_submit[job.id] = job
            await self._submit_pending()

    def _woken(self, by: str) -> None:
        """A push wake-up: poll the scheduler now."""
        self.wakes[by] += 1
        self._wake_poll.set()

    async def _submit_pending(self) -> None:
        if not self._to_submit:
            return
        await self._mark_submitting()
        try:
            uncertain = [job for job in self._to_submit.values() if job.id in self._uncertain]
            try:
                missing = await self._adopt_found(uncertain)
            except BackendUnavailable as exc:
                logger.warning("scheduler unavailable, will retry %d jobs: %s",
                               len(self._to_submit), exc)
                return
            for job in missing:  # not on the scheduler: submit it, unless it was cancelled
                self._uncertain.discard(job.id)
                if job.cancel_requested:
                    self._to_submit.pop(job.id, None)
                    self._record(Transition(job_id=job.id, state=JobState.CANCELLED,
                                            reason="cancelled before it reached the scheduler"))
                else:
                    logger.info("job %s not on the scheduler: submitting it", job.id)
            for job_id, job in list(self._to_submit.items()):
                try:
                    await self._submit(job)
                except BackendUnavailable as exc:
                    logger.warning("scheduler unavailable, will retry job %s: %s", job_id, exc)
                    return
                self._to_submit.pop(job_id, None)
        finally:
            self._wake_poll.set()  # one poll for the whole batch

    async def _mark_submitting(self) -> None:
        """Move every claimed job to ``submitting`` with ONE compare-and-set report, before the
        scheduler sees any of them. A refused move means the job was cancelled or taken over,
        or an earlier try of this report landed and only its answer was lost: the server says
        which, and in the last case the tag decides before the job is submitted."""
        claimed = [job for job in self._to_submit.values() if job.state is JobState.CLAIMED]
        if not claimed:
            return
        oks = await self.client.report(
            self.settings.cluster, self.agent_id,
            transitions=[Transition(job_id=j.id, state=JobState.SUBMITTING) for j in claimed])
        for job, ok in zip(claimed, oks, strict=True):
            if not ok:
                current = await self.client.get(job.id)
                if current.state is not JobState.SUBMITTING or current.agent_id != self.agent_id:
                    logger.info("job %s was cancelled or taken over before submission", job.id)
                    self._to_submit.pop(job.id, None)
                    continue
                self._uncertain.add(job.id)
            self._to_submit[job.id] = replace(job, state=JobState.SUBMITTING)

    async def _submit(self, job: Job) -> None:
        if job.spec.array is not None and self.backend.kind not in ARRAY_BACKENDS:
            self._record(Transition(
                job_id=job.id, state=JobState.FAILED,
                reason=f"array: cluster {job.cluster}'s {self.backend.kind} backend does not "
                       "run job arrays"))
            return
        try:  # a Spark job reaches a backend only if it says it runs Spark
            refuse_spark(job.spec, self.backend.kind, self.backend.capacity())
        except InvalidSpec as exc:
            self._record(Transition(job_id=job.id, state=JobState.FAILED, reason=exc.message))
            return
        if self._failpoint == "before-backend-submit":
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            native_id = await self.backend.submit(attempt_tag(job.id, job.attempt), job.spec)
        except BackendUnavailable:
            # a submit that timed out may have reached the scheduler: the tag decides next time
            self._uncertain.add(job.id)
            raise
        except (SubmitRejected, InvalidSpec) as exc:
            logger.warning("scheduler refused job %s: %s", job.id, exc)
            self._record(Transition(job_id=job.id, state=JobState.FAILED, reason=exc.message))
            return
        if self._failpoint == "after-backend-submit":
            os.kill(os.getpid(), signal.SIGKILL)
        self._uncertain.discard(job.id)
        self._record(Transition(job_id=job.id, state=JobState.SUBMITTED, native_id=native_id))
        self._track(job, native_id)

    def _track(self, job: Job, native_id: str) -> None:
        """Follow ``job``, now on the scheduler as ``native_id``: an array job through its
        elements (``N_<index>``), which the server makes submitted on the same report."""
        if job.elements is None:
            self.tracked[job.id] = Tracked(job=job, native_id=native_id)
            return
        self._arrays[job.id] = Tracked(job=job, native_id=native_id)
        for element in element_jobs(job, native_id):
            self.tracked.setdefault(element.id, Tracked(job=element,
                                                        native_id=element.native_id))

    async def _adopt(self) -> None:
        """Take back in-flight jobs (after a restart, or from an agent whose lease expired)."""
        now = time.monotonic()
        self._finished = {i: at for i, at in self._finished.items() if now - at < 600}
        for job in await self.client.adopt(self.settings.cluster, self.agent_id):
            if (job.id in self.tracked or job.id in self._to_submit
                    or (job.id, job.attempt) in self._finished or job.id in self._arrays):
                continue
            if job.state in (JobState.CLAIMED, JobState.SUBMITTING):
                self._to_submit[job.id] = job
                if job.state is JobState.SUBMITTING:  # may have reached the scheduler
                    self._uncertain.add(job.id)
            else:
                held = Tracked(job=job, native_id=job.native_id, state=job.state)
                (self.tracked if job.elements is None else self._arrays)[job.id] = held
                logger.info("adopted job %s (%s %s)", job.id, job.state, job.native_id)

    async def _adopt_found(self, jobs: list[Job]) -> list[Job]:
        """Adopt those of ``jobs`` the scheduler has under their tag (one query for all);
        return the others."""
        if not jobs:
            return []
        found = await self.backend.find([attempt_tag(job.id, job.attempt) for job in jobs])
        missing = []
        for job in jobs:
            natives = found.get(attempt_tag(job.id, job.attempt)) or []
            if not natives:
                missing.append(job)
                continue
            if len(natives) > 1:  # never by Bridgehead's doing: someone resubmitted by hand?
                logger.error("job %s is on the scheduler %d times (%s)", job.id, len(natives),
                             ", ".join(natives))
            logger.info("job %s found on the scheduler as %s: adopting it", job.id, natives[0])
            self._uncertain.discard(job.id)
            self._to_submit.pop(job.id, None)
            await self._relink(job, natives[0])
            self._record(Transition(job_id=job.id, state=JobState.SUBMITTED, native_id=natives[0]))
            self._track(job, natives[0])
        return missing

    async def _relink(self, job: Job, native_id: str) -> None:
        """Redo what the backend's submit does once the scheduler has a job (Slurm: link the
        script's -o/-e logs) for one found by its tag; the job is adopted whatever happens."""
        if not isinstance(self.backend, Adopts):
            return
        try:
            await self.backend.adopt(attempt_tag(job.id, job.attempt), job.spec, native_id)
        except (SubmitRejected, InvalidSpec, OSError) as exc:
            logger.warning("job %s adopted as %s, but its logs cannot be linked: %s", job.id,
                           native_id, exc)

    async def _cancel(self, job_ids: list[str]) -> None:
        targets = [t for i in job_ids
                   if (t := self.tracked.get(i) or self._arrays.get(i)) and not t.cancel_sent]
        natives = [t.native_id for t in targets if t.native_id]
        if natives:
            await self.backend.cancel(natives)
        for t in targets:
            t.cancel_sent = True
        if targets:
            self._wake_poll.set()

    # -- poll, logs, report ----------------------------------------------------------------
    async def _poll_loop(self) -> None:
        last_adopt = time.monotonic()
        while True:
            self._wake_poll.clear()  # before polling: a wake-up during the poll is kept
            interval = self.settings.poll_interval_s
            try:
                if await self.poll_once():
                    interval = min(interval, SETTLE_POLL_S)
            except BackendUnavailable as exc:
                logger.warning("scheduler unavailable: %s", exc)
            if time.monotonic() - last_adopt > self.settings.heartbeat_s * 6:
                with contextlib.suppress(ServerUnavailable):
                    await self._adopt()
                    last_adopt = time.monotonic()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake_poll.wait(), interval)

    async def poll_once(self) -> bool:
        """One batched poll; True if a job is settling (the scheduler is about to move it on:
        the next poll comes sooner)."""
        natives = {t.native_id: t for t in self.tracked.values() if t.native_id}
        statuses = await self.backend.poll(list(natives))
        settling = any(s.settling for s in statuses.values())
        now = time.time()
        transitions: list[Transition] = []
        chunks: list[LogChunk] = []
        for native_id, t in natives.items():
            status = statuses.get(native_id)
            if status is None and self._cancel_sent(t):
                # Slurm keeps no record at all of an array element cancelled while pending
                status = NativeStatus(state=JobState.CANCELLED, reason=CANCELLED_UNSEEN)
            if status is None:
                t.missing_since = t.missing_since or now
                if now - t.missing_since < self.settings.lost_after_s:
                    continue
                status = NativeStatus(state=JobState.LOST,
                                      reason="the scheduler no longer knows this job")
            t.missing_since = None
            chunks += await self._read_logs(t)
            if status.state is not t.state:
                transitions.append(Transition(
                    job_id=t.job.id, state=status.state, exit_code=status.exit_code,
                    reason=status.reason, usage=status.usage, at=now,
                    infrastructure=status.infrastructure))
                t.state = status.state
        self.outbox.put(transitions=transitions, logs=chunks)  # logs first, then states
        log_states(transitions)
        for chunk in chunks:  # only once the outbox has them
            offsets = self.tracked[chunk.job_id].offsets
            assert offsets is not None
            offsets[chunk.stream] = chunk.pos + len(chunk.data)
        self._wake_flush.set()
        for t in list(self.tracked.values()):
            if t.state.terminal:
                self.tracked.pop(t.job.id)
                self.outbox.forget_offsets(t.job.id)
                self._finished[t.job.id, t.job.attempt] = time.monotonic()
        if self._arrays:  # an array whose elements all ended is the server's to end
            live = {t.job.parent_id for t in self.tracked.values()}
            self._arrays = {i: t for i, t in self._arrays.items() if i in live}
        return settling

    def _cancel_sent(self, t: Tracked) -> bool:
        """Whether this agent asked the scheduler to cancel ``t`` (or its whole array)."""
        parent = self._arrays.get(t.job.parent_id or "")
        return t.cancel_sent or (parent is not None and parent.cancel_sent)

    async def _read_logs(self, t: Tracked) -> list[LogChunk]:
        """New log bytes of ``t``: read from the backend at the attempt's own offsets, sent at
        the job's (after the bytes of the attempts lost before it: ``log_base``)."""
        base = t.job.log_base or {}
        if t.offsets is None:
            t.offsets = {s: max(self.outbox.offset(t.job.id, s), base.get(s, 0))
                         for s in STREAMS}
        chunks = []
        for stream in STREAMS:
            pos = t.offsets[stream]
            while True:
                data = await self.backend.read_log(t.native_id or "", stream,
                                                   pos - base.get(stream, 0),
                                                   self.settings.log_chunk_bytes)
                if not data:
                    break
                chunks.append(LogChunk(job_id=t.job.id, stream=stream, pos=pos, data=data))
                pos += len(data)
                if len(data) < self.settings.log_chunk_bytes:
                    break
        return chunks

    def _record(self, *transitions: Transition) -> None:
        self.outbox.put(transitions=transitions)
        log_states(transitions)
        self._wake_flush.set()

    async def _flush_loop(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._flush_all()
                delay = 0.2
                self._wake_flush.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake_flush.wait(), self.settings.poll_interval_s)
            except (ServerUnavailable, AuthError) as exc:
                logger.warning("cannot report, %d reports kept in the outbox: %s",
                               len(self.outbox), exc)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _flush_all(self) -> None:
        """Send the outbox in order. A batch the server refuses as invalid is sent again in
        smaller pieces until the one bad report is found; only that one is dropped."""
        limit = 500
        while batch := self.outbox.peek(limit, 4 << 20):
            try:
                await self.client.report(self.settings.cluster, self.agent_id,
                                         transitions=batch.transitions, logs=batch.logs)
            except InvalidSpec as exc:
                if len(batch.transitions) + len(batch.logs) > 1:
                    limit = max(1, limit // 8)
                    continue
                logger.error("server refused a report, dropping it: %s", exc)
            except Forbidden as exc:
                if not any(c.job_id in exc.message for c in batch.logs):
                    raise  # not about a job: the token's scope, retried until it is fixed
                if len(batch.transitions) + len(batch.logs) > 1:
                    limit = max(1, limit // 8)
                    continue
                logger.warning("server refused a log chunk of a job this agent no longer "
                               "holds, dropping it: %s", exc)
            self.outbox.ack(batch.last_seq)
            limit = 500

    async def _heartbeat_loop(self) -> None:
        while True:
            with contextlib.suppress(ServerUnavailable, AuthError):
                await self._heartbeat()
            with contextlib.suppress(asyncio.TimeoutError):  # or sooner, to report a command
                await asyncio.wait_for(self.pools.ended.wait(), self.settings.heartbeat_s)
            self.pools.ended.clear()

    async def _heartbeat(self) -> None:
        """One heartbeat: the pools' nodes listed right before it, the scale commands of its
        answer started right after (they run beside the agent's loops, see agent.pools)."""
        nodes, errors = await self.pools.report()
        beat = functools.partial(self.client.heartbeat, self.settings.cluster, self.agent_id,
                                 backend=self.backend.kind, labels=self.settings.labels,
                                 info=self._info())
        try:
            pools, scale = await beat(nodes=nodes, node_errors=errors)
        except InvalidSpec as exc:  # never let the pools' report stop the leases' renewal
            if nodes is None and not errors:
                raise
            logger.error("server refused this agent's pool report, sent without it: %s", exc)
            pools, scale = await beat()
        self.pools.sent()
        self.pools.configure(pools)
        self.pools.apply(scale)

    def _info(self) -> dict[str, object]:
        """What the server shows of this agent, and what it checks jobs against: the largest
        job the cluster can run and, when jobs see this host's files, the host and the roots
        working dirs may be under (a client there defaults a job's working dir to its own)."""
        info: dict[str, object] = {
            "in_flight": len(self.tracked), "free_slots": self.backend.free_slots(),
            "outbox": len(self.outbox), "pid": os.getpid(), "wakes": dict(self.wakes)}
        capacity = self.backend.capacity()
        if capacity is not None:
            info["capacity"] = capacity.to_info()
        if self.backend.files_shared:
            info["files"] = {"host": host_id(),
                             "roots": [str(r) for r in self.settings.allowed_roots]}
        return info
