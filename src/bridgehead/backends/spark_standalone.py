"""Spark applications on a Spark standalone cluster, through its master's REST API.

Submit: ONE ``POST <rest_url>/v1/submissions/create`` in cluster mode with
``spark.driver.supervise=false`` (Bridgehead owns retries: a supervised driver would be
relaunched under a new id nobody records). A Python application runs as Spark's own
``org.apache.spark.deploy.PythonRunner`` with ``[app.py, py-files, *arguments]`` (spark-submit
refuses Python in cluster mode on standalone; the REST server does not). Arguments go as a
JSON list: never through a shell.

Tag: ``spark.app.name`` is ``<name> bh:<job id>`` (the job's name with any ``"`` and
control characters replaced by ``_``: the worker writes the launch command's words in quotes
without escaping them) and the driver's environment carries
``BRIDGEHEAD_JOB_ID``. The worker writes each driver's launch command (with
``-Dspark.app.name=...``) at the top of its ``stderr`` (``DriverRunner``), so a driver is
known by its tag as soon as a worker has launched it, before its SparkContext is up.

Poll: ONE ``GET <json_url>`` (the master web UI's ``/json/``) for every driver at once:
``activedrivers`` and ``completeddrivers`` with their state, cores and start time. Only a
driver that ended in ERROR costs one more request (``GET status/<id>``: its exception, if
any). A driver the master does not list (it restarted with ``recoveryMode=NONE`` and forgot
every driver, or trimmed it past ``spark.deploy.retainedDrivers``) is left out of the answer:
the agent looks again and calls it lost after its grace, never succeeded.

Exit code: Spark's REST API has none. FINISHED is exit 0; FAILED is a non-zero exit whose
value is read from the driver's ``stderr`` (``User application exited with N``) when it can
be read, else unknown (None, said in the reason).

Cancel: ``POST kill/<id>`` per driver. Logs: ``<work_dir>/<driver id>/stdout|stderr`` when the
agent sees the workers' work dir, else the worker's web UI ``/log/?driverId=..`` (the header
``==== Bytes a-b of N of path ====`` stripped). PythonRunner sends the Python process's stderr
to the driver's ``stdout``; ``stderr`` holds the JVM's log. Usage: the driver's cores plus its
application's (matched by tag) times the driver's run time.

The crash window between create and record (the fence): drivers carry no name in the
master's lists. Before each create the backend writes ``<state_dir>/spark-fence/<job>.json``
with the ids of every driver the master knows and the time; after the create it adds the new
driver's id. On recovery (:meth:`find`) a tag is looked up in three steps: (1) a driver whose
launch command carries the tag; else (2) if the job has a fence with no driver recorded: the
drivers the fence did not know, that no other fence claims, and whose launch command cannot
be read yet (not launched); exactly one -> it; none -> not found (submit again); more than
one -> BackendUnavailable (look again once they have launched and show their tags). The
fence is the set of ids, not a time: the agent's and the master's clocks may differ. The
agent submits one job at a time, so at most one fence is open when it crashes. Limit: fences
live in one agent's state dir. With two agents submitting to one master at once (HA), a
crashed agent could take the other's not-yet-launched driver for its own in step (2): run
one agent per Spark master.

Requests: a poll is ONE ``GET /json/``, plus one ``GET status/<id>`` per driver that ended in
ERROR and, without ``work_dir``, one worker ``/log/`` read per driver that ended FAILED (its
exit code). ``find`` (recovery only) reads the launch command of every driver the master
lists: from the work dir, or one worker request each.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bridgehead.backends.base import NativeStatus, read_file_range
from bridgehead.config import SparkSettings
from bridgehead.domain.clusters import SPARK, SPARK_ONLY, Capacity
from bridgehead.domain.jobs import JobSpec, JobState, Usage
from bridgehead.domain.spark import SparkApp
from bridgehead.errors import BackendUnavailable, SubmitRejected

logger = logging.getLogger(__name__)

PYTHON_RUNNER = "org.apache.spark.deploy.PythonRunner"

STATES: dict[str, JobState | None] = {
    "SUBMITTED": JobState.SUBMITTED,   # waiting for a worker with room
    "RUNNING": JobState.RUNNING,
    "FINISHED": JobState.SUCCEEDED,    # the driver exited 0
    "FAILED": JobState.FAILED,         # the driver exited non-zero
    "KILLED": JobState.CANCELLED,      # POST kill/<id>
    "ERROR": JobState.FAILED,          # could not run: FAILED with an exception, else LOST
    "RELAUNCHING": JobState.LOST,      # its worker died (only supervised drivers relaunch)
    "UNKNOWN": None,                   # master recovery: look again
}
"""Spark's ``DriverState`` (core/src/main/scala/org/apache/spark/deploy/master/DriverState.scala)
-> Bridgehead's. None: not decided yet (left out of the poll's answer)."""


def driver_status(driver: dict[str, Any], *, usage: Usage | None = None,
                  exit_code: int | None = None,
                  exception: str | None = None) -> NativeStatus | None:
    """One driver as the master's ``/json/`` lists it (``activedrivers``/``completeddrivers``:
    ``{id, starttime, state, cores, memory, submitdate, worker, mainclass}``), through
    :data:`STATES`, with what the poll read besides for an ended one: its ``usage``, a FAILED
    one's ``exit_code`` (from its stderr; None: unknown) and an ERROR one's ``exception`` (the
    ``status/<id>`` message). None: not decided (UNKNOWN, or a state this table lacks)."""
    native = str(driver.get("state"))
    state = STATES.get(native)
    if state is None:
        return None
    if state in (JobState.SUBMITTED, JobState.RUNNING):
        return NativeStatus(state=state)
    if native == "FINISHED":
        return NativeStatus(state=state, exit_code=0, usage=usage)
    if native == "FAILED":
        why = ("the driver exited non-zero" if exit_code is not None else "the driver exited "
               "non-zero (Spark's REST API gives no exit code and its stderr is unreadable)")
        return NativeStatus(state=state, exit_code=exit_code, reason=why, usage=usage)
    if native == "KILLED":
        return NativeStatus(state=state, reason="killed on the Spark master", usage=usage)
    if native == "ERROR":
        if exception:  # "Exception from the cluster:\n<exception>\n<stack>"
            lines = [line for line in exception.splitlines()[:2] if line.strip()]
            return NativeStatus(state=JobState.FAILED, usage=usage,
                                reason="Spark could not run the driver: "
                                       + " ".join(lines)[:2000])
        return NativeStatus(state=JobState.LOST, usage=usage, infrastructure=True,
                            reason="Spark driver ERROR without an exception: its worker "
                                   "was lost")
    return NativeStatus(state=state, usage=usage, infrastructure=True,
                        reason=f"Spark driver {native}: its worker was lost")


_EXIT = re.compile(rb"User application exited with (\d+)")
_LOG_HEADER = re.compile(rb"==== Bytes (\d+)-(\d+) of (\d+) of [^\n]* ====\n")
_FENCE_DIR = "spark-fence"
FENCE_KEEP_S = 86400
"""A fence matters while its job may still be ``submitting``: a day is ample."""


def tag_of(job_id: str) -> str:
    return f"bh:{job_id}"


class SparkStandaloneBackend:
    kind = "spark_standalone"
    files_shared = False

    def __init__(self, settings: SparkSettings, *, state_dir: Path) -> None:
        self.settings = settings
        self.rest_url = settings.rest_url.rstrip("/")
        self.fences = state_dir / _FENCE_DIR
        self._client = httpx.AsyncClient(timeout=settings.request_timeout_s)
        self._ended: dict[str, float] = {}
        """When each driver was first seen ended (its run time's end without a work dir)."""
        self._tags: dict[str, str] = {}
        """native id -> tag, for the usage of the driver's application."""
        self._asked: dict[str, int] = {}
        """native id -> the executor cores its app asked for (``spark.cores.max``)."""
        self._granted: dict[str, int] = {}
        """tag -> the most executor cores its app was seen holding (``/json/`` lists an app's
        cores granted now: 0 once it has ended, JsonProtocol.writeApplicationInfo)."""
        self._pruned = 0.0
        self._placed: dict[str, str] = {}
        """driver id -> its worker's web UI, from the last ``/json/``."""
        self.requests = 0
        """Requests sent to Spark (for tests and the benchmark: one per poll cycle)."""

    # -- submit ------------------------------------------------------------------------------
    async def submit(self, job_id: str, spec: JobSpec) -> str:
        app = self._app(spec)
        body = self.request_body(job_id, spec, app)
        fence = self.fences / f"{job_id}.json"
        known = sorted(_drivers(await self._master()))
        self.fences.mkdir(parents=True, exist_ok=True)
        self._prune_fences()
        fence.write_text(json.dumps({"at": time.time(), "known": known, "driver": None}))
        answer = await self._call("POST", "/v1/submissions/create", body)
        driver = answer.get("submissionId")
        if not answer.get("success") or not isinstance(driver, str):
            fence.unlink(missing_ok=True)
            raise SubmitRejected(f"Spark refused the application: {answer.get('message')}")
        fence.write_text(json.dumps({"at": time.time(), "known": known, "driver": driver}))
        self._tags[driver] = tag_of(job_id)
        self._asked[driver] = app.executors * app.executor_cores
        return driver

    def _app(self, spec: JobSpec) -> SparkApp:
        if spec.spark is None:
            raise SubmitRejected("this cluster runs Spark applications only (spark_standalone):"
                                 " give the job a spark part, not a command or script")
        if spec.working_dir is not None:
            raise SubmitRejected("working_dir: a Spark driver runs in its worker's directory")
        res = spec.resources
        for name in ("walltime_s", "partition", "account"):  # memory_mb: derived from spark
            if getattr(res, name) is not None:
                raise SubmitRejected(f"resources.{name}: spark_standalone does not take it "
                                     "(give the driver's and executors' sizes in spark)")
        if res.gpus:
            raise SubmitRejected("resources.gpus: spark_standalone does not take it")
        caps = [c for c in (res.max_cores, self.settings.max_cores) if c is not None]
        return spec.spark.capped(min(caps) if caps else None)

    def request_body(self, job_id: str, spec: JobSpec, app: SparkApp) -> dict[str, Any]:
        """The CreateSubmissionRequest (StandaloneRestServer.scala's handleSubmit reads it)."""
        # the worker quotes the launch command's words without escaping them: a '"' in the
        # name would let a job name fake another's tag, so it (and control characters) goes
        label = re.sub(r'["\x00-\x1f\x7f]', "_", spec.name or "bridgehead")[:200]
        name = f"{label} {tag_of(job_id)}"
        props = {**app.conf, "spark.master": self.settings.master_url,
                 "spark.submit.deployMode": "cluster", "spark.driver.supervise": "false",
                 "spark.app.name": name, "spark.driver.cores": str(app.driver_cores),
                 "spark.executor.cores": str(app.executor_cores),
                 "spark.cores.max": str(app.executors * app.executor_cores)}
        for key, mb in (("spark.driver.memory", app.driver_memory_mb),
                        ("spark.executor.memory", app.executor_memory_mb)):
            if mb is not None:
                props[key] = f"{mb}m"
        for key, values in (("spark.submit.pyFiles", app.py_files), ("spark.jars", app.jars),
                            ("spark.files", app.files)):
            if values:
                props[key] = ",".join(values)
        python = app.application.endswith(".py")
        if python and self.settings.python and "spark.pyspark.python" not in app.conf:
            props["spark.pyspark.python"] = self.settings.python
        resource = app.application
        if resource.startswith("/"):
            resource = "file:" + resource
        args = ([app.application.removeprefix("file:"), ",".join(app.py_files), *app.arguments]
                if python else list(app.arguments))
        return {"action": "CreateSubmissionRequest", "appResource": resource,
                "mainClass": PYTHON_RUNNER if python else app.main_class,
                "appArgs": args, "clientSparkVersion": self.settings.client_version,
                "environmentVariables": {**spec.env, "BRIDGEHEAD_JOB_ID": job_id},
                "sparkProperties": props}

    # -- poll --------------------------------------------------------------------------------
    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        if not native_ids:
            return {}
        master = await self._master()
        drivers = _drivers(master)
        apps = {a.get("name"): a for a in [*master.get("activeapps", []),
                                           *master.get("completedapps", [])]}
        self._ended = {n: at for n, at in self._ended.items() if n in drivers}
        listed = {str(name).rpartition(" ")[2] for name in apps}
        self._granted = {t: c for t, c in self._granted.items() if t in listed}
        for app in master.get("activeapps", []):
            tag = str(app.get("name")).rpartition(" ")[2]
            if tag.startswith("bh:"):
                self._granted[tag] = max(self._granted.get(tag, 0), int(app.get("cores") or 0))
        out: dict[str, NativeStatus] = {}
        for nid in native_ids:
            driver = drivers.get(nid)
            if driver is None:
                continue  # forgotten or never known: the agent's grace decides (lost)
            status = await self._status(nid, driver, apps)
            if status is not None:
                out[nid] = status
        return out

    async def _status(self, nid: str, driver: dict[str, Any],
                      apps: dict[Any, dict[str, Any]]) -> NativeStatus | None:
        """:func:`driver_status`, with what it needs read first: an ended driver's usage, a
        FAILED one's exit code (its stderr), an ERROR one's exception (``status/<id>``)."""
        native = str(driver.get("state"))
        if STATES.get(native) in (None, JobState.SUBMITTED, JobState.RUNNING):
            return driver_status(driver)
        usage = self._usage(nid, driver, apps)
        code = await self._exit_code(nid) if native == "FAILED" else None
        exception = None
        if native == "ERROR":
            message = (await self._call("GET", f"/v1/submissions/status/{nid}")).get("message")
            exception = str(message) if message else None
        return driver_status(driver, usage=usage, exit_code=code, exception=exception)

    def _usage(self, nid: str, driver: dict[str, Any],
               apps: dict[Any, dict[str, Any]]) -> Usage | None:
        try:
            start = int(driver["starttime"]) / 1000
        except (KeyError, TypeError, ValueError):
            return None
        end = self._ended.setdefault(nid, time.time())
        if self.settings.work_dir is not None:
            try:
                end = (self.settings.work_dir / nid / "stderr").stat().st_mtime
            except OSError:
                pass
        cores = int(driver.get("cores") or 0)
        tag = self._tags.get(nid)
        app = next((a for name, a in apps.items() if tag and str(name).endswith(tag)), None)
        if tag is not None and app is not None:
            # the cores it was seen holding; for an app that came and went between two polls,
            # what it asked for (an estimate: the master may have granted fewer)
            cores += self._granted.pop(tag, 0) or self._asked.get(nid, 0)
        self._asked.pop(nid, None)
        return Usage(elapsed_s=max(0.0, end - start), cores=cores, nodes=1)

    async def _exit_code(self, nid: str) -> int | None:
        tail = await self._tail(nid, "stderr", 64 << 10)
        codes = _EXIT.findall(tail)
        return int(codes[-1]) if codes else None

    # -- cancel, find, logs ------------------------------------------------------------------
    async def cancel(self, native_ids: Sequence[str]) -> None:
        for nid in native_ids:
            answer = await self._call("POST", f"/v1/submissions/kill/{nid}")
            if not answer.get("success"):
                logger.info("Spark did not kill %s: %s", nid, answer.get("message"))

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Native ids by tag (job id): see the module's docstring for the fence."""
        if not tags:
            return {}
        master = await self._master()
        drivers = _drivers(master)
        launched: dict[str, str | None] = {nid: await self._launch_tag(nid) for nid in drivers}
        fences = self._read_fences()
        claimed = {f["driver"] for f in fences.values() if f.get("driver")}
        out: dict[str, list[str]] = {}
        for job_id in tags:
            tag = tag_of(job_id)
            found = [nid for nid, t in launched.items() if t == tag]  # (1)
            fence = fences.get(job_id)
            if not found and fence is not None:
                if fence.get("driver") in drivers:
                    found = [fence["driver"]]
                elif fence.get("driver") is None:
                    found = _fenced(fence, drivers, launched, claimed)
            for nid in found:
                self._tags[nid] = tag
            out[job_id] = found
        return out

    async def _launch_tag(self, nid: str) -> str | None:
        head = await self._read(nid, "stderr", 0, 64 << 10)
        match = re.search(rb'-Dspark\.app\.name=[^"]* (bh:[A-Za-z0-9_.:-]+)"', head)
        if match:
            return match.group(1).decode()
        return "" if head.startswith(b"Launch Command") else None  # "": launched, not ours

    def _read_fences(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for path in self.fences.glob("*.json") if self.fences.is_dir() else ():
            try:
                out[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return out

    def _prune_fences(self) -> None:
        """Drop fences older than :data:`FENCE_KEEP_S` (at most once an hour, on submit)."""
        now = time.time()
        if now - self._pruned < 3600:
            return
        self._pruned = now
        for path in self.fences.glob("*.json"):
            try:
                if now - path.stat().st_mtime > FENCE_KEEP_S:
                    path.unlink(missing_ok=True)
            except OSError:
                continue

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        return await self._read(native_id, stream, offset, limit)

    async def _read(self, nid: str, stream: str, offset: int, limit: int) -> bytes:
        if stream not in ("stdout", "stderr") or not re.fullmatch(r"driver-[0-9-]+", nid):
            return b""
        if self.settings.work_dir is not None:
            return read_file_range(self.settings.work_dir / nid / stream, offset, limit)
        worker = await self._worker_url(nid)
        if worker is None:
            return b""
        params: dict[str, str | int] = {"driverId": nid, "logType": stream, "offset": offset,
                                        "byteLength": limit}
        try:
            response = await self._client.get(f"{worker.rstrip('/')}/log/", params=params)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot read {nid}'s {stream} from {worker}: {exc}") \
                from exc
        self.requests += 1
        body = response.content
        header = _LOG_HEADER.match(body)
        if response.status_code != 200 or header is None:
            return b""
        start = int(header.group(1))
        data = body[header.end():]
        return data[max(0, offset - start):] if start <= offset else b""

    async def _tail(self, nid: str, stream: str, size: int) -> bytes:
        if self.settings.work_dir is not None:
            path = self.settings.work_dir / nid / stream
            try:
                offset = max(0, path.stat().st_size - size)
            except OSError:
                return b""
            return read_file_range(path, offset, size)
        return await self._read(nid, stream, 0, 1 << 20)

    async def _worker_url(self, nid: str) -> str | None:
        """The web UI of the worker that ran ``nid``, from the last ``/json/`` (fetched again
        only for a driver it did not place)."""
        if nid not in self._placed:
            await self._master()
        return self._placed.get(nid)

    # -- plumbing ----------------------------------------------------------------------------
    def free_slots(self) -> int | None:
        return None

    def capacity(self) -> Capacity | None:
        # resources.memory_mb is the server's sum of the app's sizes: the app carries it
        return Capacity(cores=None, honours=(SPARK, SPARK_ONLY, "resources.memory_mb"),
                        backend=self.kind, source="its Spark master")

    async def close(self) -> None:
        await self._client.aclose()

    async def _master(self) -> dict[str, Any]:
        """The master's ``/json/``: every worker, driver and application in one answer."""
        try:
            response = await self._client.get(self.settings.json_url)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach the Spark master at "
                                     f"{self.settings.json_url}: {exc!r}") from exc
        self.requests += 1
        if response.status_code != 200:
            raise BackendUnavailable(f"the Spark master's {self.settings.json_url} answered "
                                     f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError as exc:
            raise BackendUnavailable(f"the Spark master's {self.settings.json_url} did not "
                                     "answer JSON") from exc
        if not isinstance(data, dict):
            return {}
        webs = {w.get("id"): w.get("webuiaddress") for w in data.get("workers", [])}
        self._placed = {nid: str(webs[d["worker"]]) for nid, d in _drivers(data).items()
                        if webs.get(d.get("worker"))}
        return data

    async def _call(self, method: str, path: str,
                    body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.rest_url + path
        try:
            response = await self._client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach Spark's REST server at {url}: {exc!r}") \
                from exc
        self.requests += 1
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 500 or not isinstance(data, dict):
            raise BackendUnavailable(f"Spark's REST server answered {method} {path} with HTTP "
                                     f"{response.status_code}: {response.text[:300]}")
        if response.status_code >= 400 and path.endswith("/create"):
            raise SubmitRejected(f"Spark refused the application: {data.get('message')}")
        return data


def _drivers(master: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every driver the master lists, active or completed, by id."""
    return {str(d.get("id")): d for d in [*master.get("activedrivers", []),
                                           *master.get("completeddrivers", [])]}


def _fenced(fence: dict[str, Any], drivers: dict[str, dict[str, Any]],
            launched: dict[str, str | None], claimed: set[str]) -> list[str]:
    """The one driver a crash left between ``create`` and its record, if only one can be it:
    unknown to the fence, claimed by no other fence, and not launched (a launched driver
    shows its tag). BackendUnavailable if several could be."""
    known = set(fence.get("known") or ())
    maybe = [nid for nid in drivers
             if nid not in known and nid not in claimed and launched.get(nid) is None]
    if len(maybe) > 1:
        raise BackendUnavailable(f"{len(maybe)} new Spark drivers could be this job's: "
                                 "looking again once they have launched")
    return maybe

