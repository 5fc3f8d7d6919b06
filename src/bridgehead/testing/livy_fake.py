"""An Apache Livy server's batch API in YARN mode, over :mod:`bridgehead.testing.yarn_fake`
(whose applications are REAL Spark drivers on a Spark standalone cluster).

Only the protocol is faked. Each behaviour copies incubator-livy (commit fc4202ea; paths under
``server/src/main/scala/org/apache/livy/``):

- ``GET /batches?from=&size=`` -> ``{"from", "total", "sessions"}``: ``total`` counts every
  batch, ``sessions`` is the ``[from, from+size)`` slice in creation order, size 100 by
  default (server/SessionServlet.scala:71-82).
- ``POST /batches`` takes an id first (server/batch/BatchSessionServlet.scala:48: a refused
  create still uses one), then registers: a name already held by a batch in memory is refused
  before spark-submit with 400 ``Rejected, Reason: Duplicate session name: Some(<name>) for
  session <id>`` (sessions/SessionManager.scala:105-110, caught at SessionServlet.scala:142).
  A conf on the blacklist is refused the same way (sessions/Session.scala:66-73). 201 with the
  batch and a ``Location`` header.
- ``max-creation`` (``livy.server.session.max-creation``, 100: LivyConf.scala:359): while
  that many spark-submit processes run (``submit_s`` each here), a create is refused with 400
  ``Rejected, too many sessions are being created!`` (SessionServlet.scala:123-132).
- CSRF (``livy.server.csrf-protection.enabled``, LivyConf.scala:72): a POST/PUT/DELETE without
  ``X-Requested-By`` is refused with 400 ``Missing Required Header for CSRF protection.``
  (server/CsrfFilter.scala:37-40).
- The tag: each batch's YARN app is tagged ``livy-batch-<id>-<8 random>`` (lower-case;
  server/batch/BatchSession.scala:65) MERGED in front of the user's ``spark.yarn.tags``, and
  ``spark.yarn.submit.waitAppCompletion`` is set to false (utils/SparkApp.scala:76-81).
- States follow the YARN app (utils/SparkYarnApp.scala:235-257 then
  server/batch/BatchSession.scala:182-200): NEW..ACCEPTED -> ``starting``; RUNNING with
  finalStatus UNDEFINED or SUCCEEDED -> ``running``; FINISHED+SUCCEEDED -> ``success``;
  KILLED+KILLED -> ``killed``; any other pair (FAILED+FAILED, FINISHED+FAILED, RUNNING+FAILED)
  -> ``dead``. No app for the tag within ``lookup_timeout_s`` (120 s,
  ``livy.server.yarn.app-lookup-timeout``, LivyConf.scala:260) -> ``dead``.
- ``GET /batches/{id|name}`` (an all-digit key is an id, else a name:
  SessionServlet.scala:216-223), ``/state``, ``/log?from=&size=`` (default: the last 100
  lines; SessionServlet.scala:240-254). The log is ``["stdout: ", ..., "\\nstderr: ", ...,
  "\\nYARN Diagnostics: ", ...]`` (utils/SparkYarnApp.scala:141-144). Real Livy shows
  spark-submit's own output there; the fake shows the driver's stdout and stderr lines.
- ``DELETE /batches/{id}`` kills the app and removes the batch at once (404 afterwards;
  SessionManager.scala:134-151): 200 ``{"msg": "deleted"}``.
- Retain-time GC: a finished batch is dropped ``retain_s`` after it finished
  (``livy.server.session.state-retain.sec``, 600 s: LivyConf.scala:357,
  SessionManager.scala:162-168; Livy's GC runs every 60 s, the fake's every tick).
- Restart (``POST /admin/restart``): with recovery off (``livy.server.recovery.mode``, off:
  LivyConf.scala:209) every batch is stopped, so its app is KILLED (SessionManager.scala:153-
  159), and ids restart at 0 in the new process; with recovery on the batches come back
  ``recovering`` with their ids, names and tags (server/batch/BatchSession.scala:126-143) and
  resync by tag; ended-dead or killed ones were removed from the store (BatchSession.scala:
  191-197) and do not come back.

The fake's own admin API (not Livy's): ``POST /admin/restart {"recovery": bool, "down_s":
s}`` (down: connections dropped), ``POST /admin/faults {"fail_after_create": n,
"slow_lookups": n, "lookup_delay_s": s, "hold_creates": n, "hold_s": s, "hold_then":
"create"|"drop"}``, ``POST /admin/config {"retain_s", "csrf", "max_creation", "submit_s"}``,
``GET /admin/stats`` (requests by method and route).
"""

from __future__ import annotations

import argparse
import random
import re
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bridgehead.testing._http import JsonServer, Reply, Request
from bridgehead.testing.yarn_fake import (
    FINAL,
    YarnApp,
    YarnCluster,
    add_spark_args,
    cluster_from_args,
)

PYTHON_RUNNER = "org.apache.spark.deploy.PythonRunner"
TERMINAL = ("success", "dead", "killed", "error")
DEFAULT_BLACKLIST = ("spark.master", "spark.submit.deployMode", "spark.yarn.jar",
                     "spark.yarn.jars", "spark.yarn.archive")
"""The ``spark.*`` entries of Livy's conf/spark-blacklist.conf.template."""


@dataclass(slots=True, kw_only=True)
class Batch:
    id: int
    name: str | None
    tag: str
    request: dict[str, Any]
    owner: str = "bridgehead"
    proxy_user: str | None = None
    state: str = "starting"
    app: YarnApp | None = None
    submit_at: float = 0.0
    created_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None


@dataclass(slots=True)
class Faults:
    fail_after_create: int = 0
    slow_lookups: int = 0
    lookup_delay_s: float = 30.0
    hold_creates: int = 0
    hold_s: float = 5.0
    hold_then: str = "create"
    dropped: int = 0
    """Creates held and then dropped (never created)."""


class LivyFake:
    def __init__(self, cluster: YarnCluster, *, master_url: str, python: str | None = None,
                 retain_s: float = 600.0, csrf: bool = False, max_creation: int = 100,
                 recovery: bool = False, submit_s: float = 0.0, lookup_timeout_s: float = 120,
                 blacklist: tuple[str, ...] = DEFAULT_BLACKLIST) -> None:
        self.cluster = cluster
        self.master_url = master_url
        self.python = python
        self.retain_s = retain_s
        self.csrf = csrf
        self.max_creation = max_creation
        self.recovery = recovery
        self.submit_s = submit_s
        self.lookup_timeout_s = lookup_timeout_s
        self.blacklist = blacklist
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.batches: dict[int, Batch] = {}
        self.next_id = 0
        self.restarts = 0
        self._store: dict[int, Batch] = {}
        """Livy's recovery state store: what a restart with recovery on brings back."""
        self._down_until = 0.0
        self._lock = threading.RLock()
        cluster.listeners.append(self.tick)

    # -- HTTP ------------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/admin/"):
            return self._admin(path, request)
        if time.monotonic() < self._down_until:
            return Reply(status=503, drop=True)
        self.requests[f"{request.method} {re.sub(r'/batches/[^/]+', '/batches/{id}', path)}"] \
            += 1
        if (self.csrf and request.method not in ("GET", "OPTIONS", "HEAD")
                and "x-requested-by" not in request.headers):
            return _msg(400, "Missing Required Header for CSRF protection.")
        if path == "/batches" and request.method == "GET":
            return self._list(request)
        if path == "/batches" and request.method == "POST":
            return self._create(request)
        match = re.fullmatch(r"/batches/([^/]+)(/state|/log)?", path)
        if match is None:
            return _msg(404, f"no such resource {path}")
        with self._lock:
            batch = self._get(match.group(1))
            if batch is None:
                return _msg(404, f"Session '{match.group(1)}' not found.")
            if request.method == "DELETE" and match.group(2) is None:
                return self._delete(batch)
            if request.method != "GET":
                return _msg(405, "method not allowed")
            if match.group(2) == "/state":
                return Reply(status=200, body={"id": batch.id, "state": batch.state})
            if match.group(2) == "/log":
                return Reply(status=200, body=self._log(batch, request.query))
            return Reply(status=200, body=self._view(batch))

    def _list(self, request: Request) -> Reply:
        if self.faults.slow_lookups > 0:
            self.faults.slow_lookups -= 1
            time.sleep(self.faults.lookup_delay_s)
        start = int(request.query.get("from", 0))
        size = int(request.query.get("size", 100))
        with self._lock:
            batches = list(self.batches.values())
            return Reply(status=200, body={
                "from": start, "total": len(batches),
                "sessions": [self._view(b) for b in batches[start:start + size]]})

    def _create(self, request: Request) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        with self._lock:
            now = time.monotonic()
            creating = sum(1 for b in self.batches.values() if b.app is None
                           and b.state == "starting" and b.submit_at > now)
            if creating >= self.max_creation:
                return _msg(400, "Rejected, too many sessions are being created!")
        if self.faults.hold_creates > 0:
            self.faults.hold_creates -= 1
            time.sleep(self.faults.hold_s)
            if self.faults.hold_then == "drop":
                self.faults.dropped += 1
                return Reply(status=500, drop=True)
        with self._lock:
            batch_id = self.next_id
            self.next_id += 1
            name = body.get("name")
            rand = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
            batch = Batch(id=batch_id, name=name, tag=f"livy-batch-{batch_id}-{rand}",
                          request=body, proxy_user=body.get("proxyUser"),
                          submit_at=(time.monotonic() + self.submit_s if self.submit_s > 0
                                     else float("inf")))  # inf: submitted below, not by tick
            if name is not None and any(b.name == name for b in self.batches.values()):
                return _msg(400, f"Rejected, Reason: Duplicate session name: Some({name}) "
                                 f"for session {batch_id}")
            problem = self._refuse(body)
            if problem:
                return _msg(400, f"Rejected, Reason: {problem}")
            self.batches[batch_id] = batch
            self._store[batch_id] = batch
        if self.submit_s <= 0:
            self._spark_submit(batch)
        if self.faults.fail_after_create > 0:
            self.faults.fail_after_create -= 1
            return _msg(500, "the fake failed after creating the batch (fault hook)")
        with self._lock:
            return Reply(status=201, body=self._view(batch),
                         headers={"Location": f"/batches/{batch_id}"})

    def _refuse(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("file"), str):
            return "requirement failed: File is required."
        conf = body.get("conf") or {}
        bad = [k for k in conf if k in self.blacklist]
        if bad:
            return "Blacklisted configuration values in session config: " + ", ".join(bad)
        return None

    def _delete(self, batch: Batch) -> Reply:
        if batch.app is not None:
            self.cluster.kill(batch.app.id)
        self.batches.pop(batch.id, None)
        self._store.pop(batch.id, None)
        return _msg(200, "deleted")

    def _get(self, key: str) -> Batch | None:
        if key.isdigit():
            return self.batches.get(int(key))
        return next((b for b in self.batches.values() if b.name == key), None)

    def _view(self, batch: Batch) -> dict[str, Any]:
        """server/batch/BatchSessionServlet.scala:28-36 and 61-80 (the last 10 log lines)."""
        app = batch.app
        return {"id": batch.id, "name": batch.name, "owner": batch.owner,
                "proxyUser": batch.proxy_user, "state": batch.state,
                "appId": app.id if app is not None else None,
                "appInfo": {"driverLogUrl": None, "sparkUiUrl": None},
                "log": self._lines(batch)[-10:]}

    def _log(self, batch: Batch, query: dict[str, str]) -> dict[str, Any]:
        lines = self._lines(batch)
        size = int(query.get("size", 100))
        start = int(query.get("from", -1))
        if size < 0:
            size = len(lines)
        if start < 0:
            start = max(0, len(lines) - size)
        return {"id": batch.id, "from": start, "total": len(lines),
                "log": lines[start:start + size]}

    def _lines(self, batch: Batch) -> list[str]:
        app = batch.app
        out = self.cluster.driver_log(app, "stdout") if app is not None else b""
        err = self.cluster.driver_log(app, "stderr") if app is not None else b""
        diagnostics = app.diagnostics.splitlines() if app is not None else []
        return (["stdout: ", *out.decode(errors="replace").splitlines(),
                 "\nstderr: ", *err.decode(errors="replace").splitlines(),
                 "\nYARN Diagnostics: ", *diagnostics])

    # -- following YARN --------------------------------------------------------------------
    def _spark_submit(self, batch: Batch) -> None:
        """What spark-submit in YARN cluster mode makes of the request (BatchSession.scala:68-95
        builds its command line), sent to the real Spark master."""
        body = batch.request
        conf = {str(k): str(v) for k, v in (body.get("conf") or {}).items()}
        user_tags = conf.get("spark.yarn.tags")
        conf["spark.yarn.tags"] = batch.tag + ("," + user_tags if user_tags else "")
        conf["spark.yarn.submit.waitAppCompletion"] = "false"
        request, vcores, memory = spark_request(body, conf, self.master_url, self.python)
        app = self.cluster.submit(name=body.get("name") or body["file"],
                                  tags=conf["spark.yarn.tags"].split(","), request=request,
                                  vcores=vcores, memory_mb=memory,
                                  queue=body.get("queue") or "default")
        with self._lock:
            batch.app = app

    def tick(self) -> None:
        now = time.monotonic()
        due = []
        with self._lock:
            for batch in list(self.batches.values()):
                if batch.app is None and batch.state == "starting":
                    if batch.submit_at <= now:
                        batch.submit_at = float("inf")
                        due.append(batch)
                    continue
                if batch.app is None and batch.state == "recovering":
                    found = self.cluster.by_tags([batch.tag])
                    batch.app = found[0] if found else None
                    if batch.app is None and now - batch.created_at > self.lookup_timeout_s:
                        self._finish(batch, "dead", now)
                    continue
                if batch.app is not None and batch.state not in TERMINAL:
                    self._finish(batch, livy_state(batch.app), now)
                if (batch.finished_at is not None
                        and now - batch.finished_at > self.retain_s):
                    self.batches.pop(batch.id, None)
                    self._store.pop(batch.id, None)
        for batch in due:
            self._spark_submit(batch)

    def _finish(self, batch: Batch, state: str, now: float) -> None:
        batch.state = state
        if state in TERMINAL and batch.finished_at is None:
            batch.finished_at = now
            if state in ("dead", "killed"):
                self._store.pop(batch.id, None)

    def restart(self, *, recovery: bool, down_s: float = 0.0) -> None:
        with self._lock:
            self.restarts += 1
            if not recovery:
                for batch in self.batches.values():
                    if batch.app is not None and batch.app.state not in FINAL:
                        self.cluster.kill(batch.app.id)
                self.batches, self._store, self.next_id = {}, {}, 0
            else:
                kept = sorted(self._store.values(), key=lambda b: b.id)
                self.batches = {b.id: Batch(id=b.id, name=b.name, tag=b.tag, request=b.request,
                                            owner=b.owner, proxy_user=b.proxy_user,
                                            state="recovering") for b in kept}
                self._store = dict(self.batches)
            self.recovery = recovery
            self._down_until = time.monotonic() + down_s

    def _admin(self, path: str, request: Request) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        if path == "/admin/stats":
            return Reply(status=200, body={"requests": dict(self.requests),
                                           "restarts": self.restarts})
        if path == "/admin/restart" and request.method == "POST":
            self.restart(recovery=bool(body.get("recovery")),
                         down_s=float(body.get("down_s", 0)))
            return _msg(200, "restarted")
        if path == "/admin/faults" and request.method == "POST":
            for key, value in body.items():
                if not hasattr(self.faults, key):
                    return _msg(400, f"unknown fault {key}")
                setattr(self.faults, key, value)
            return _msg(200, "ok")
        if path == "/admin/config" and request.method == "POST":
            for key in ("retain_s", "csrf", "max_creation", "submit_s"):
                if key in body:
                    setattr(self, key, body[key])
            return _msg(200, "ok")
        return _msg(404, f"no such resource {path}")


def livy_state(app: YarnApp) -> str:
    """SparkYarnApp.mapYarnState (utils/SparkYarnApp.scala:235-257) then BatchSession's
    stateChanged (server/batch/BatchSession.scala:182-200)."""
    pair = (app.state, app.final_status)
    if pair in (("NEW", "UNDEFINED"), ("NEW_SAVING", "UNDEFINED"), ("SUBMITTED", "UNDEFINED"),
                ("ACCEPTED", "UNDEFINED")):
        return "starting"
    if pair in (("RUNNING", "UNDEFINED"), ("RUNNING", "SUCCEEDED")):
        return "running"
    if pair == ("FINISHED", "SUCCEEDED"):
        return "success"
    if pair == ("KILLED", "KILLED"):
        return "killed"
    return "dead"


def _memory_mb(value: Any) -> int:
    match = re.fullmatch(r"(\d+)([kmgt]?)b?", str(value or "1g").strip().lower())
    if match is None:
        return 1024
    scale = {"k": 1 / 1024, "": 1 / (1 << 20), "m": 1, "g": 1024, "t": 1 << 20}[match.group(2)]
    return max(1, int(int(match.group(1)) * scale))


def spark_request(body: dict[str, Any], conf: dict[str, str], master_url: str,
                  python: str | None) -> tuple[dict[str, Any], int, int]:
    """(the standalone CreateSubmissionRequest, the app's vcores, its MB). YARN's
    ``spark.yarn.appMasterEnv.X`` is the driver's environment in cluster mode: it becomes the
    standalone driver's ``environmentVariables``."""
    file = str(body["file"])
    executors = int(body.get("numExecutors") or conf.get("spark.executor.instances") or 2)
    executor_cores = int(body.get("executorCores") or conf.get("spark.executor.cores") or 1)
    driver_cores = int(body.get("driverCores") or conf.get("spark.driver.cores") or 1)
    props = {**conf, "spark.master": master_url, "spark.submit.deployMode": "cluster",
             "spark.driver.supervise": "false", "spark.app.name": str(body.get("name") or file),
             "spark.driver.cores": str(driver_cores),
             "spark.executor.cores": str(executor_cores),
             "spark.cores.max": str(executors * executor_cores)}
    for key, field_ in (("spark.driver.memory", "driverMemory"),
                        ("spark.executor.memory", "executorMemory")):
        if body.get(field_):
            props[key] = str(body[field_])
    for key, field_ in (("spark.submit.pyFiles", "pyFiles"), ("spark.jars", "jars"),
                        ("spark.files", "files")):
        if body.get(field_):
            props[key] = ",".join(body[field_])
    env = {k.removeprefix("spark.yarn.appMasterEnv."): v for k, v in conf.items()
           if k.startswith("spark.yarn.appMasterEnv.")}
    is_python = file.endswith(".py")
    if is_python and python and "spark.pyspark.python" not in props:
        props["spark.pyspark.python"] = python
    args = [str(a) for a in body.get("args") or []]
    request = {"action": "CreateSubmissionRequest",
               "appResource": "file:" + file if file.startswith("/") else file,
               "mainClass": PYTHON_RUNNER if is_python else body.get("className"),
               "appArgs": ([file.removeprefix("file:"), ",".join(body.get("pyFiles") or []),
                            *args] if is_python else args),
               "clientSparkVersion": "4.0.0", "environmentVariables": env,
               "sparkProperties": props}
    vcores = driver_cores + executors * executor_cores
    memory = (_memory_mb(body.get("driverMemory"))
              + executors * _memory_mb(body.get("executorMemory")))
    return request, vcores, memory


def _msg(status: int, message: str) -> Reply:
    """Livy's ``ResponseMessage(msg)`` (server/JsonServlet.scala:43)."""
    return Reply(status=status, body={"msg": message})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8998)
    parser.add_argument("--yarn-port", type=int, default=None,
                        help="also serve the YARN RM fake's REST API on this port")
    parser.add_argument("--retain-s", type=float, default=600.0)
    parser.add_argument("--csrf", action="store_true")
    parser.add_argument("--max-creation", type=int, default=100)
    parser.add_argument("--recovery", action="store_true")
    parser.add_argument("--submit-s", type=float, default=0.0,
                        help="how long each spark-submit runs (counts toward max-creation)")
    add_spark_args(parser)
    args = parser.parse_args()
    cluster = cluster_from_args(args)
    livy = LivyFake(cluster, master_url=args.spark_master, python=args.spark_python,
                    retain_s=args.retain_s, csrf=args.csrf, max_creation=args.max_creation,
                    recovery=args.recovery, submit_s=args.submit_s)
    cluster.start()
    if args.yarn_port is not None:
        JsonServer(cluster.handle, args.host, args.yarn_port).start()
    JsonServer(livy.handle, args.host, args.port).serve_forever()


if __name__ == "__main__":
    main()

