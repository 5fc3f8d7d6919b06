"""The processes of the ``spark_standalone`` provider's workers, as this host sees them: how a
worker is started (argv and a minimal environment), found again (its key's
``--properties-file`` in ``/proc``, never a pid file alone) and read (its log)."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

from bridgehead.pools.providers.base import ProviderError

WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
CONF = "worker.conf"
"""Each key's properties file (``<root>/<key>/worker.conf``): the worker's mark in ``/proc``."""
LOG = "worker.log"
PID = "worker.pid"
ENV_KEPT = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "JAVA_HOME"})
"""All a worker gets of the agent's environment (with ``LC_*``): the executors and drivers it
starts inherit its environment, and they run users' code, so the agent's token and cloud
credentials must not be in it."""


def spark_home(given: str) -> Path:
    """``given``, else ``$SPARK_HOME``, else the pyspark wheel's directory (ProviderError if
    none has ``bin/spark-class``)."""
    if given:
        home = Path(given)
    elif os.environ.get("SPARK_HOME"):
        home = Path(os.environ["SPARK_HOME"])
    else:
        spec = importlib.util.find_spec("pyspark")
        if spec is None or spec.origin is None:
            raise ProviderError("no Spark here: set the pool's options.spark_home or "
                                "SPARK_HOME, or install pyspark")
        home = Path(spec.origin).parent
    if not (home / "bin" / "spark-class").is_file():
        raise ProviderError(f"{home} has no bin/spark-class")
    return home


def worker_env(home: Path, host: str, daemon_memory: str, python: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ENV_KEPT or k.startswith("LC_")}
    env.update(SPARK_HOME=str(home), SPARK_LOCAL_IP=host, SPARK_NO_DAEMONIZE="1")
    if daemon_memory:
        env["SPARK_DAEMON_MEMORY"] = daemon_memory
    if python:
        env["PYSPARK_PYTHON"] = python
    return env


def record(home: Path, pid: int) -> None:
    """Note the worker just started for the key of ``home``: its pid and start time."""
    (home / PID).write_text(f"{pid} {_started(pid)}\n")


def running(root: Path) -> dict[str, int]:
    """Key -> pid of every live worker under ``root``: the processes whose argv gives
    ``--properties-file <root>/<key>/worker.conf``; of those, the main one (spark-class's
    short-lived helpers carry the same argv, as its children; its launcher is left out).
    While a process execs (spark-class's shebang, then its ``exec java``) its argv reads empty
    for a few milliseconds: a key is then found by the pid it was started with, if that
    process still has the start time noted (a pid reused by another process has not)."""
    keys = _by_argv(root)
    for pid_file in root.glob(f"*/{PID}"):
        key = pid_file.parent.name
        try:
            pid, started = (int(word) for word in pid_file.read_text().split())
        except (OSError, ValueError):
            continue
        if key not in keys and alive(pid) and _started(pid) == started:
            keys[key] = pid
    return keys


def _started(pid: int) -> int:
    """The process's start time (clock ticks since boot; 0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _by_argv(root: Path) -> dict[str, int]:
    found: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        if b"--properties-file" not in args or b"org.apache.spark.launcher.Main" in args:
            continue
        at = args.index(b"--properties-file") + 1
        conf = Path(os.fsdecode(args[at])) if at < len(args) else Path()
        state, parent = stat[stat.rindex(")") + 2:].split()[:2]
        if conf.parent.parent == root and conf.name == CONF and state not in ("Z", "X"):
            found[int(entry.name)] = (conf.parent.name, int(parent))
    return {key: pid for pid, (key, parent) in found.items() if parent not in found}


def alive(pid: int) -> bool:
    """A live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] not in ("Z", "X")


def log_of(home: Path) -> bytes:
    """The start of the worker's log (its first MiB: where Spark says how it started)."""
    try:
        with open(home / LOG, "rb") as log:
            return log.read(1 << 20)
    except OSError:
        return b""


def free_port(host: str) -> int:
    """A port free on ``host`` now (the worker's log says which it really bound)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
