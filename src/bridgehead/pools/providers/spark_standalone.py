"""``spark_standalone``: a pool of Spark standalone Workers that the agent starts and stops on
its own host, joined to the master of its ``spark_standalone`` backend. A node is one Worker
process (``spark-class org.apache.spark.deploy.worker.Worker``, as ``scripts/spark-lab``
starts its own) offering the pool shape's ``cpus`` and ``memory_mb``.

Options: ``spark_home`` (default ``$SPARK_HOME``, else the pyspark wheel's), ``host`` (the
address each worker binds and advertises; default 127.0.0.1), ``daemon_memory`` (the worker
JVM's own heap, ``SPARK_DAEMON_MEMORY``; default Spark's) and ``stop_timeout_s`` (how long a
terminate waits for the stopped worker to exit; default 30).

- **launch** is idempotent by key: each key has a directory
  ``<state_dir>/spark-workers/<pool>/<key>/`` whose ``worker.conf`` is given to its worker as
  ``--properties-file``. A worker is found by that argument in the command lines under
  ``/proc``, or, in the few milliseconds an exec leaves a command line empty, by the pid it
  was started with if that process still has the start time noted then (a pid alone is never
  trusted: one reused by another process is never taken for a worker). So a launch asked
  again, by this agent or by one restarted after a crash, finds the worker and starts none.
  The work dir is the backend's ``work_dir`` when set (its driver logs are read there), else
  the key's directory.
- **list**: every live worker process of the pool; ``ready`` when the master's ``/json/``
  shows it ALIVE (matched by host and the port its log says it bound); ``jobs``: the drivers
  the master placed on it, or 1 if it has cores or memory in use (executors).
- **terminate** refuses a worker with work (:class:`NodeBusy`). Otherwise it first asks the
  worker to decommission itself (``SIGPWR``; the worker runs with
  ``spark.decommission.enabled``): it tells the master, which marks it DECOMMISSIONED and
  places nothing more on it. Only once ``/json/`` shows it DECOMMISSIONED and still without
  work does it get ``SIGTERM``. That order matters: on SIGTERM a Spark worker kills the
  executors and drivers it runs (``Worker.onStop``), so a worker is stopped only when the
  master says it has none and can give it none; if work came in between the two looks, the
  worker stays decommissioned, its work runs to its end, and terminate answers NodeBusy (asked
  again once the scaler sees it idle). ``SIGKILL`` is never sent: a worker that has not exited
  after ``stop_timeout_s`` is an error, and the next terminate asks again.

Commands are argv lists (never a shell string); the workers run in sessions of their own, so
an agent that stops does not take them along (a restarted agent finds them by their key). A
worker gets only a few of the agent's environment variables (``spark_procs.ENV_KEPT``): what
it starts runs users' code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx

from bridgehead.backends.base import Backend
from bridgehead.domain.pools import InvalidPool, Pool
from bridgehead.pools.providers import spark_procs as procs
from bridgehead.pools.providers.base import Listed, NodeBusy, ProviderError
from bridgehead.pools.providers.options import Option, read_options

_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")
_MEMORY = re.compile(r"|[1-9][0-9]*[kmgKMG]")
_STARTED = re.compile(rb"Starting Spark worker (\S+):(\d+) with")
_SIGPWR_HANDLED = b"Registering SIGPWR handler to trigger decommissioning"
"""The worker's log line once SIGPWR means decommission (without it, SIGPWR ends the worker:
never sent then, the worker is not ALIVE or its decommission is off)."""
JSON_TIMEOUT_S = 10.0
Nodes = list[Listed]
"""(An alias: inside the provider class, ``list`` is the interface's method.)"""


class SparkWorkerProvider:
    name: ClassVar[str] = "spark_standalone"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "spark_home": Option(kind=str, default=""),
        "host": Option(kind=str, default="127.0.0.1"),
        "daemon_memory": Option(kind=str, default=""),
        "stop_timeout_s": Option(kind=float, default=30.0, low=1, high=3600),
    }

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        options = read_options(pool, self.OPTIONS)
        self.host = str(options["host"])
        self.daemon_memory = str(options["daemon_memory"])
        self.stop_timeout_s = float(options["stop_timeout_s"])
        self.spark_home = str(options["spark_home"])
        if not _HOST.fullmatch(self.host):
            raise InvalidPool("must be a host name or address", ("options", "host"))
        if not _MEMORY.fullmatch(self.daemon_memory):
            raise InvalidPool("must be a JVM heap size like 512m or 1g", ("options",
                                                                          "daemon_memory"))
        if self.spark_home and not Path(self.spark_home).is_absolute():
            raise InvalidPool("must be an absolute path", ("options", "spark_home"))
        self.settings: Any = None
        self.root: Path | None = None
        if backend is not None and getattr(backend, "kind", None) != "spark_standalone":
            raise ProviderError(f"the spark_standalone provider runs only in an agent of the "
                                f"spark_standalone backend (this one's is "
                                f"{getattr(backend, 'kind', '?')})")
        if backend is not None:
            self.settings = backend.settings  # type: ignore[attr-defined]
            self.root = (backend.fences.parent  # type: ignore[attr-defined]
                         / "spark-workers" / pool.name)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Workers this process started (reaped once they exit)."""
        self._lock = asyncio.Lock()

    # -- the interface ---------------------------------------------------------------------
    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        root = self._root()
        for key in keys:
            if not _KEY.fullmatch(key):
                raise ProviderError(f"pool {pool.name}: key {key!r} cannot name a directory")
        async with self._lock:
            running = await asyncio.to_thread(self._running, root)
            for key in keys:
                if key not in running:
                    await asyncio.to_thread(self._start, pool, root / key)
        return {key: key for key in keys}

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        root = self._root()
        async with self._lock:
            running = await asyncio.to_thread(self._running, root)
            stopping = {key: running[key] for key in provider_ids if key in running}
            if not stopping:
                return  # gone already
            workers = await self._workers()
            busy = [k for k in stopping if _jobs(self._entry(workers, root / k), workers)]
            if busy:
                raise NodeBusy(f"pool {pool.name}: {', '.join(busy)} has Spark work on it")
            for key, pid in stopping.items():
                entry = self._entry(workers, root / key)
                handled = _SIGPWR_HANDLED in procs.log_of(root / key)
                if entry is not None and entry.get("state") == "ALIVE" and handled:
                    await self._decommission(pool, key, pid, root / key)
            for pid in stopping.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            await self._gone(pool, stopping)

    async def list(self, pools: Sequence[Pool]) -> Nodes:
        if not pools:
            return []
        root = self._root()
        async with self._lock:
            running = await asyncio.to_thread(self._running, root)
            workers = await self._workers() if running else {}
        out: Nodes = []
        for key in sorted(running):
            entry = self._entry(workers, root / key)
            out.append(Listed(provider_id=key, pool=pools[0].name, key=key,
                              ready=entry is not None and entry.get("state") == "ALIVE",
                              jobs=_jobs(entry, workers)))
        return out

    # -- stopping --------------------------------------------------------------------------
    async def _decommission(self, pool: Pool, key: str, pid: int, home: Path) -> None:
        """SIGPWR, then wait for the master to show the worker DECOMMISSIONED; NodeBusy if
        work reached it meanwhile (it stays decommissioned: nothing more goes there)."""
        os.kill(pid, signal.SIGPWR)
        deadline = time.monotonic() + self.stop_timeout_s
        while True:
            workers = await self._workers()
            entry = self._entry(workers, home)
            if _jobs(entry, workers):
                raise NodeBusy(f"pool {pool.name}: {key} got Spark work while it was being "
                               "decommissioned; it stays decommissioned until that work ends")
            if entry is None or entry.get("state") != "ALIVE":
                return
            if time.monotonic() > deadline:
                raise ProviderError(f"pool {pool.name}: the master still shows {key} ALIVE "
                                    f"{self.stop_timeout_s:g} s after SIGPWR (decommission)")
            await asyncio.sleep(0.2)

    async def _gone(self, pool: Pool, stopping: dict[str, int]) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        while True:
            left = [k for k, pid in stopping.items() if not self._reap(pid) and procs.alive(pid)]
            if not left:
                return
            if time.monotonic() > deadline:
                raise ProviderError(f"pool {pool.name}: {', '.join(left)} still running "
                                    f"{self.stop_timeout_s:g} s after SIGTERM (asked again "
                                    "next time; never SIGKILL)")
            await asyncio.sleep(0.2)

    def _reap(self, pid: int) -> bool:
        """Reap ``pid`` if it is an exited child of ours; True if it was."""
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            self._children.pop(pid, None)
            return True
        return False

    # -- processes -------------------------------------------------------------------------
    def _start(self, pool: Pool, home: Path) -> None:
        """One worker for the key whose directory is ``home`` (argv only)."""
        spark = procs.spark_home(self.spark_home)
        home.mkdir(parents=True, exist_ok=True)
        work = Path(self.settings.work_dir) if self.settings.work_dir else home / "work"
        work.mkdir(parents=True, exist_ok=True)
        (home / procs.CONF).write_text("spark.decommission.enabled true\n"
                                       f"spark.worker.ui.host {self.host}\n")
        argv = [str(spark / "bin" / "spark-class"), procs.WORKER_CLASS,
                "--host", self.host, "--port", str(procs.free_port(self.host)),
                "--webui-port", str(procs.free_port(self.host)),
                "--cores", str(pool.shape.cpus), "--memory", f"{pool.shape.memory_mb}m",
                "--work-dir", str(work), "--properties-file", str(home / procs.CONF),
                self.settings.master_url]
        env = procs.worker_env(spark, self.host, self.daemon_memory, self.settings.python)
        with open(home / procs.LOG, "wb") as log:  # this worker's log only
            child = subprocess.Popen(argv, cwd=home, env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._children[child.pid] = child
        procs.record(home, child.pid)

    def _running(self, root: Path) -> dict[str, int]:
        """Key -> pid of the pool's live workers (the exited children reaped first)."""
        for pid in list(self._children):
            self._reap(pid)
        return procs.running(root)

    def _root(self) -> Path:
        if self.root is None or self.settings is None:
            raise ProviderError("the spark_standalone provider runs only in an agent of the "
                                "spark_standalone backend")
        return self.root

    # -- the master ------------------------------------------------------------------------
    async def _workers(self) -> dict[str, Any]:
        """The master's ``/json/``: its workers and active drivers."""
        try:
            async with httpx.AsyncClient(timeout=JSON_TIMEOUT_S) as client:
                response = await client.get(self.settings.json_url)
                response.raise_for_status()
                return response.json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"cannot read the Spark master's {self.settings.json_url}: "
                                f"{exc}") from exc

    def _entry(self, master: dict[str, Any], home: Path) -> dict[str, Any] | None:
        """The worker of key directory ``home`` in the master's ``/json/`` (by the host and
        port its log says it bound), its ALIVE entry first."""
        found = _STARTED.findall(procs.log_of(home))
        if not found:
            return None
        host, port = found[-1][0].decode(), int(found[-1][1])
        mine = [w for w in master.get("workers", [])
                if w.get("host") == host and int(w.get("port", -1)) == port]
        mine.sort(key=lambda w: w.get("state") != "ALIVE")
        return mine[0] if mine else None


def _jobs(entry: dict[str, Any] | None, master: dict[str, Any]) -> int:
    """Work on the worker ``entry``: the drivers placed on it, else 1 if it has cores or
    memory in use (executors), else 0."""
    if entry is None:
        return 0
    drivers = sum(1 for d in master.get("activedrivers", []) if d.get("worker") == entry["id"])
    used = int(entry.get("coresused") or 0) > 0 or int(entry.get("memoryused") or 0) > 0
    return max(drivers, 1 if used else 0)
