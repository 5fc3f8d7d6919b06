"""AWS EMR for tests: moto's EMR served over HTTP in-process, plus a simulator of what moto
leaves out (shipped for users' tests, and ours).

moto (read in getmoto/moto at 0af643a and the 5.2.6 wheel: the EMR line numbers below are
the same in both) keeps EMR's records and speaks its JSON protocol, but nothing ever moves:
a new cluster jumps straight to WAITING (``moto/emr/models.py``
``Cluster.run_bootstrap_actions``, l. 636-642), ``add_steps`` makes the first step RUNNING
and the rest PENDING forever and sets the cluster RUNNING whatever its state (l. 688-699),
there is no CancelSteps (``moto/core/responses.py`` ``call_action`` raises
NotImplementedError: l. 504 in 5.2.6, l. 563 at 0af643a), no TERMINATED_WITH_ERRORS, no
reason codes (``Cluster.status`` gives only a Message, l. 593-606) and no throttling.
:class:`EmrSimulator` patches those in while it runs:

- clusters boot: STARTING -> BOOTSTRAPPING -> WAITING after ``boot_s`` (WAITING <-> RUNNING
  as steps come and go), and accrue ``NormalizedInstanceHours`` (each started hour of each
  instance, times its size's normalization factor: xlarge 8, large 4, ...);
- steps: every added step is PENDING (as on EMR: the cluster runs them in order) and starts
  when its cluster is ready and runs fewer than ``StepConcurrencyLevel`` steps. A step RUNS
  FOR REAL on this host: ``command-runner.jar`` args are an argv (``env K=V cmd ...`` too);
  ``spark-submit ... app.py args`` runs ``app.py`` with this Python (``--conf
  spark.yarn.appMasterEnv.K=V`` becomes its environment); a ``.jar`` application succeeds.
  Exit 0 -> COMPLETED, else FAILED with FailureDetails. The step's stdout/stderr are uploaded
  gzipped to ``<LogUri><cluster>/steps/<step>/stdout.gz`` in moto's S3, as EMR lays them out;
- ``CancelSteps``: a PENDING step is CANCELLED; a RUNNING one CANCEL_PENDING, then its process
  is interrupted and it is CANCELLED (EMR's SEND_INTERRUPT);
- :meth:`EmrSimulator.kill`: the cluster ends TERMINATED_WITH_ERRORS with a reason code
  (INSTANCE_FAILURE: a spot loss), its running steps' processes killed: RUNNING -> FAILED and
  PENDING -> CANCELLED (both without FailureDetails);
- :meth:`EmrSimulator.throttle`: the next N requests (of one action, if given) answer
  ``ThrottlingException``; :meth:`EmrSimulator.refuse`: the next call of an action answers
  ``ValidationException``;
- :attr:`EmrSimulator.calls`: requests served, per action (``RunJobFlow``: clusters made).

Everything runs in the test's process (``moto.server.ThreadedMotoServer`` on a free port) and
one background thread moves the clusters every ``tick_s``; a lock keeps it and the requests
apart. One simulator per process at a time (it patches moto's classes).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.emr import models as emr_models
from moto.emr.exceptions import ValidationException
from moto.emr.responses import ElasticMapReduceResponse
from moto.server import ThreadedMotoServer

ACCOUNT = "123456789012"
"""moto's default account."""
INFRASTRUCTURE_CODES = ("INSTANCE_FAILURE", "INSTANCE_FLEET_TIMEOUT", "INTERNAL_ERROR")
_SIZES = {"medium": 2, "large": 4, "xlarge": 8, "2xlarge": 16, "4xlarge": 32, "8xlarge": 64}
"""EMR's normalization factors by instance size (EMR management guide, "normalized instance
hours")."""


class Throttled(ServiceException):
    code = "ThrottlingException"
    message = "Rate exceeded"


@dataclass
class _Run:
    process: subprocess.Popen[bytes] | None
    out: Path
    err: Path
    cancelled: bool = False


@dataclass
class _ClusterSim:
    born: float
    ready: float | None = None
    runs: dict[str, _Run] = field(default_factory=dict)


class EmrSimulator:
    """moto's EMR on ``127.0.0.1:<free port>`` with clusters and steps that move (see the
    module's docstring). Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, *, boot_s: float = 0.5, tick_s: float = 0.05,
                 region: str = "us-east-1", work_dir: Path | None = None) -> None:
        self.boot_s = boot_s
        self.tick_s = tick_s
        self.region = region
        self.calls: Counter[str] = Counter()
        self._faults: list[tuple[str | None, ServiceException]] = []
        self._lock = threading.RLock()
        self._sims: dict[str, _ClusterSim] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: ThreadedMotoServer | None = None
        self._saved: dict[tuple[type, str], Any] = {}
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="bh-emr-sim-")
        self.work_dir = work_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.endpoint_url = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EmrSimulator:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._patch()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._loop, name="emr-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for sim in self._sims.values():
                for run in sim.runs.values():
                    _kill(run)
        if self._server is not None:
            self._server.stop()
        self._unpatch()
        emr_models.emr_backends.reset()
        from moto.s3.models import s3_backends

        s3_backends.reset()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmrSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str = "emr") -> Any:
        """A boto3 client of this simulator (dummy credentials)."""
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    # -- faults ------------------------------------------------------------------------------
    def throttle(self, requests: int, action: str | None = None) -> None:
        """The next ``requests`` EMR requests (of ``action`` only, if given) answer
        ThrottlingException."""
        with self._lock:
            self._faults += [(action, Throttled())] * requests

    def refuse(self, action: str, message: str, requests: int = 1) -> None:
        """The next ``requests`` calls of ``action`` answer ValidationException (as EMR
        refuses a bad request: a wrong role, an unknown instance type)."""
        with self._lock:
            self._faults += [(action, ValidationException(message))] * requests

    def kill(self, cluster_id: str, code: str = "INSTANCE_FAILURE",
             message: str = "Spot instances were reclaimed") -> None:
        """End ``cluster_id`` TERMINATED_WITH_ERRORS with ``code``, as a spot loss does."""
        with self._lock:
            cluster = self.backend.clusters[cluster_id]
            sim = self._sims.get(cluster_id)
            for step in cluster.steps:
                if step.state in ("RUNNING", "CANCEL_PENDING"):
                    if sim is not None and step.id in sim.runs:
                        _kill(sim.runs.pop(step.id))
                    _end(step, "FAILED")
                elif step.state == "PENDING":
                    _end(step, "CANCELLED")
            cluster.state = "TERMINATED_WITH_ERRORS"
            cluster.bh_reason = {"Code": code, "Message": message}
            cluster.end_datetime = utcnow()

    # -- views -------------------------------------------------------------------------------
    @property
    def backend(self) -> Any:
        return emr_models.emr_backends[ACCOUNT][self.region]

    def clusters(self, *states: str) -> list[Any]:
        """moto's clusters (in these states, if given), oldest first."""
        with self._lock:
            found = sorted(self.backend.clusters.values(), key=lambda c: c.creation_datetime)
            return [c for c in found if not states or c.state in states]

    def active_steps(self) -> int:
        with self._lock:
            return sum(1 for c in self.backend.clusters.values() for s in c.steps
                       if s.state in ("PENDING", "RUNNING", "CANCEL_PENDING"))

    # -- the tick ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                with self._lock:
                    self._tick(time.monotonic())
            except Exception:  # the simulator must outlive one bad tick
                logging.getLogger(__name__).exception("EMR simulator tick failed")

    def _tick(self, now: float) -> None:
        for cluster in list(self.backend.clusters.values()):
            sim = self._sims.setdefault(cluster.id, _ClusterSim(born=now))
            if cluster.state in ("TERMINATED", "TERMINATED_WITH_ERRORS"):
                for step_id in list(sim.runs):
                    _kill(sim.runs.pop(step_id))
                continue
            if cluster.state in ("STARTING", "BOOTSTRAPPING"):
                self._boot(cluster, sim, now)
                continue
            if cluster.state == "TERMINATING":
                continue
            self._finish_steps(cluster, sim)
            self._start_steps(cluster, sim)
            busy = any(s.state in ("RUNNING", "CANCEL_PENDING") for s in cluster.steps)
            cluster.state = "RUNNING" if busy else "WAITING"
            self._accrue(cluster, sim, now)

    def _boot(self, cluster: Any, sim: _ClusterSim, now: float) -> None:
        if now - sim.born >= self.boot_s:
            cluster.state = "WAITING"
            cluster.ready_datetime = utcnow()
            sim.ready = now
        elif now - sim.born >= self.boot_s / 2:
            cluster.state = "BOOTSTRAPPING"

    def _accrue(self, cluster: Any, sim: _ClusterSim, now: float) -> None:
        units = sum(_factor(g.instance_type) * g.num_instances for g in cluster.instance_groups)
        cluster.normalized_instance_hours = units * max(1, math.ceil((now - sim.born) / 3600))

    def _start_steps(self, cluster: Any, sim: _ClusterSim) -> None:
        running = sum(1 for s in cluster.steps if s.state in ("RUNNING", "CANCEL_PENDING"))
        for step in cluster.steps:  # in the order they were added
            if running >= (cluster.step_concurrency_level or 1):
                return
            if step.state != "PENDING":
                continue
            step.state = "RUNNING"
            step.start()
            sim.runs[step.id] = self._launch(cluster, step)
            running += 1

    def _finish_steps(self, cluster: Any, sim: _ClusterSim) -> None:
        for step in cluster.steps:
            run = sim.runs.get(step.id)
            if run is None:
                continue
            if step.state == "CANCEL_PENDING" and not run.cancelled:
                run.cancelled = True
                if run.process is not None and run.process.poll() is None:
                    run.process.send_signal(signal.SIGINT)
            code = 0 if run.process is None else run.process.poll()
            if code is None:
                continue
            sim.runs.pop(step.id)
            self._upload_logs(cluster, step, run)
            if run.cancelled:
                _end(step, "CANCELLED")
            elif code == 0:
                _end(step, "COMPLETED")
            else:
                _end(step, "FAILED")
                step.bh_failure = {"Reason": "Unknown Error.",
                                   "Message": f"Step {step.id} failed",
                                   "LogFile": self._log_key(cluster, step, "stderr.gz")}

    def _launch(self, cluster: Any, step: Any) -> _Run:
        base = self.work_dir / cluster.id / step.id
        base.mkdir(parents=True, exist_ok=True)
        out, err = base / "stdout", base / "stderr"
        argv, env = _argv(list(step.args))
        if argv is None:
            out.write_bytes(b"")
            err.write_bytes(b"")
            return _Run(process=None, out=out, err=err)
        with open(out, "wb") as o, open(err, "wb") as e:
            try:
                process = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                           env={**os.environ, **env}, cwd=base)
            except OSError as exc:
                e.write(f"command-runner: cannot run {argv[0]}: {exc}\n".encode())
                process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(127)"])
        return _Run(process=process, out=out, err=err)

    def _log_key(self, cluster: Any, step: Any, name: str) -> str | None:
        if not cluster.log_uri:
            return None
        return f"{cluster.log_uri.rstrip('/')}/{cluster.id}/steps/{step.id}/{name}"

    def _upload_logs(self, cluster: Any, step: Any, run: _Run) -> None:
        if not cluster.log_uri or not str(cluster.log_uri).startswith("s3://"):
            return
        from moto.s3.models import s3_backends  # moto's S3, in this process

        backend = s3_backends[ACCOUNT]["aws"]
        bucket, _, prefix = str(cluster.log_uri)[5:].partition("/")
        if bucket not in backend.buckets:
            backend.create_bucket(bucket, self.region)
        for stream, path in (("stdout", run.out), ("stderr", run.err)):
            key = f"{prefix.rstrip('/') + '/' if prefix else ''}{cluster.id}/steps/{step.id}/"
            backend.put_object(bucket, key + f"{stream}.gz", gzip.compress(path.read_bytes()))

    # -- patches -----------------------------------------------------------------------------
    def _patch(self) -> None:
        sim = self
        original_call = ElasticMapReduceResponse.call_action

        def call_action(response: Any) -> Any:
            action = response._get_action()
            with sim._lock:
                sim.calls[action] += 1
                for i, (only, fault) in enumerate(sim._faults):
                    if only in (None, action):
                        del sim._faults[i]
                        return response.serialized(ActionResult(fault))
                return original_call(response)

        def cancel_steps(response: Any) -> ActionResult:
            """CancelSteps (absent from moto): SEND_INTERRUPT semantics."""
            cluster = response.backend.describe_cluster(response._get_param("ClusterId"))
            wanted = list(response._get_param("StepIds", []))
            out = []
            for step in cluster.steps:
                if step.id not in wanted:
                    continue
                if step.state == "PENDING":
                    _end(step, "CANCELLED")
                    out.append({"StepId": step.id, "Status": "SUBMITTED", "Reason": ""})
                elif step.state == "RUNNING":
                    step.state = "CANCEL_PENDING"
                    out.append({"StepId": step.id, "Status": "SUBMITTED", "Reason": ""})
                else:
                    out.append({"StepId": step.id, "Status": "FAILED",
                                "Reason": f"step is {step.state}"})
            return ActionResult({"CancelStepsInfoList": out})

        def add_steps(cluster: Any, steps: list[dict[str, Any]]) -> list[Any]:
            """Every new step PENDING; the cluster's state is the simulator's to move."""
            added = [emr_models.Step(state="PENDING", **step) for step in steps]
            cluster.steps.extend(added)
            return added

        def bootstrap(cluster: Any) -> None:
            """The cluster stays STARTING: the simulator boots it."""

        def cluster_status(cluster: Any) -> dict[str, Any]:
            reason = getattr(cluster, "bh_reason", None)
            if reason is None and cluster.state == "TERMINATED":
                reason = {"Code": "USER_REQUEST", "Message": "Terminated by user request"}
            return {"State": cluster.state, "StateChangeReason": reason or {},
                    "Timeline": {"CreationDateTime": cluster.creation_datetime,
                                 "EndDateTime": cluster.end_datetime,
                                 "ReadyDateTime": cluster.ready_datetime}}

        def step_status(step: Any) -> dict[str, Any]:
            status: dict[str, Any] = {
                "State": step.state, "StateChangeReason": {},
                "Timeline": {"CreationDateTime": step.creation_date_time,
                             "EndDateTime": step.end_date_time,
                             "StartDateTime": step.start_date_time}}
            if getattr(step, "bh_failure", None):
                status["FailureDetails"] = step.bh_failure
            return status

        self._set(ElasticMapReduceResponse, "call_action", call_action)
        self._set(ElasticMapReduceResponse, "cancel_steps", cancel_steps)
        self._set(emr_models.Cluster, "add_steps", add_steps)
        self._set(emr_models.Cluster, "run_bootstrap_actions", bootstrap)
        self._set(emr_models.Cluster, "status", property(cluster_status))
        self._set(emr_models.Step, "status", property(step_status))

    def _set(self, cls: type, name: str, value: Any) -> None:
        self._saved[(cls, name)] = cls.__dict__.get(name)
        setattr(cls, name, value)

    def _unpatch(self) -> None:
        for (cls, name), value in self._saved.items():
            if value is None:
                delattr(cls, name)
            else:
                setattr(cls, name, value)
        self._saved.clear()


def _end(step: Any, state: str) -> None:
    step.state = state
    step.end_date_time = utcnow()


def _kill(run: _Run) -> None:
    if run.process is not None and run.process.poll() is None:
        run.process.kill()
        run.process.wait()


def _factor(instance_type: str) -> int:
    return _SIZES.get(instance_type.rpartition(".")[2], 8)


def _argv(args: list[str]) -> tuple[list[str] | None, dict[str, str]]:
    """What a command-runner step runs here: (argv or None for "succeed at once", env)."""
    if not args or args[0] != "spark-submit":
        return args or None, {}
    env: dict[str, str] = {}
    flags = {"--verbose", "--supervise"}
    rest = iter(args[1:])
    for arg in rest:
        if arg in flags:
            continue
        if arg.startswith("--"):
            value = next(rest, "")
            if arg == "--conf" and value.startswith("spark.yarn.appMasterEnv."):
                name, _, val = value.removeprefix("spark.yarn.appMasterEnv.").partition("=")
                env[name] = val
            continue
        application, arguments = arg, list(rest)
        if application.endswith(".py"):
            return [sys.executable, application.removeprefix("file:"), *arguments], env
        return None, env
    return None, env


def steps_of(cluster: Any) -> Iterator[Any]:
    """moto's steps of ``cluster`` (for assertions)."""
    yield from cluster.steps
