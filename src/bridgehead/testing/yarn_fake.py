"""A YARN ResourceManager's REST API whose applications run on a REAL Spark standalone cluster.

Only the protocol is faked: each application is a real Spark driver, created through the
standalone master's REST server (``POST /v1/submissions/create``, as
:mod:`bridgehead.backends.spark_standalone` does) and followed through the master's ``/json/``
(one read per tick for every application). What the RM says about it is modelled on Hadoop's
``ResourceManagerRest.md`` (hadoop-yarn-site, "Cluster Applications API" and "Cluster
Application State API"):

- ``GET /ws/v1/cluster/apps?applicationTags=a,b&states=..``: applications matching ANY of
  the tags ("applications matching any of the given application tags, specified as a
  comma-separated list"), as ``{"apps": {"app": [...]}}``; ``{"apps": null}`` when none
  match (the RM's JSON of an empty list). Tags are lower-cased, as YARN stores them (Livy
  lower-cases its tag to match: SparkYarnApp.scala:198).
- Each app: ``id`` (``application_<cluster start ms>_<NNNN>``), ``name``, ``state``
  (NEW .. ACCEPTED, RUNNING, FINISHED, FAILED, KILLED), ``finalStatus`` (UNDEFINED,
  SUCCEEDED, FAILED, KILLED), ``applicationTags`` (a comma-separated string),
  ``startedTime``/``finishedTime``/``elapsedTime`` (ms), ``diagnostics``, ``vcoreSeconds``
  and ``memorySeconds`` (aggregate resource allocation), ``allocatedVCores``/``allocatedMB``.
- ``state`` and ``finalStatus`` disagree for a while: once the Spark driver has ended, the app
  says RUNNING with its finalStatus already SUCCEEDED or FAILED (the AM unregistered; the RM
  is still saving: Livy's own table copes with RUNNING+SUCCEEDED, SparkYarnApp.scala:245-246)
  for ``settle_s`` seconds, then FINISHED. A driver that exits non-zero ends FINISHED+FAILED
  (the AM unregisters with FAILED), one Spark could not run FAILED+FAILED.
- ``PUT /ws/v1/cluster/apps/{id}/state {"state": "KILLED"}``: 202 with the current state
  while the kill is under way, 200 ``{"state": "KILLED"}`` once it is.
- Usage, the fake's model: ``vcoreSeconds`` = the app's vcores (driver + executors x
  executor cores) x its driver's run time in seconds; ``memorySeconds`` = its MB x the same.

Admin (the fake's own, not YARN's): ``GET /admin/stats`` counts requests by method and path.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridgehead.testing._http import JsonServer, Reply, Request

FINAL = ("FINISHED", "FAILED", "KILLED")


@dataclass(slots=True, kw_only=True)
class YarnApp:
    id: str
    name: str
    tags: list[str]
    user: str
    queue: str
    vcores: int
    memory_mb: int
    driver: str | None = None
    state: str = "ACCEPTED"
    final_status: str = "UNDEFINED"
    diagnostics: str = ""
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    finished_ms: int = 0
    run_from_ms: int = 0
    run_to_ms: int = 0
    ending: tuple[str, str, float] | None = None
    """(state, finalStatus, when) the app reaches once its settle time has passed."""
    kill_asked: bool = False
    created_at: float = field(default_factory=time.monotonic)

    def to_json(self) -> dict[str, Any]:
        now = int(time.time() * 1000)
        run_s = max(0, (self.run_to_ms or (now if self.run_from_ms else 0))
                    - self.run_from_ms) // 1000 if self.run_from_ms else 0
        running = self.state == "RUNNING" and self.final_status == "UNDEFINED"
        return {"id": self.id, "user": self.user, "name": self.name, "queue": self.queue,
                "state": self.state, "finalStatus": self.final_status,
                "progress": 100.0 if self.state in FINAL else 10.0,
                "applicationType": "SPARK", "applicationTags": ",".join(self.tags),
                "diagnostics": self.diagnostics, "startedTime": self.started_ms,
                "finishedTime": self.finished_ms,
                "elapsedTime": (self.finished_ms or now) - self.started_ms,
                "allocatedVCores": self.vcores if running else 0,
                "allocatedMB": self.memory_mb if running else 0,
                "vcoreSeconds": self.vcores * run_s, "memorySeconds": self.memory_mb * run_s}


class SparkBehind:
    """The real Spark standalone master the applications run on."""

    def __init__(self, rest_url: str, json_url: str, *, work_dir: Path | None = None) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.json_url = json_url
        self.work_dir = work_dir
        self._http = httpx.Client(timeout=30)

    def create(self, request: dict[str, Any]) -> tuple[str | None, str]:
        """(driver id, Spark's message): None when Spark refused it."""
        answer = self._http.post(f"{self.rest_url}/v1/submissions/create", json=request)
        data = answer.json()
        driver = data.get("submissionId")
        return (driver if data.get("success") and isinstance(driver, str) else None,
                str(data.get("message") or ""))

    def kill(self, driver: str) -> None:
        self._http.post(f"{self.rest_url}/v1/submissions/kill/{driver}")

    def drivers(self) -> dict[str, dict[str, Any]]:
        data = self._http.get(self.json_url).json()
        self._workers = {w.get("id"): w.get("webuiaddress") for w in data.get("workers", [])}
        return {str(d.get("id")): d for d in [*data.get("activedrivers", []),
                                               *data.get("completeddrivers", [])]}

    def log(self, driver: str, stream: str, worker: str | None = None) -> bytes:
        """The driver's ``stdout`` or ``stderr`` as its worker wrote it."""
        if not re.fullmatch(r"driver-[0-9-]+", driver):
            return b""
        if self.work_dir is not None:
            try:
                return (self.work_dir / driver / stream).read_bytes()
            except OSError:
                return b""
        web = getattr(self, "_workers", {}).get(worker)
        if not web:
            return b""
        answer = self._http.get(f"{web}/log/", params={"driverId": driver, "logType": stream,
                                                        "offset": 0, "byteLength": 1 << 22})
        body = answer.content
        return body.split(b" ====\n", 1)[1] if b" ====\n" in body else b""

    def close(self) -> None:
        self._http.close()


class YarnCluster:
    """The RM's applications, each a real Spark driver, moved on by :meth:`tick` (a thread
    started by :meth:`start` ticks every ``tick_s``)."""

    def __init__(self, spark: SparkBehind, *, settle_s: float = 2.0, tick_s: float = 0.5,
                 forget_after_s: float = 30.0) -> None:
        self.spark = spark
        self.settle_s = settle_s
        self.tick_s = tick_s
        self.forget_after_s = forget_after_s
        self.cluster_ts = int(time.time() * 1000)
        self.apps: dict[str, YarnApp] = {}
        self.lock = threading.RLock()
        self.requests: Counter[str] = Counter()
        self.listeners: list[Any] = []
        """Called after each tick (the Livy fake follows its apps there)."""
        self._drivers: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what Livy (spark-submit) and the RM's clients do -----------------------------------
    def submit(self, *, name: str, tags: list[str], request: dict[str, Any], vcores: int,
               memory_mb: int, user: str = "livy", queue: str = "default") -> YarnApp:
        with self.lock:
            app = YarnApp(id=f"application_{self.cluster_ts}_{len(self.apps) + 1:04d}",
                          name=name, tags=[t.strip().lower() for t in tags if t.strip()],
                          user=user, queue=queue, vcores=vcores, memory_mb=memory_mb)
            self.apps[app.id] = app
        try:
            driver, message = self.spark.create(request)
        except httpx.HTTPError as exc:
            driver, message = None, f"cannot reach Spark: {exc!r}"
        with self.lock:
            if driver is None:
                self._end(app, "FAILED", "FAILED", f"Spark refused the application: {message}")
            app.driver = driver
        return app

    def by_tags(self, tags: list[str]) -> list[YarnApp]:
        wanted = {t.strip().lower() for t in tags if t.strip()}
        with self.lock:
            return [a for a in self.apps.values() if wanted & set(a.tags)]

    def kill(self, app_id: str) -> YarnApp | None:
        with self.lock:
            app = self.apps.get(app_id)
            if app is None or app.state in FINAL or app.kill_asked:
                return app
            app.kill_asked = True
            driver = app.driver
            if driver is None:
                self._end(app, "KILLED", "KILLED", "Application killed by user.")
                return app
        self.spark.kill(driver)
        return app

    def driver_log(self, app: YarnApp, stream: str) -> bytes:
        if app.driver is None:
            return b""
        worker = self._drivers.get(app.driver, {}).get("worker")
        return self.spark.log(app.driver, stream, worker)

    # -- the RM following Spark ------------------------------------------------------------
    def tick(self) -> None:
        try:
            drivers = self.spark.drivers()
        except (httpx.HTTPError, ValueError):
            return
        now = time.monotonic()
        with self.lock:
            self._drivers = drivers
            for app in self.apps.values():
                if app.state not in FINAL:
                    self._follow(app, drivers.get(app.driver or ""), now)
        for listener in list(self.listeners):
            listener()

    def _follow(self, app: YarnApp, driver: dict[str, Any] | None, now: float) -> None:
        if app.ending is not None:
            state, final, since = app.ending
            if now - since >= self.settle_s:
                self._end(app, state, final, app.diagnostics)
            return
        if driver is None:
            if app.driver is not None and now - app.created_at > self.forget_after_s:
                self._end(app, "FAILED", "FAILED", "the Spark master no longer knows the "
                          "application's driver (it restarted without recovery)")
            return
        native = str(driver.get("state"))
        if native in ("RUNNING", "FINISHED", "FAILED", "KILLED") and not app.run_from_ms:
            app.run_from_ms = int(driver.get("starttime") or time.time() * 1000)
        if native == "RUNNING":
            app.state = "RUNNING"
        elif native in ("FINISHED", "FAILED"):
            app.run_to_ms = int(time.time() * 1000)
            final = "SUCCEEDED" if native == "FINISHED" else "FAILED"
            app.state, app.final_status = "RUNNING", final  # the AM unregistered; RM saving
            if final == "FAILED":
                app.diagnostics = "User application exited with a non-zero status"
            app.ending = ("FINISHED", final, now)
        elif native == "KILLED":
            app.run_to_ms = int(time.time() * 1000)
            self._end(app, "KILLED", "KILLED", "Application killed by user.")
        elif native in ("ERROR", "RELAUNCHING"):
            app.run_to_ms = int(time.time() * 1000) if app.run_from_ms else 0
            self._end(app, "FAILED", "FAILED", f"the Spark driver ended {native}")

    def _end(self, app: YarnApp, state: str, final: str, diagnostics: str) -> None:
        app.state, app.final_status, app.ending = state, final, None
        app.diagnostics = diagnostics
        app.finished_ms = int(time.time() * 1000)

    def start(self) -> YarnCluster:
        self._thread = threading.Thread(target=self._run, daemon=True, name="yarn-fake-tick")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.spark.close()

    # -- the RM's REST API -----------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        path = request.path.rstrip("/")
        self.requests[f"{request.method} {_route(path)}"] += 1
        if path == "/admin/stats":
            return Reply(status=200, body={"requests": dict(self.requests)})
        if request.method == "GET" and path == "/ws/v1/cluster/apps":
            return Reply(status=200, body=self._apps(request.query))
        match = re.fullmatch(r"/ws/v1/cluster/apps/([^/]+)(/state)?", path)
        if match is None:
            return Reply(status=404, body=_not_found(f"no such resource {path}"))
        with self.lock:
            app = self.apps.get(match.group(1))
        if app is None:
            return Reply(status=404, body=_not_found(f"app with id: {match.group(1)} not found"))
        if match.group(2) is None and request.method == "GET":
            return Reply(status=200, body={"app": app.to_json()})
        if request.method == "GET":
            return Reply(status=200, body={"state": app.state})
        if request.method == "PUT":
            wanted = (request.body or {}).get("state") if isinstance(request.body, dict) else None
            if wanted != "KILLED":
                return Reply(status=400, body=_not_found(f"Only 'KILLED' is allowed, not "
                                                         f"{wanted!r}", "BadRequestException"))
            self.kill(app.id)
            with self.lock:
                done = app.state in FINAL
                return Reply(status=200 if done else 202, body={"state": app.state})
        return Reply(status=405, body=_not_found("method not allowed"))

    def _apps(self, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            apps = list(self.apps.values())
        if query.get("applicationTags"):
            wanted = {t.strip().lower() for t in query["applicationTags"].split(",")}
            apps = [a for a in apps if wanted & set(a.tags)]
        if query.get("states"):
            states = {s.strip().upper() for s in query["states"].split(",")}
            apps = [a for a in apps if a.state in states]
        return {"apps": {"app": [a.to_json() for a in apps]} if apps else None}


def _route(path: str) -> str:
    return re.sub(r"/application_[0-9_]+", "/{id}", path)


def _not_found(message: str, exception: str = "NotFoundException") -> dict[str, Any]:
    return {"RemoteException": {"exception": exception, "message": message,
                                "javaClassName": f"org.apache.hadoop.yarn.webapp.{exception}"}}


def cluster_from_args(args: argparse.Namespace) -> YarnCluster:
    spark = SparkBehind(args.spark_rest, args.spark_json,
                        work_dir=Path(args.spark_work_dir) if args.spark_work_dir else None)
    return YarnCluster(spark, settle_s=args.settle_s)


def add_spark_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spark-rest", required=True,
                        help="the Spark standalone master's REST server (http://host:6066)")
    parser.add_argument("--spark-json", required=True,
                        help="the master web UI's /json/ (http://host:8080/json/)")
    parser.add_argument("--spark-master", default="spark://127.0.0.1:7077")
    parser.add_argument("--spark-work-dir", default=None,
                        help="the workers' work dir, if this host sees it (driver logs)")
    parser.add_argument("--spark-python", default=None, help="spark.pyspark.python")
    parser.add_argument("--settle-s", type=float, default=2.0,
                        help="how long state and finalStatus disagree once a driver ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    add_spark_args(parser)
    args = parser.parse_args()
    cluster = cluster_from_args(args).start()
    JsonServer(cluster.handle, args.host, args.port).serve_forever()


if __name__ == "__main__":
    main()
