"""Spark applications as Apache Livy batches (``POST /batches``), optionally confirmed by the
YARN ResourceManager behind Livy.

Names and tags. A batch's ``name`` is ``<label> bh:<tag>`` (the job's name with anything but
``[A-Za-z0-9._-]`` replaced by ``_``, so the first `` bh:`` is ours; ``<tag>`` is the
attempt's tag, opaque). Livy refuses a name held by a batch it has in memory with 400 before
spark-submit (SessionManager.scala:105-110), so create is idempotent by name: a duplicate-name
400 after a lost answer means "it exists" and the backend adopts it. The YARN app also
carries our tag ``bh-<tag>`` (lower-cased as YARN stores tags; a hash when the tag is not
``[a-z0-9._-]``) in ``spark.yarn.tags``, after the user's own tags (never instead of them);
Livy puts its ``livy-batch-<id>-<rand>`` in front (SparkApp.scala:76-81). The job's ``env``
is the driver's environment through ``spark.yarn.appMasterEnv.<NAME>`` (YARN cluster mode).

Native id: ``<batch id>/<name>``, or ``-/<name>`` for an app found only on YARN (Livy dropped
its batch). The NAME is the key: Livy's ids restart at 0 when it restarts with recovery off,
so an id alone may now be another job's; every answer about a batch is taken from the
listing entry with our name, never from the id.

Poll: ONE ``GET /batches?from=0&size=<page_size>`` per cycle for every batch (more pages only
when ``total`` exceeds the page), never a GET per batch; with ``yarn_url``, ONE
``GET /ws/v1/cluster/apps?applicationTags=<our tags>`` too for the batches Livy says ended or
no longer lists (none in most cycles; split every 500 tags to keep the URL short). Livy's
states -> Bridgehead's (:data:`STATES`):

=====================================  ==========================================
not_started, starting, recovering      SUBMITTED (recovering: RUNNING if it ran)
idle, running, busy                    RUNNING
shutting_down                          RUNNING, settling
success                                SUCCEEDED, exit code 0
dead, error                            FAILED (the log's tail and YARN's diagnostics
                                       as the reason, or that YARN has no app for the
                                       tag: Livy's app lookup timed out; Livy gives no
                                       exit code)
killed                                 CANCELLED if this backend cancelled it, else
                                       LOST with ``infrastructure`` (a Livy restart with
                                       recovery off kills every batch)
=====================================  ==========================================

With YARN, YARN decides the end: FINISHED+SUCCEEDED is success, FINISHED+FAILED or FAILED is
failed, KILLED as Livy's killed; while Livy says ended and YARN does not (state and
finalStatus disagree for a while) the job stays RUNNING, settling. Usage comes from YARN:
``vcoreSeconds`` exactly as core-seconds (``memorySeconds``, YARN's allocated MB-seconds, is
not carried: :class:`Usage`'s ``max_rss_mb`` is a peak resident size, not an allocation; see
:meth:`bridgehead.backends.livy_yarn.YarnRM.usage`). Without YARN there is no usage.

A batch missing from the listing (dropped after ``livy.server.session.state-retain.sec``, or
Livy restarted): with YARN, the app found by our tag decides; else one last seen ``success``
stays SUCCEEDED, one cancelled here is CANCELLED (DELETE removes a batch at once), one last
seen running is LOST (never succeeded), and one never seen is left out (the agent's grace
decides).

Logs: :mod:`bridgehead.backends.livy_logs` (``GET /batches/{id}/log`` pages; the log's
``stdout:`` and ``stderr:`` sections are the two streams). In YARN cluster mode those are
spark-submit's output, not the driver's: the driver's own output is in YARN's logs
(``appInfo.driverLogUrl``).

Limit: Livy forgets a name once it drops the batch. Without ``yarn_url``, a batch created
just before an agent crash, that ended and was dropped before the agent came back, cannot be
found again and would be submitted again: set ``yarn_url`` (YARN keeps the app and its tag),
or keep ``state-retain.sec`` above the agent's downtime.

Cancel: ``DELETE /batches/{id}`` (YARN ``PUT .../state KILLED`` for an app Livy dropped).
Every non-GET carries ``X-Requested-By`` (Livy's CSRF filter, CsrfFilter.scala:37-40).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence
from typing import Any

import httpx

from bridgehead.backends.base import NativeStatus
from bridgehead.backends.livy_logs import DIAGNOSTICS, STDERR, STDOUT, BatchLogs
from bridgehead.backends.livy_yarn import YarnRM, yarn_tag
from bridgehead.config import LivySettings
from bridgehead.domain.clusters import SPARK, SPARK_ONLY, Capacity
from bridgehead.domain.jobs import JobSpec, JobState, Usage
from bridgehead.domain.spark import SparkApp
from bridgehead.errors import BackendUnavailable, SubmitRejected

logger = logging.getLogger(__name__)

STATES: dict[str, JobState] = {
    "not_started": JobState.SUBMITTED,
    "starting": JobState.SUBMITTED,     # spark-submit runs, or YARN has not started the app
    "recovering": JobState.SUBMITTED,   # Livy restarted with recovery on: resyncing by tag
    "idle": JobState.RUNNING,
    "running": JobState.RUNNING,
    "busy": JobState.RUNNING,
    "shutting_down": JobState.RUNNING,  # settling
    "success": JobState.SUCCEEDED,
    "dead": JobState.FAILED,
    "error": JobState.FAILED,
    "killed": JobState.CANCELLED,       # LOST (infrastructure) unless we cancelled it
}
"""Livy's ``SessionState`` (core/src/main/scala/org/apache/livy/sessions/SessionState.scala)
-> Bridgehead's."""

OWNED_CONF = {
    "spark.yarn.submit.waitAppCompletion": "Livy sets it to false (SparkApp.scala:81)",
}
_MARK = " bh:"
_RAN = ("idle", "running", "busy", "shutting_down")


def batch_name(tag: str, label: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", label or "bridgehead")[:100] + _MARK + tag


def tag_of_name(name: str) -> str | None:
    label, mark, tag = name.partition(_MARK)
    return tag if mark and re.fullmatch(r"[A-Za-z0-9._-]+", label) else None


def _name_of(native_id: str) -> str:
    return native_id.partition("/")[2]


class LivyBackend:
    kind = "livy"
    files_shared = False

    def __init__(self, settings: LivySettings) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        verify: bool | ssl.SSLContext = (ssl.create_default_context(cafile=settings.verify)
                                         if isinstance(settings.verify, str)
                                         else settings.verify)
        self._client = httpx.AsyncClient(timeout=settings.request_timeout_s, verify=verify)
        self.yarn = YarnRM(settings.yarn_url, self._client) if settings.yarn_url else None
        self._seen: dict[str, str] = {}
        """name -> the Livy state last seen."""
        self._ids: dict[str, int] = {}
        """name -> its batch id in the last listing (logs are read by the CURRENT id)."""
        self._cancelled: set[str] = set()
        self.logs = BatchLogs(self._lines, interval_s=settings.log_interval_s,
                              page=settings.page_size)
        self.requests = 0
        """Requests sent to Livy (tests and the benchmark: one listing per poll cycle)."""

    # -- submit ------------------------------------------------------------------------------
    async def submit(self, job_id: str, spec: JobSpec) -> str:
        body = self.request_body(job_id, spec, self._app(spec))
        name = body["name"]
        response = await self._send("POST", "/batches", json=body)
        data = _json(response)
        message = str(data.get("msg") or "") if isinstance(data, dict) else ""
        if response.status_code == 400 and "Duplicate session name" in message:
            batch = (await self._list()).get(name)
            if batch is None:
                raise BackendUnavailable(f"Livy says batch {name!r} exists but does not list "
                                         "it: looking again")
            logger.info("Livy already has batch %s (a lost answer): adopting it", name)
            return self._native(batch)
        if response.status_code == 400 and "too many sessions" in message:
            raise BackendUnavailable(f"Livy is busy: {message}")
        if 400 <= response.status_code < 500:
            raise SubmitRejected(f"Livy refused the batch: {message or response.text[:500]}")
        if response.status_code != 201 or not isinstance(data, dict) or "id" not in data:
            raise BackendUnavailable(f"Livy answered POST /batches with HTTP "
                                     f"{response.status_code}: {response.text[:300]}")
        self._seen[name] = str(data.get("state"))
        return f"{data['id']}/{name}"

    def _app(self, spec: JobSpec) -> SparkApp:
        if spec.spark is None:
            raise SubmitRejected("this cluster runs Spark applications only (livy): give the "
                                 "job a spark part, not a command or script")
        if spec.working_dir is not None:
            raise SubmitRejected("working_dir: a Livy batch runs where YARN puts its driver")
        res = spec.resources
        for name in ("walltime_s", "partition", "account"):
            if getattr(res, name) is not None:
                raise SubmitRejected(f"resources.{name}: livy does not take it (give the "
                                     "driver's and executors' sizes in spark)")
        if res.gpus:
            raise SubmitRejected("resources.gpus: livy does not take it")
        for key, why in OWNED_CONF.items():
            if key in spec.spark.conf:
                raise SubmitRejected(f"spark.conf {key}: {why}")
        caps = [c for c in (res.max_cores, self.settings.max_cores) if c is not None]
        return spec.spark.capped(min(caps) if caps else None)

    def request_body(self, tag: str, spec: JobSpec, app: SparkApp) -> dict[str, Any]:
        """Livy's CreateBatchRequest (docs/rest-api.md, POST /batches)."""
        conf = {**self.settings.conf, **app.conf}
        ours = yarn_tag(tag)
        theirs = conf.get("spark.yarn.tags")
        conf["spark.yarn.tags"] = f"{theirs},{ours}" if theirs else ours
        for key, value in {**spec.env, "BRIDGEHEAD_JOB_ID": tag}.items():
            conf_key = f"spark.yarn.appMasterEnv.{key}"
            if conf_key in app.conf and app.conf[conf_key] != value:
                raise SubmitRejected(f"env {key} and spark.conf {conf_key} disagree: give one")
            conf[conf_key] = value
        body: dict[str, Any] = {
            "file": app.application, "args": list(app.arguments),
            "name": batch_name(tag, spec.name), "conf": conf,
            "driverCores": app.driver_cores, "executorCores": app.executor_cores,
            "numExecutors": app.executors}
        if app.main_class is not None:
            body["className"] = app.main_class
        for key, values in (("jars", app.jars), ("pyFiles", app.py_files),
                            ("files", app.files)):
            if values:
                body[key] = list(values)
        for key, mb in (("driverMemory", app.driver_memory_mb),
                        ("executorMemory", app.executor_memory_mb)):
            if mb is not None:
                body[key] = f"{mb}m"
        if self.settings.proxy_user:
            body["proxyUser"] = self.settings.proxy_user
        if self.settings.queue:
            body["queue"] = self.settings.queue
        return body

    # -- poll --------------------------------------------------------------------------------
    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        if not native_ids:
            return {}
        listing = await self._list()
        names = {nid: _name_of(nid) for nid in native_ids}
        ending = [t for n in names.values() if (t := tag_of_name(n)) is not None
                  and (n not in listing or _ended(listing[n]))]
        apps = await self._yarn_apps(ending)  # YARN only for ends: none in most cycles
        self._forget(set(names.values()))
        out: dict[str, NativeStatus] = {}
        for nid, name in names.items():
            tag = tag_of_name(name)
            app = apps.get(yarn_tag(tag)) if tag is not None else None
            batch = listing.get(name)
            status = (self._from_batch(name, batch, app) if batch is not None
                      else self._missing(name, app))
            if status is not None:
                out[nid] = status
        return out

    def _forget(self, polled: set[str]) -> None:
        """Drop what is kept about batches the agent no longer follows."""
        self._seen = {n: s for n, s in self._seen.items() if n in polled}
        self.logs.forget(polled)
        self._cancelled &= polled

    def _from_batch(self, name: str, batch: dict[str, Any],
                    app: dict[str, Any] | None) -> NativeStatus | None:
        native = str(batch.get("state"))
        before = self._seen.get(name)
        self._seen[name] = native
        state = STATES.get(native)
        if state is None:
            return None
        if native == "recovering" and before in _RAN:
            state = JobState.RUNNING
        if not state.terminal:
            return NativeStatus(state=state, settling=native == "shutting_down")
        if app is not None:
            return self._from_yarn(name, app)
        if native == "killed":
            return self._killed(name, None)
        if state is JobState.SUCCEEDED:
            return NativeStatus(state=state, exit_code=0)
        why = _reason(native, batch, None)
        tag = tag_of_name(name)
        if self.yarn is not None and tag is not None:  # asked: e.g. Livy's app lookup timed out
            why += (f"; YARN has no application tagged {yarn_tag(tag)} (it never reached "
                    "YARN, or YARN no longer keeps it)")
        return NativeStatus(state=JobState.FAILED, reason=why)

    def _from_yarn(self, name: str, app: dict[str, Any]) -> NativeStatus:
        """YARN's word on an app (ResourceManagerRest.md: state, finalStatus)."""
        state, final = str(app.get("state")), str(app.get("finalStatus"))
        if state not in ("FINISHED", "FAILED", "KILLED"):
            # Livy may say ended while YARN still says RUNNING (its finalStatus set or not)
            return NativeStatus(state=JobState.RUNNING, settling=True)
        usage = self.yarn.usage(app) if self.yarn is not None else None
        if state == "FINISHED" and final == "SUCCEEDED":
            return NativeStatus(state=JobState.SUCCEEDED, exit_code=0, usage=usage)
        if state == "KILLED":
            return self._killed(name, usage)
        return NativeStatus(state=JobState.FAILED, usage=usage,
                            reason=_reason(f"YARN {state}/{final}", None, app))

    def _killed(self, name: str, usage: Usage | None) -> NativeStatus:
        if name in self._cancelled:
            return NativeStatus(state=JobState.CANCELLED, reason="cancelled through Livy",
                                usage=usage)
        return NativeStatus(state=JobState.LOST, infrastructure=True, usage=usage,
                            reason="killed, and not by Bridgehead: Livy restarted with "
                                   "recovery off (it stops every batch) or someone killed it")

    def _missing(self, name: str, app: dict[str, Any] | None) -> NativeStatus | None:
        last = self._seen.get(name)
        if app is not None:
            return self._from_yarn(name, app)
        if last == "success":
            return NativeStatus(state=JobState.SUCCEEDED, exit_code=0)
        if last in ("dead", "error"):
            return NativeStatus(state=JobState.FAILED, reason=f"Livy said {last}")
        if name in self._cancelled:
            return NativeStatus(state=JobState.CANCELLED, reason="cancelled through Livy")
        if last is not None and last != "killed":
            return NativeStatus(state=JobState.LOST,
                                reason=f"Livy no longer lists this batch (last seen {last}): "
                                       "it restarted or dropped it; it never said success")
        return None

    # -- cancel, find ------------------------------------------------------------------------
    async def cancel(self, native_ids: Sequence[str]) -> None:
        """``DELETE /batches/{id}`` for each batch still running, by its id in ONE fresh
        listing. A batch that has already ended is left alone: DELETE would remove the record
        of its true end (Livy drops a deleted batch at once)."""
        if not native_ids:
            return
        listing = await self._list()
        for nid in native_ids:
            name = _name_of(nid)
            batch = listing.get(name)
            if batch is not None and _ended(batch):
                continue
            self._cancelled.add(name)
            if batch is not None:
                batch_id = batch["id"]
                response = await self._send("DELETE", f"/batches/{batch_id}")
                if response.status_code not in (200, 404):
                    raise BackendUnavailable(f"Livy answered DELETE /batches/{batch_id} with "
                                             f"HTTP {response.status_code}")
            elif self.yarn is not None and (tag := tag_of_name(name)):
                for app in (await self.yarn.apps([tag])).values():
                    if app.get("state") not in ("FINISHED", "FAILED", "KILLED"):
                        await self.yarn.kill(str(app.get("id")))

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Native ids by tag: from the listing (by name), then YARN (by our tag)."""
        if not tags:
            return {}
        listing = await self._list()
        by_tag: dict[str, list[str]] = {}
        for name, batch in listing.items():
            tag = tag_of_name(name)
            if tag is not None:
                by_tag.setdefault(tag, []).append(self._native(batch))
        apps = await self._yarn_apps([t for t in tags if t not in by_tag])
        out: dict[str, list[str]] = {}
        for tag in tags:
            found = by_tag.get(tag, [])
            app = apps.get(yarn_tag(tag))
            if not found and app is not None:
                found = [f"-/{app.get('name')}"]
            out[tag] = found
        return out

    def _native(self, batch: dict[str, Any]) -> str:
        name = str(batch.get("name"))
        self._seen.setdefault(name, str(batch.get("state")))
        return f"{batch.get('id')}/{name}"

    # -- logs --------------------------------------------------------------------------------
    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        name = _name_of(native_id)
        batch_id = self._ids.get(name)  # its id now (ids are reused after a Livy restart)
        if batch_id is None:
            return b""
        ended = STATES.get(self._seen.get(name, ""), JobState.RUNNING).terminal
        return await self.logs.read(name, batch_id, stream, ended=ended, offset=offset,
                                    limit=limit)

    async def _lines(self, batch_id: int, start: int, size: int) -> list[str]:
        response = await self._send("GET", f"/batches/{batch_id}/log",
                                    params={"from": start, "size": size})
        data = _json(response)
        if response.status_code == 404:
            return []
        if response.status_code != 200 or not isinstance(data, dict):
            raise BackendUnavailable(f"Livy answered the log of batch {batch_id} with HTTP "
                                     f"{response.status_code}")
        return [str(line) for line in data.get("log") or []]

    # -- plumbing ----------------------------------------------------------------------------
    def free_slots(self) -> int | None:
        return None

    def capacity(self) -> Capacity | None:
        return Capacity(cores=None, honours=(SPARK, SPARK_ONLY, "resources.memory_mb"),
                        backend=self.kind, source="its Livy server")

    async def close(self) -> None:
        await self._client.aclose()

    async def _list(self) -> dict[str, dict[str, Any]]:
        """Every batch Livy has, by name: ``GET /batches`` pages (SessionServlet.scala:71-82)."""
        out: dict[str, dict[str, Any]] = {}
        start, size = 0, self.settings.page_size
        while True:
            response = await self._send("GET", "/batches", params={"from": start, "size": size})
            data = _json(response)
            if response.status_code != 200 or not isinstance(data, dict):
                raise BackendUnavailable(f"Livy answered GET /batches with HTTP "
                                         f"{response.status_code}: {response.text[:300]}")
            sessions = [s for s in data.get("sessions") or [] if isinstance(s, dict)]
            for batch in sessions:
                if batch.get("name") is not None:
                    out[str(batch["name"])] = batch
            start += len(sessions)
            if not sessions or start >= int(data.get("total") or 0):
                break
        self._ids = {name: int(b["id"]) for name, b in out.items()}
        return out

    async def _yarn_apps(self, tags: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self.yarn.apps(tags) if self.yarn is not None and tags else {}

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {} if method == "GET" else {"X-Requested-By": self.settings.requested_by}
        try:
            response = await self._client.request(method, self.url + path, headers=headers,
                                                  **kw)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach Livy at {self.url}: {exc!r}") from exc
        self.requests += 1
        if response.status_code >= 500:
            raise BackendUnavailable(f"Livy answered {method} {path} with HTTP "
                                     f"{response.status_code}: {response.text[:300]}")
        return response


def _ended(batch: dict[str, Any]) -> bool:
    return STATES.get(str(batch.get("state")), JobState.RUNNING).terminal


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reason(what: str, batch: dict[str, Any] | None, app: dict[str, Any] | None) -> str:
    """Why it failed: YARN's diagnostics, else the tail of the batch's log (the listing
    carries its last 10 lines: BatchSessionServlet.scala:64-74). Livy gives no exit code."""
    if app is not None and str(app.get("diagnostics") or "").strip():
        return f"{what}: {str(app['diagnostics']).strip()[:2000]}"
    tail = [str(line).strip() for line in (batch or {}).get("log") or []
            if str(line).strip() and str(line) not in (STDOUT, STDERR, DIAGNOSTICS)]
    detail = " | ".join(tail[-3:])[:2000]
    return (f"Livy batch {what}" + (f": {detail}" if detail else "")
            + " (Livy gives no exit code)")
