"""``bridgehead slurm-event``: the PrologSlurmctld/EpilogSlurmctld hook.

slurmctld runs it (as SlurmUser, with a clean environment) when a job starts and when it
ends. It can tell Bridgehead two ways, both optional:

- ``--wake-dir DIR`` / ``--wake SOCKET``: one datagram to each local agent's wake socket
  (``bridgehead.wake``), so an agent on this host polls at once;
- ``--server URL --token-file FILE`` (``URL1,URL2``: replicas, tried in turn; ``--ca-bundle
  FILE`` for a server certificate of a private CA): the job's start or end as an event
  (``POST /v1/events``: type ``slurm.job.started`` / ``slurm.job.finished``, source
  ``slurm/<cluster>``, an id made of cluster, job id, context and start time, so a re-sent
  event is logged once). The server logs it, where rules see it (jobs Bridgehead did not
  submit too), and tells that cluster's agents to poll now, wherever they run. The token is
  an agent token of the cluster, in a file only SlurmUser may read (never on the command
  line). ``--cluster`` names the Bridgehead cluster when it differs from Slurm's ClusterName.

It must never hurt the cluster: a failing PrologSlurmctld requeues the job forever, and a slow
one holds the job's start. So it imports only the standard library (it starts in tens of
milliseconds), spends at most ``--timeout`` seconds (2) on the server, and exits 0 whatever
happens. An event the server cannot take now goes to ``--spool-dir`` (bounded: the oldest are
dropped past ``SPOOL_MAX`` files) and is sent by the next call that reaches the server; after a
request timed out, calls for ``DOWN_S`` seconds spool at once instead of waiting on a dead
server again (a refused connection fails at once: no need).
Polling stays the safety net: a lost event costs only latency. See deploy/slurm/.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridgehead.wake import send_wake

FIELDS = {
    "context": "SLURM_SCRIPT_CONTEXT",
    "cluster": "SLURM_CLUSTER_NAME",
    "job_id": "SLURM_JOB_ID",
    "tag": "SLURM_JOB_COMMENT",
    "exit": "SLURM_JOB_EXIT_CODE2",
}
KINDS = {"prolog_slurmctld": "started", "epilog_slurmctld": "finished"}
DATA_FIELDS = {
    "job_id": "SLURM_JOB_ID", "cluster": "SLURM_CLUSTER_NAME", "name": "SLURM_JOB_NAME",
    "user": "SLURM_JOB_USER", "account": "SLURM_JOB_ACCOUNT",
    "partition": "SLURM_JOB_PARTITION", "nodes": "SLURM_JOB_NODELIST",
    "comment": "SLURM_JOB_COMMENT", "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID", "start_time": "SLURM_JOB_START_TIME",
    "end_time": "SLURM_JOB_END_TIME", "restart_count": "SLURM_JOB_RESTART_COUNT",
    "exit_code2": "SLURM_JOB_EXIT_CODE2", "derived_exit_code": "SLURM_JOB_DERIVED_EC",
}
"""What an event's data holds (never the job's own environment: only these names)."""
OPTIONS = ("--wake", "--wake-dir", "--server", "--token-file", "--cluster", "--spool-dir",
           "--timeout", "--ca-bundle")
TIMEOUT_S = 2.0
SPOOL_MAX = 1000
"""Events kept in the spool dir at most; past it the oldest are dropped (polling still sees
every job's end, only the events of an outage that long are lost)."""
DOWN_S = 10.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


def message(env: dict[str, str]) -> str:
    """The datagram: what happened to which job (agents poll anyway; this is for logs)."""
    data = {key: env[var] for key, var in FIELDS.items() if var in env}
    data["source"] = "slurm"
    return json.dumps(data, separators=(",", ":"))


def options(args: list[str]) -> dict[str, list[str]]:
    """``--name value`` and ``--name=value`` of :data:`OPTIONS` (anything else is ignored: a
    hook must not fail on a typo; an option without a value is left out)."""
    found: dict[str, list[str]] = {}
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in OPTIONS:
            value = value if eq else next(it, "")
            if value:
                found.setdefault(name, []).append(value)
    return found


def sockets(args: list[str], env: dict[str, str]) -> list[str]:
    """The wake sockets named by ``--wake PATH`` and found in ``--wake-dir DIR`` (also
    ``BRIDGEHEAD_WAKE_DIR``, colon-separated)."""
    opts = options(args)
    paths = list(opts.get("--wake", []))
    dirs = [d for d in env.get("BRIDGEHEAD_WAKE_DIR", "").split(":") if d]
    for directory in dirs + opts.get("--wake-dir", []):
        paths += sorted(glob.glob(os.path.join(glob.escape(directory), "*.sock")))
    return paths


def job_event(env: dict[str, str], cluster: str | None = None) -> dict[str, Any] | None:
    """The event for ``POST /v1/events`` (None outside a slurmctld prolog/epilog)."""
    kind = KINDS.get(env.get("SLURM_SCRIPT_CONTEXT", ""))
    job_id = env.get("SLURM_JOB_ID", "")
    cluster = cluster or env.get("SLURM_CLUSTER_NAME", "")
    if kind is None or not job_id or not cluster:
        return None
    data: dict[str, Any] = {key: env[var] for key, var in DATA_FIELDS.items() if var in env}
    exit_code, _, signal = env.get("SLURM_JOB_EXIT_CODE2", "").partition(":")
    if exit_code.isdigit() and signal.isdigit():  # cancelled and timed out jobs show 0:0 too
        data["exit_code"], data["signal"] = int(exit_code), int(signal)
    parts = [cluster, job_id, kind]
    parts += [env[v] for v in ("SLURM_JOB_RESTART_COUNT", "SLURM_JOB_START_TIME") if env.get(v)]
    return {"type": f"slurm.job.{kind}", "source": f"slurm/{cluster}", "subject": job_id,
            "id": _UNSAFE.sub("_", ":".join(parts))[:256], "data": data}


def read_token(path: str) -> str:
    """The token in ``path``; OSError unless it is a regular file of this user that group and
    others may not read (as the agent's ``--token-file``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() \
                or info.st_mode & 0o077:
            raise PermissionError(f"token file {path}: not a file of uid {os.geteuid()} "
                                  "with mode 600")
        return fh.read(4096).decode().strip()


class Sender:
    """Posts events within one deadline; spools what it could not send."""

    def __init__(self, server: str, token: str, spool: Path | None, timeout: float,
                 ca_bundle: str | None = None) -> None:
        self.urls = [u.strip().rstrip("/") + "/v1/events" for u in server.split(",")
                     if u.strip()]
        """Each replica's (``--server URL1,URL2``), tried in turn: an event has an id, so
        one that reached a replica whose answer was lost is logged once all the same."""
        self.url = self.urls[0]
        self.ca_bundle = ca_bundle
        self.token = token
        self.spool = spool
        self.deadline = time.monotonic() + timeout
        self.slow = False
        """A request timed out: calls for the next DOWN_S seconds spool without trying."""

    def post(self, event: dict[str, Any]) -> bool:
        """True once a replica has it (or refused it for good: 4xx, never re-sent); False
        if none could answer in time (the event is for the spool)."""
        return any(self._post_to(url, event) for url in self.urls)

    def _post_to(self, url: str, event: dict[str, Any]) -> bool:
        import ssl
        import urllib.error
        import urllib.request

        left = self.deadline - time.monotonic()
        if left <= 0.05:
            return False
        self.url = url
        request = urllib.request.Request(
            url, data=json.dumps(event).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            context = (ssl.create_default_context(cafile=self.ca_bundle)
                       if self.ca_bundle and url.startswith("https:") else None)
            with urllib.request.urlopen(request, timeout=left, context=context) as answer:
                answer.read()
            return True
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                return False
            self.note(f"server refused event {event['id']}: HTTP {exc.code} "
                      f"{exc.read(300).decode(errors='replace')}")
            return True
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            self.slow = self.slow or isinstance(exc, TimeoutError) \
                or isinstance(reason, TimeoutError)
            self.note(f"server {self.url} unreachable: {exc}")
            return False

    def send(self, event: dict[str, Any]) -> None:
        if self.spool is not None and self._down():
            self.keep(event)
            return
        if not self.post(event):
            if self.slow:  # a refused connection costs nothing: only a timeout is worth avoiding
                self.mark_down()
            self.keep(event)
            return
        self.flush()

    def flush(self) -> None:
        """Send spooled events, oldest first, while time is left (one flusher at a time)."""
        if self.spool is None or not self.spool.is_dir():
            return
        with _lock(self.spool / ".lock") as mine:
            if not mine:
                return
            for path in _oldest_first(self.spool):
                try:
                    event = json.loads(path.read_bytes())
                except (OSError, ValueError):
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                if not self.post(event):
                    return
                with contextlib.suppress(OSError):
                    path.unlink()

    def keep(self, event: dict[str, Any]) -> None:
        """Write ``event`` to the spool (atomically, mode 600; a retried hook call's event
        replaces its first try's); drop the oldest past the cap."""
        if self.spool is None:
            return
        self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{event['id'].replace('/', '_')[:200]}.json"
        tmp = self.spool / f".{name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(event, fh)
        os.replace(tmp, self.spool / name)
        spooled = _oldest_first(self.spool)
        for old in spooled[:max(0, len(spooled) - SPOOL_MAX)]:
            with contextlib.suppress(OSError):
                old.unlink()

    def _down(self) -> bool:
        assert self.spool is not None
        try:
            return time.time() - (self.spool / ".down").stat().st_mtime < DOWN_S
        except OSError:
            return False

    def mark_down(self) -> None:
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
                (self.spool / ".down").touch()

    def note(self, text: str) -> None:
        """The last problem, in ``<spool>/last-error`` (the hook's output goes nowhere)."""
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
                (self.spool / "last-error").write_text(
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text[:500]}\n")


def _oldest_first(spool: Path) -> list[Path]:
    """The spooled events, oldest first (a file gone meanwhile sorts first, then is skipped)."""
    def age(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(spool.glob("*.json"), key=age)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[bool]:
    """True while this process holds ``path``'s lock; False (at once) if another one does."""
    import fcntl

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def post_event(args: list[str], env: dict[str, str]) -> None:
    """``--server``: send this call's event (and the spooled ones) to the server."""
    opts = options(args)
    server, token_file = opts.get("--server", [""])[-1], opts.get("--token-file", [""])[-1]
    spool = Path(opts["--spool-dir"][-1]) if "--spool-dir" in opts else None
    if not server:
        return
    try:
        timeout = float(opts.get("--timeout", [str(TIMEOUT_S)])[-1])
    except ValueError:
        timeout = TIMEOUT_S
    if not math.isfinite(timeout):
        timeout = TIMEOUT_S
    sender = Sender(server, "", spool, min(max(timeout, 0.1), 10.0),
                    opts.get("--ca-bundle", [None])[-1])
    event = job_event(env, opts.get("--cluster", [None])[-1])
    try:
        sender.token = read_token(token_file) if token_file else ""
    except (OSError, UnicodeDecodeError) as exc:
        sender.note(f"no token, nothing posted: {exc}")
        return
    if not sender.token:
        sender.note("no token (--token-file FILE), nothing posted")
        return
    if event is None:
        sender.flush()
    else:
        sender.send(event)


def main(args: list[str]) -> int:
    env = dict(os.environ)
    try:
        text = message(env)
        for path in sockets(args, env):
            send_wake(path, text)
    except BaseException:  # a hook that fails blocks the cluster's jobs: never
        pass
    try:
        post_event(args, env)
    except BaseException:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
