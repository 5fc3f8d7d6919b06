"""The per-job supervisor of the local backend.

Run as ``python -m bridgehead.backends.local_runner <job_dir> <kill_grace_s>`` in a session of
its own, so it outlives the agent. It takes an exclusive ``flock`` on ``<job_dir>/lock`` for its
whole life (lock held == supervisor alive, immune to pid reuse), runs the job's command in a
session of its own with a minimal environment, enforces the walltime, turns SIGTERM or a
``cancel`` marker file into a TERM-then-KILL of the job's process group, and records the
outcome atomically in ``<job_dir>/result.json``. A result already present when it gets the
lock (the job was cancelled or declared lost before the supervisor came up) makes it exit
without running anything.

A job whose ``meta.json`` names a ``run_as`` user runs as that user (its uid, primary group
and supplementary groups, set after fork, before exec; HOME, USER and LOGNAME its own) while
the supervisor stays the agent's user: the job cannot read the supervisor's environment or the
agent's state directory. It enters its working dir (default: the user's home) as that user, so
it reaches only directories the user may; its stdout and stderr are files the supervisor opened
for it; a script is run through an open descriptor (``/proc/self/fd/N``), as the user owns it.

This module also defines the job directory itself (its file names, :class:`JobDir`, the lock
helpers) for :mod:`bridgehead.backends.local`, and imports only ``bridgehead.errors`` from
Bridgehead so the supervisor starts fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgehead.errors import BackendError
from bridgehead.wake import send_wake

SPEC = "spec.json"
META = "meta.json"
SCRIPT = "script"
STARTED = "started"
LOCK = "lock"
RUNNER_PID = "runner.pid"
CHILD = "child.json"
CANCEL = "cancel"
RESULT = "result.json"
RUNNER_LOG = "runner.log"

TICK_S = 0.1
"""How often the supervisor checks for a cancel request and the walltime."""
ENV_PASSTHROUGH = ("PATH", "HOME", "LANG")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees either nothing or all of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data))


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of ``pid`` from /proc, or None if unknown.

    Together with the pid it names one process for good: a reused pid has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def outcome(
    state: str,
    *,
    cores: int,
    started_at: float | None,
    exit_code: int | None = None,
    signum: int | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The content of result.json."""
    return {
        "state": state,
        "exit_code": exit_code,
        "signal": signum,
        "reason": reason,
        "started_at": started_at,
        "ended_at": time.time(),
        "cores": cores,
    }


@dataclass(frozen=True, slots=True)
class JobDir:
    """One job's directory: the whole truth about the job."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.path.is_dir()

    def started(self) -> bool:
        return self.file(STARTED).exists()

    def result(self) -> dict[str, Any] | None:
        return self._json(RESULT)

    def meta(self) -> dict[str, Any]:
        meta = self._json(META)
        if meta is None:
            raise BackendError(f"local job {self.id}: {META} is missing")
        return meta

    def runner_pid(self) -> int | None:
        try:
            return int(self.file(RUNNER_PID).read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise BackendError(f"local job {self.id}: bad pid") from exc

    def _json(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.file(name).read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise BackendError(f"local job {self.id}: {name} is not valid JSON") from exc
        return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Try to take the exclusive flock on ``path`` without waiting; yield whether we got it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive flock on ``path``, waiting for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_excl(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def is_runner(pid: int, job_dir: Path) -> bool:
    """Whether ``pid`` is the supervisor of ``job_dir`` (trusted when /proc is unavailable)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return os.fsencode(job_dir) in argv


def kill_orphan(job: JobDir) -> int | None:
    """SIGKILL the process group a dead supervisor left running, if it provably is the job's
    (same pid and start time); return its pgid."""
    try:
        child = json.loads(job.file(CHILD).read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid, start = child.get("pid"), child.get("start")
    if not pid or start is None or process_start_time(pid) != start:
        return None
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return None
    return int(pid)


class _Supervisor:
    def __init__(self, job_dir: Path, kill_grace_s: float) -> None:
        self.job_dir = job_dir
        self.kill_grace_s = kill_grace_s
        self.signalled = False
        self.meta = json.loads((job_dir / META).read_text())
        self.cores = int(self.meta.get("cores", 1))

    def wake(self) -> None:
        """Tell the agent to poll now (best effort: polling is the safety net)."""
        if self.meta.get("wake_socket"):
            send_wake(self.meta["wake_socket"], self.job_dir.name)

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signalled = True

    def cancel_requested(self) -> bool:
        return self.signalled or (self.job_dir / CANCEL).exists()

    def run(self) -> dict[str, Any]:
        spec = json.loads((self.job_dir / SPEC).read_text())
        started_at = time.time()
        if self.cancel_requested():
            return outcome("cancelled", cores=self.cores, started_at=None, reason="cancelled")
        try:
            child = self._spawn(spec)
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return outcome(
                "failed", cores=self.cores, started_at=started_at, exit_code=code, reason=str(exc)
            )
        write_json_atomic(
            self.job_dir / CHILD, {"pid": child.pid, "start": process_start_time(child.pid)}
        )
        self.wake()
        verdict = self._wait(child, spec.get("resources", {}).get("walltime_s"))
        _killpg(child.pid, signal.SIGKILL)  # stragglers the job left behind in its group
        return self._result(verdict, child.returncode, started_at, spec)

    def _spawn(self, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        env = {key: os.environ[key] for key in ENV_PASSTHROUGH if key in os.environ}
        env.setdefault("PATH", os.defpath)
        working_dir = self.meta.get("working_dir") or spec.get("working_dir")
        user = _RunAs.of(self.meta["run_as"]) if self.meta.get("run_as") else None
        if user is not None:
            env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
        env.update(spec.get("env") or {})
        env["BRIDGEHEAD_JOB_ID"] = self.job_dir.name
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(self.job_dir / "stdout", "wb"))
            err = stack.enter_context(open(self.job_dir / "stderr", "wb"))
            args = list(spec.get("args") or ())  # a script's arguments: its $1, $2...
            if user is None:
                argv = list(spec.get("command") or [str(self.job_dir / SCRIPT), *args])
                return subprocess.Popen(
                    argv, cwd=working_dir or self.job_dir, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True)
            argv, fds = list(spec.get("command") or ()), tuple[int, ...]()
            if not argv:  # the user may not reach the job dir: the script goes by descriptor
                script = stack.enter_context(open(self.job_dir / SCRIPT, "rb"))
                os.fchown(script.fileno(), user.uid, user.gid)
                argv, fds = [f"/proc/self/fd/{script.fileno()}", *args], (script.fileno(),)
            return user.popen(argv, working_dir or user.home, env=env, stdout=out, stderr=err,
                              pass_fds=fds)

    def _wait(self, child: subprocess.Popen[bytes], walltime_s: int | None) -> str | None:
        """Wait for the child; None if it ended by itself, else why we ended it."""
        ended = threading.Event()
        threading.Thread(target=_reap, args=(child, ended), daemon=True).start()
        deadline = time.monotonic() + walltime_s if walltime_s else None
        while not ended.wait(TICK_S):
            if self.cancel_requested():
                verdict = "cancelled"
                break
            if deadline is not None and time.monotonic() >= deadline:
                verdict = "timed_out"
                break
        else:
            return None
        _killpg(child.pid, signal.SIGTERM)
        if not ended.wait(self.kill_grace_s):
            _killpg(child.pid, signal.SIGKILL)
            ended.wait()
        return verdict

    def _result(
        self, verdict: str | None, returncode: int, started_at: float, spec: dict[str, Any]
    ) -> dict[str, Any]:
        signum = -returncode if returncode < 0 else None
        exit_code = 128 + signum if signum is not None else returncode
        if verdict == "cancelled":
            reason = "cancelled"
        elif verdict == "timed_out":
            reason = f"walltime of {spec['resources']['walltime_s']} s exceeded"
        elif returncode == 0:
            verdict, reason = "succeeded", None
        elif signum is not None:
            verdict, reason = "failed", f"killed by signal {_signal_name(signum)}"
        else:
            verdict, reason = "failed", f"exit code {returncode}"
        return outcome(
            verdict,
            cores=self.cores,
            started_at=started_at,
            exit_code=exit_code,
            signum=signum,
            reason=reason,
        )


@dataclass(frozen=True, slots=True)
class _RunAs:
    """The user a job runs as (from the user database, when the job starts)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def of(cls, name: str) -> _RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise BackendError(f"run_as: no user {name!r} on this host") from None
        home = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/"
        return cls(name, entry.pw_uid, entry.pw_gid,
                   tuple(os.getgrouplist(name, entry.pw_gid)), home)

    def popen(self, argv: list[str], working_dir: str, *, env: dict[str, str], stdout: Any,
              stderr: Any, pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
        """Start ``argv`` as this user; it enters ``working_dir`` once it is this user (the
        supervisor is single-threaded here: a ``preexec_fn`` is safe)."""
        try:
            return subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True, user=self.uid, group=self.gid,
                extra_groups=list(self.groups), pass_fds=pass_fds,
                preexec_fn=lambda: os.chdir(working_dir))
        except subprocess.SubprocessError as exc:  # only the chdir runs in preexec_fn
            raise PermissionError(
                f"user {self.name!r} cannot enter the working dir {working_dir}") from exc


def _reap(child: subprocess.Popen[bytes], ended: threading.Event) -> None:
    child.wait()
    ended.set()


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job_dir = Path(args[0])
    kill_grace_s = float(args[1]) if len(args) > 1 else 5.0
    lock_fd = os.open(job_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held until this process exits
    if (job_dir / RESULT).exists():
        return 0  # cancelled or declared lost before we came up
    cores = 1
    supervisor = None
    try:
        supervisor = _Supervisor(job_dir, kill_grace_s)
        cores = supervisor.cores
        signal.signal(signal.SIGTERM, supervisor.on_signal)
        signal.signal(signal.SIGINT, supervisor.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        write_atomic(job_dir / RUNNER_PID, f"{os.getpid()}\n")
        result = supervisor.run()
    except Exception as exc:  # the job must end with a result, whatever went wrong here
        result = outcome(
            "failed", cores=cores, started_at=None, reason=f"local supervisor error: {exc!r}"
        )
    write_json_atomic(job_dir / RESULT, result)
    if supervisor is not None:
        supervisor.wake()
    return 0


if __name__ == "__main__":
    sys.exit(main())
