"""The local backend: the embedded default cluster, a tiny FIFO scheduler over core slots.

Every job is a directory ``<state_dir>/jobs/<job_id>/``; the native id is the Bridgehead job
id. The files in it are the whole truth, so a new agent on the same ``state_dir`` picks up
where a crashed one stopped, and each job runs at most once:

- ``spec.json``, ``meta.json`` (submit time, cores), ``script``: written in a staging
  directory and renamed into place, so a job directory is either absent or complete.
- ``started``: created with O_EXCL before the supervisor is spawned: the start is claimed once.
- ``lock``: flock-ed by the supervisor (:mod:`bridgehead.backends.local_runner`) for its whole
  life; held == supervisor alive.
- ``runner.pid``, ``child.json``, ``stdout``, ``stderr``, ``cancel`` (a cancel request).
- ``result.json``: the outcome, written once, atomically, under the lock.

``<state_dir>/active/<job_id>`` lists the jobs without a result, so a poll looks at those only.
Pending jobs start inside :meth:`LocalBackend.poll`, strictly FIFO, when their cores fit.

Isolation: a job runs as the agent's user, unless ``run_as`` (or the job's tenant in
``run_as_tenants``) names another one; then the supervisor, which stays the agent's user,
starts the job as that user (see :mod:`bridgehead.backends.local_runner`). The state
directory is the agent's alone (mode 700). Supervisors start with a minimal environment,
never the agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import bridgehead
from bridgehead.backends import local_runner as runner
from bridgehead.backends.base import (
    STREAMS,
    NativeStatus,
    confine_working_dir,
    read_file_range,
)
from bridgehead.backends.local_nodes import FixedSlots, LocalNodes, Placement
from bridgehead.domain.arrays import element_id
from bridgehead.domain.clusters import Capacity
from bridgehead.domain.jobs import JobSpec, JobState, Usage, array_indices
from bridgehead.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidSpec,
    SubmitRejected,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUPERVISORS: list[subprocess.Popen[bytes]] = []
"""Supervisors spawned by this process, kept until reaped."""
_SUPERVISORS_LOCK = threading.Lock()
_ORPHAN_ENTRY_AGE_S = 60.0
"""An ``active`` entry without a job directory is a submit that crashed halfway: dropped
after this long (a submit in progress renames its directory in milliseconds)."""


def _default_slots() -> int:
    return os.cpu_count() or 1


HONOURS = ("resources.memory_mb", "resources.walltime_s", *(
    f"#SBATCH --{o}" for o in ("ntasks", "cpus-per-task", "ntasks-per-node", "nodes", "mem",
                               "time", "job-name", "chdir")))
"""What a local job may ask for beyond cores and one node: the walltime (enforced), memory
(refused above the host's; not reserved or limited) and the ``#SBATCH`` directives that
become those requests, its name and working dir. A partition, account, GPUs, scheduler
options and any other directive (``--qos``, ``-o``...) are refused, naming them."""


def _host_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    except (ValueError, OSError):
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalBackendSettings:
    """``slots``: cores shared by the jobs. ``allowed_roots``: where working dirs may be
    (empty: anywhere). ``kill_grace_s``: SIGTERM to SIGKILL on cancel/walltime.
    ``start_grace_s``: how long a started job may wait for its supervisor before it is lost.
    ``wake_socket``: the agent's wake socket; supervisors send to it when a job starts and
    ends, so the agent polls at once (see ``bridgehead.wake``). ``run_as``: the user jobs run
    as (default: the agent's); ``run_as_tenants``: per tenant, instead of ``run_as``."""

    state_dir: Path
    slots: int = field(default_factory=_default_slots)
    allowed_roots: tuple[Path, ...] = ()
    kill_grace_s: float = 5.0
    start_grace_s: float = 10.0
    wake_socket: Path | None = None
    run_as: str | None = None
    run_as_tenants: Mapping[str, str] = field(default_factory=dict)

    def user_of(self, tenant: str) -> str | None:
        """The user a tenant's jobs run as; None for the agent's own."""
        user = self.run_as_tenants.get(tenant) or self.run_as
        return None if user is None or user == _own_user() else user

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "allowed_roots", tuple(Path(r) for r in self.allowed_roots))
        if self.slots < 1:
            raise ConfigError("local backend slots must be >= 1")
        if self.kill_grace_s < 0 or self.start_grace_s <= 0:
            raise ConfigError("local backend grace periods must be positive")


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a safe directory name, else InvalidSpec (no path traversal)."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidSpec(f"{job_id!r} is not a valid local job id ([A-Za-z0-9_-]{{1,64}})")
    return job_id


def _to_status(result: dict[str, Any]) -> NativeStatus:
    try:
        state = JobState(result["state"])
    except (KeyError, ValueError) as exc:
        raise BackendError(f"local job result has no valid state: {result!r}") from exc
    started, ended = result.get("started_at"), result.get("ended_at")
    usage = None
    if started is not None and ended is not None:
        usage = Usage(elapsed_s=max(0.0, ended - started), cores=result.get("cores", 0), nodes=1)
    return NativeStatus(
        state=state, exit_code=result.get("exit_code"), reason=result.get("reason"), usage=usage
    )


def _runner_env() -> dict[str, str]:
    """The supervisor's environment, built from nothing (never the agent's: a job may read its
    parent's environment, and the agent's may hold secrets): what the supervisor hands on to
    jobs (:data:`~bridgehead.backends.local_runner.ENV_PASSTHROUGH`), and PYTHONPATH with the
    directory this ``bridgehead`` came from, so the supervisor runs the same code."""
    env = {key: os.environ[key] for key in runner.ENV_PASSTHROUGH if key in os.environ}
    env.setdefault("PATH", os.defpath)
    root = str(Path(bridgehead.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


def _own_user() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


_CAP_SETGID, _CAP_SETUID = 6, 7


def may_switch_user() -> bool:
    """Whether this process may start processes as another user: CAP_SETUID and CAP_SETGID
    in its effective set (root has them unless they were dropped; without /proc, root)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    caps = next((int(line.split()[1], 16) for line in status.splitlines()
                 if line.startswith("CapEff:")), 0)
    return bool(caps >> _CAP_SETUID & 1 and caps >> _CAP_SETGID & 1)


def check_run_as(settings: LocalBackendSettings) -> None:
    """ConfigError, naming the setting, unless every ``run_as`` user exists and this process
    may switch to it."""
    named = {"run_as": settings.run_as,
             **{f"run_as_tenants.{t}": u for t, u in settings.run_as_tenants.items()}}
    for where, user in named.items():
        if user is None:
            continue
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(f"{where}: no user {user!r} on this host") from None
        if user != _own_user() and not may_switch_user():
            raise ConfigError(
                f"{where} = {user!r}: running jobs as another user needs an agent running as "
                f"root or with CAP_SETUID and CAP_SETGID (this one is {_own_user()!r})")


class LocalBackend:
    """Runs jobs as local processes, each under a supervisor that outlives the agent."""

    kind = "local"
    files_shared = True

    def __init__(self, settings: LocalBackendSettings) -> None:
        check_run_as(settings)
        self._settings = settings
        state_dir = settings.state_dir.absolute()
        self._jobs = state_dir / "jobs"
        self._active = state_dir / "active"
        self._staging = state_dir / "staging"
        self._scheduler_lock = state_dir / "scheduler.lock"
        self._free: int | None = None
        self.nodes: LocalNodes | None = None
        """Set by a ``local`` pool (:meth:`use_nodes`): jobs then run on its nodes' slots,
        not on the fixed ``slots``."""

    def use_nodes(self) -> LocalNodes:
        """This backend's nodes (made on the first call): from then on a job starts only on
        a ready node with room, and one job's cores are at most one node's."""
        if self.nodes is None:
            logger.info("local backend: a local pool's nodes replace its %d fixed slots",
                        self._settings.slots)
            self.nodes = LocalNodes()
            self._free = None
        return self.nodes

    @property
    def _max_cores(self) -> int:
        return self.nodes.largest if self.nodes is not None else self._settings.slots

    # -- the Backend protocol -------------------------------------------------------------

    async def submit(self, job_id: str, spec: JobSpec) -> str:
        check_job_id(job_id)
        if spec.array is not None:
            return await self._io(self._submit_array_sync, job_id, spec)
        return await self._io(self._submit_sync, job_id, spec)

    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        ids = [check_job_id(i) for i in native_ids]
        return await self._io(self._poll_sync, ids)

    async def cancel(self, native_ids: Sequence[str]) -> None:
        ids = [check_job_id(i) for i in native_ids]
        await self._io(self._cancel_sync, ids)

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        jobs = {tag: self._job(check_job_id(tag)) for tag in tags}
        return {tag: [tag] if await self._io(job.exists) else [] for tag, job in jobs.items()}

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        job = self._job(check_job_id(native_id))
        if stream not in STREAMS:
            raise InvalidSpec(f"log stream must be one of {', '.join(STREAMS)}, not {stream!r}")
        if offset < 0 or limit < 0:
            raise InvalidSpec("log offset and limit must be >= 0")
        return await self._io(read_file_range, job.file(stream), offset, limit)

    def free_slots(self) -> int | None:
        """Free cores minus the cores of pending jobs. Known after each poll; the first call
        before any poll reads the state directory."""
        if self._free is None:
            try:
                active = self._active_ids()
                self._schedule(active, {i: self._status(self._job(i)) for i in active}, start=False)
            except OSError as exc:
                raise self._unavailable(exc) from exc
        assert self._free is not None
        return self._free

    def capacity(self) -> Capacity:
        """Its slots on one node, the host's memory, and what it honours (:data:`HONOURS`)."""
        slots = self._max_cores
        source = (f"{slots} slots on one node" if self.nodes is None
                  else f"{slots} slots per node of a local pool")
        return Capacity(cores=slots, nodes=1, memory_mb=_host_memory_mb(), honours=HONOURS,
                        backend="local", source=source)

    async def close(self) -> None:
        """Nothing to do: running jobs outlive the agent (their supervisors are reaped by any
        backend's next poll in this process, or by init once the agent has exited)."""
        _reap_supervisors()

    # -- submit ---------------------------------------------------------------------------

    def _submit_sync(self, job_id: str, spec: JobSpec) -> str:
        job = self._job(job_id)
        if job.exists():
            logger.info("local job %s was already submitted", job_id)
            return job_id
        cores = self._check_fits(spec)
        working_dir = self._check_working_dir(spec.working_dir)
        self._jobs.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for directory in (self._jobs, self._active, self._staging):
            directory.mkdir(mode=0o700, exist_ok=True)
        wake = str(self._settings.wake_socket) if self._settings.wake_socket else None
        staging = self._stage(job_id, spec, {"cores": cores, "working_dir": working_dir,
                                             "wake_socket": wake,
                                             "run_as": self._settings.user_of(spec.tenant)})
        (self._active / job_id).touch()
        try:
            os.rename(staging, job.path)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if job.exists():
                logger.info("local job %s was submitted concurrently", job_id)
                return job_id
            raise
        if self._free is not None:
            self._free = max(0, self._free - cores)
        logger.debug("local job %s submitted (%d cores)", job_id, cores)
        return job_id

    def _submit_array_sync(self, job_id: str, spec: JobSpec) -> str:
        """An array job: one local job per element (``<job_id>_<index>``, its native id too),
        with ``BRIDGEHEAD_ARRAY_INDEX`` in its environment. Each element is submitted at most
        once, so submitting the array again after a crash completes it."""
        indices, throttle = array_indices(spec.array or "")
        if throttle is not None:
            raise SubmitRejected(f"array {spec.array}: the local backend runs elements as its "
                                 "slots allow and has no %N throttle (drop it, or use Slurm)")
        for index in indices:
            self._submit_sync(element_id(job_id, index), replace(
                spec, array=None, idempotency_key=None,
                env={**spec.env, "BRIDGEHEAD_ARRAY_INDEX": str(index)}))
        return job_id

    def _check_fits(self, spec: JobSpec) -> int:
        self.capacity().refuse_unhonoured(spec)  # the server refuses these at submit too
        resources, slots = spec.resources, self._max_cores
        if resources.nodes != 1:
            raise SubmitRejected(
                f"the local backend runs a job on one node, this job asks for {resources.nodes}"
            )
        if resources.capped_cores > slots:
            raise SubmitRejected(
                f"the job asks for {resources.capped_cores} cores but the local backend has "
                f"only {slots} slots"
            )
        return resources.capped_cores

    def _check_working_dir(self, working_dir: str | None) -> str | None:
        if working_dir is None:
            return None
        return confine_working_dir(working_dir, self._settings.allowed_roots)

    def _stage(self, job_id: str, spec: JobSpec, meta: dict[str, Any]) -> Path:
        staging = self._staging / f"{job_id}.{secrets.token_hex(4)}"
        staging.mkdir()
        (staging / runner.SPEC).write_text(json.dumps(spec.to_dict()))
        meta = {**meta, "submitted_at": time.time()}
        (staging / runner.META).write_text(json.dumps(meta))
        if spec.script is not None:
            script = staging / runner.SCRIPT
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
            with os.fdopen(fd, "w") as file:
                file.write(spec.script)
            script.chmod(0o700)
        return staging

    # -- poll and the scheduler -----------------------------------------------------------

    def _poll_sync(self, ids: list[str]) -> dict[str, NativeStatus]:
        _reap_supervisors()
        self._scheduler_lock.parent.mkdir(parents=True, exist_ok=True)
        with runner.locked(self._scheduler_lock):
            active = self._active_ids()
            statuses = {i: self._status(self._job(i)) for i in {*ids, *active}}
            self._schedule(active, statuses, start=True)
        return {i: status for i in ids if (status := statuses[i]) is not None}

    def _status(self, job: runner.JobDir) -> NativeStatus | None:
        if not job.exists():
            return None
        result = job.result()
        if result is not None:
            return _to_status(result)
        if not job.started():
            return NativeStatus(state=JobState.SUBMITTED)
        with runner.try_lock(job.file(runner.LOCK)) as locked:
            if not locked:
                running = job.runner_pid() is not None
                return NativeStatus(state=JobState.RUNNING if running else JobState.SUBMITTED)
            result = job.result()  # the supervisor may have finished in between
            if result is not None:
                return _to_status(result)
            reason = self._lost_reason(job)
            if reason is None:
                return NativeStatus(state=JobState.SUBMITTED)  # its supervisor is coming up
            return _to_status(self._finish_unsupervised(job, "lost", reason))

    def _lost_reason(self, job: runner.JobDir) -> str | None:
        pid = job.runner_pid()
        if pid is not None:
            return f"the job's local supervisor (pid {pid}) died without recording a result"
        grace = self._settings.start_grace_s
        if time.time() - job.file(runner.STARTED).stat().st_mtime > grace:
            return f"the job's local supervisor did not start within {grace:g} s"
        return None

    def _finish_unsupervised(self, job: runner.JobDir, state: str, reason: str) -> dict[str, Any]:
        """Record the outcome of a job whose supervisor is not running (lock held by us)."""
        pgid = runner.kill_orphan(job)
        if pgid is not None:
            reason = f"{reason}; its orphaned process group {pgid} was killed"
        cores = job.meta().get("cores", 1)
        result = runner.outcome(state, cores=cores, started_at=None, reason=reason)
        runner.write_json_atomic(job.file(runner.RESULT), result)
        logger.warning("local job %s is %s: %s", job.id, state, reason)
        return result

    def _schedule(
        self, active: list[str], statuses: dict[str, NativeStatus | None], *, start: bool
    ) -> None:
        running: dict[str, int] = {}
        pending = []
        for job_id in active:
            status = statuses[job_id]
            if status is None or status.state.terminal:
                self._drop_entry(job_id, orphan=status is None)
                continue
            job = self._job(job_id)
            meta = job.meta()
            cores = int(meta["cores"])
            if job.started():
                running[job_id] = cores
            else:
                pending.append((float(meta["submitted_at"]), job_id, cores))
        with self._placing(running) as room:
            waiting = 0
            for _, job_id, cores in sorted(pending):
                if not start or waiting or not room.fits(cores):
                    waiting += cores  # strict FIFO: nothing overtakes a job that does not fit
                    continue
                room.take(job_id, cores)
                self._start(self._job(job_id))
            self._free = max(0, room.free - waiting)

    @contextlib.contextmanager
    def _placing(self, running: dict[str, int]) -> Iterator[FixedSlots | Placement]:
        """Where pending jobs may start: the fixed slots, or the ready nodes."""
        if self.nodes is None:
            yield FixedSlots(self._settings.slots - sum(running.values()))
        else:
            with self.nodes.placing(running) as placement:
                yield placement

    def _start(self, job: runner.JobDir) -> None:
        try:
            runner.create_excl(job.file(runner.STARTED))
        except FileExistsError:
            return  # started by another agent, or cancelled
        grace = repr(self._settings.kill_grace_s)
        argv = [sys.executable, "-P", "-m", runner.__name__, str(job.path), grace]
        try:
            with open(job.file(runner.RUNNER_LOG), "ab") as log:
                proc = subprocess.Popen(
                    argv,
                    cwd=job.path,
                    env=_runner_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
        except OSError as exc:
            with runner.try_lock(job.file(runner.LOCK)) as locked:
                if locked and job.result() is None:
                    self._finish_unsupervised(job, "failed", f"cannot start a supervisor: {exc}")
            return
        with _SUPERVISORS_LOCK:
            _SUPERVISORS.append(proc)
        logger.debug("local job %s started", job.id)

    def _drop_entry(self, job_id: str, *, orphan: bool) -> None:
        entry = self._active / job_id
        with contextlib.suppress(FileNotFoundError):
            if not orphan or time.time() - entry.stat().st_mtime > _ORPHAN_ENTRY_AGE_S:
                entry.unlink()

    # -- cancel ---------------------------------------------------------------------------

    def _cancel_sync(self, ids: list[str]) -> None:
        for job_id in ids:
            job = self._job(job_id)
            # an array job has no directory: its live elements (<job_id>_<index>) have
            members = [job] if job.exists() else [
                self._job(i) for i in self._active_ids() if i.startswith(f"{job_id}_")]
            for one in members:
                if one.result() is None:
                    self._cancel_one(one)

    def _cancel_one(self, job: runner.JobDir) -> None:
        job.file(runner.CANCEL).touch()  # a supervisor coming up sees it before it spawns
        with runner.try_lock(job.file(runner.LOCK)) as locked:
            if not locked:
                pid = job.runner_pid()
                if pid is not None and runner.is_runner(pid, job.path):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                logger.info("local job %s: cancel requested", job.id)
                return
            if job.result() is not None:
                return
            with contextlib.suppress(FileExistsError):
                runner.create_excl(job.file(runner.STARTED))  # it can never start now
            if job.runner_pid() is None:
                reason = "cancelled before it started"
            else:
                reason = "cancelled after its local supervisor died"
            self._finish_unsupervised(job, "cancelled", reason)

    # -- helpers --------------------------------------------------------------------------

    def _job(self, job_id: str) -> runner.JobDir:
        return runner.JobDir(self._jobs / job_id)

    def _active_ids(self) -> list[str]:
        try:
            names = os.listdir(self._active)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if _JOB_ID.fullmatch(name))

    def _unavailable(self, exc: OSError) -> BackendUnavailable:
        return BackendUnavailable(f"local state directory {self._settings.state_dir}: {exc}")

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking file work in a thread; a failing state directory is "unavailable"."""
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise self._unavailable(exc) from exc


def _reap_supervisors() -> None:
    """Collect the exit status of this process's supervisors that have ended (no zombies,
    and no "still running" warnings from a dropped backend: the list is module-wide)."""
    with _SUPERVISORS_LOCK:
        _SUPERVISORS[:] = [proc for proc in _SUPERVISORS if proc.poll() is None]

