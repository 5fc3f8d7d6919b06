"""The Python SDK: ``AsyncClient`` (the one implementation) and ``Client`` (sync, for scripts,
the CLI and the Airflow hook), which runs the async methods on a private event loop.

    with Client() as bh:                 # URL and token from settings / `bridgehead up`
        job = bh.submit(JobSpec(cluster="local", command=("echo", "hi")))
        job = bh.wait(job.id, until="terminal")
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import logging
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import certifi
import httpx

from bridgehead.client.replicas import NOT_SENT, UNAVAILABLE, Replicas, may_repeat
from bridgehead.config import ClientSettings, server_urls
from bridgehead.domain.jobs import Job, JobSpec, JobState, Resources, Transition, Usage
from bridgehead.errors import (
    AuthError,
    ClientError,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidSpec,
    NotFound,
    RateLimited,
    ServerUnavailable,
)
from bridgehead.logs import quiet_requests
from bridgehead.store.base import LogChunk

logger = logging.getLogger(__name__)
RIDE_OUT_S = 60.0
"""How long a long-poll goes on retrying while no replica answers (then ServerUnavailable)."""
MAX_RETRY_AFTER_S = 30.0
"""The longest a 429's Retry-After is honoured for (a longer one waits this long)."""

_BY_STATUS: dict[int, type[ClientError] | type[Exception]] = {
    400: InvalidSpec, 401: AuthError, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: InvalidSpec, 422: InvalidSpec,
}


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def job_from_api(data: dict[str, Any]) -> Job:
    usage = data.get("usage")
    return Job(
        id=data["id"], state=JobState(data["state"]),
        # an array element's spec is its parent's, without what runs (not a request)
        spec=(JobSpec.from_stored(data["spec"]) if data.get("parent_id")
              else JobSpec.from_dict(data["spec"])),
        parent_id=data.get("parent_id"), array_index=data.get("array_index"),
        elements=data.get("elements"), log_base=data.get("log_base"),
        version=data["version"], attempt=data["attempt"], native_id=data["native_id"],
        agent_id=data.get("agent_id"),
        exit_code=data["exit_code"], reason=data["reason"],
        cancel_requested=data["cancel_requested"],
        usage=Usage(elapsed_s=usage["elapsed_s"], cores=usage["cores"], nodes=usage["nodes"],
                    max_rss_mb=usage["max_rss_mb"], estimated=usage.get("estimated", False),
                    instance_hours=usage.get("instance_hours")) if usage else None,
        created_at=_epoch(data["created_at"]) or 0.0, updated_at=_epoch(data["updated_at"]) or 0.0,
        submitted_at=_epoch(data["submitted_at"]), started_at=_epoch(data["started_at"]),
        finished_at=_epoch(data["finished_at"]),
    )


def transition_to_api(t: Transition) -> dict[str, Any]:
    out: dict[str, Any] = {"job_id": t.job_id, "state": t.state.value}
    for key in ("native_id", "exit_code", "reason", "at"):
        if getattr(t, key) is not None:
            out[key] = getattr(t, key)
    if t.usage is not None:
        out["usage"] = {"elapsed_s": t.usage.elapsed_s, "cores": t.usage.cores,
                        "nodes": t.usage.nodes, "max_rss_mb": t.usage.max_rss_mb}
        if t.usage.estimated:  # only when set: other backends' reports stay as they were
            out["usage"].update(estimated=True, instance_hours=t.usage.instance_hours)
    if t.infrastructure:
        out["infrastructure"] = True
    return out


def chunk_to_api(c: LogChunk) -> dict[str, Any]:
    return {"job_id": c.job_id, "stream": c.stream, "pos": c.pos,
            "data": base64.b64encode(c.data).decode()}


Verify = str | Path | ssl.SSLContext | None
"""How a client checks the server's TLS certificate: a PEM CA bundle's path, a ready
``ssl.SSLContext``, or None (the settings' ``ca_bundle``, else certifi's CAs, as httpx)."""


def tls_context(verify: Verify) -> ssl.SSLContext:
    """The SSL context of a client, made once per process and CA bundle and shared by every
    client: loading a CA bundle takes tens of milliseconds of CPU, which a triggerer running
    hundreds of triggers (each with its client) must not spend in its event loop. ConfigError
    naming a CA bundle that cannot be read."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    return _shared_context(str(verify) if verify is not None else None)


@functools.lru_cache(maxsize=16)
def _shared_context(cafile: str | None) -> ssl.SSLContext:
    """For ``cafile`` None, certifi's bundle: the CAs httpx trusts by default."""
    try:
        return ssl.create_default_context(cafile=cafile or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read CA bundle {cafile}: {exc}") from exc


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a connection error, if that is what it is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class AsyncClient:
    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None, verify: Verify = None,
    ) -> None:
        quiet_requests()  # a line per request is DEBUG, not INFO (httpx's own choice)
        settings = ClientSettings.load(url=url, token=token, timeout_s=timeout)
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self.replicas = Replicas(server_urls(settings.url))
        self.timeout = settings.timeout_s
        context = tls_context(verify if verify is not None else settings.ca_bundle)
        self._http = httpx.AsyncClient(headers=headers, transport=transport,
                                       timeout=httpx.Timeout(settings.timeout_s, connect=5.0),
                                       verify=context)

    @property
    def url(self) -> str:
        """The server (replica) this client talks to now."""
        return self.replicas.url

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, *, wait_s: float = 0.0, **kw: Any
    ) -> httpx.Response:
        """:meth:`_ride_out`; a request refused 429 (its token has too many requests in
        service at once: nothing of it was done) is sent again after the answer's
        ``Retry-After``, for up to the client's timeout (then RateLimited)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return await self._ride_out(method, path, wait_s=wait_s, **kw)
            except RateLimited as exc:
                if time.monotonic() + exc.retry_after > deadline:
                    raise
                logger.debug("%s; sending it again in %.1fs", exc, exc.retry_after)
                await asyncio.sleep(exc.retry_after)

    async def _ride_out(
        self, method: str, path: str, *, wait_s: float = 0.0, **kw: Any
    ) -> httpx.Response:
        """:meth:`_send`; a long-poll (``wait_s``) that may be sent again rides out an outage
        of every replica (or of the one behind a load balancer: a replica that dies under a
        long-poll drops it, and the balancer may answer 502 until its health check notices)
        for up to :data:`RIDE_OUT_S`, retrying with a backoff: a follower resumes with its
        cursor instead of ending."""
        if not wait_s or not may_repeat(method, path, kw):
            return await self._send(method, path, wait_s=wait_s, **kw)
        deadline = time.monotonic() + RIDE_OUT_S
        delay = 0.5
        while True:
            try:
                return await self._send(method, path, wait_s=wait_s, **kw)
            except ServerUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning("%s; retrying the long-poll in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send(
        self, method: str, path: str, *, wait_s: float = 0.0, **kw: Any
    ) -> httpx.Response:
        """Send to the current replica; on a connection error or a 502/503/504, to the next
        (see :mod:`bridgehead.client.replicas` for which requests are sent twice)."""
        if wait_s:
            kw["timeout"] = httpx.Timeout(self.timeout + wait_s, connect=5.0)
        repeat = may_repeat(method, path, kw)
        failure: Exception | None = None
        for url in self.replicas.order():
            try:
                response = await self._http.request(method, url + path, **kw)
            except httpx.TransportError as exc:
                if (bad := _untrusted(exc)) is not None:
                    raise ConfigError(
                        f"TLS: the certificate of {url} is not trusted ({bad.verify_message}): "
                        "give the CA that signed it (--ca-bundle, BRIDGEHEAD_CA_BUNDLE)") from exc
                self.replicas.failed(url)
                if not (repeat or isinstance(exc, NOT_SENT)):
                    raise ServerUnavailable(f"cannot reach Bridgehead at {url}: {exc!r}") from exc
                failure = ServerUnavailable(f"cannot reach Bridgehead at {url}: {exc!r}")
                failure.__cause__ = exc
                continue
            if response.status_code in UNAVAILABLE:
                self.replicas.failed(url)
                failure = _error_of(response)
                if repeat:
                    continue
                raise failure
            self.replicas.ok(url)
            if response.status_code >= 400:
                _raise_for(response)
            return response
        assert failure is not None
        raise failure

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self._request(method, path, **kw)).json()

    # -- jobs ------------------------------------------------------------------------------
    async def submit(self, spec: JobSpec, *, explicit: Collection[str] = ()) -> Job:
        """Submit ``spec``. A resource at its default is sent only if named in ``explicit``
        (then it beats the script's #SBATCH directive, as on sbatch's command line)."""
        body = _spec_to_api(spec, explicit)
        return job_from_api((await self._json("POST", "/v1/jobs", json=body))["job"])

    async def submit_many(self, specs: Sequence[JobSpec]) -> list[Job]:
        body = {"jobs": [_spec_to_api(s) for s in specs]}
        results = await self._json("POST", "/v1/jobs/batch", json=body)
        return [job_from_api(r["job"]) for r in results]

    async def get(self, job_id: str) -> Job:
        return job_from_api(await self._json("GET", f"/v1/jobs/{job_id}"))

    async def list_jobs(
        self, *, cluster: str | None = None, states: Sequence[str] = (), tenant: str | None = None,
        labels: dict[str, str] | None = None, limit: int = 100, after: str | None = None,
        parent: str | None = None,
    ) -> tuple[list[Job], str | None]:
        params: dict[str, Any] = {"limit": limit, "state": list(states),
                                  "label": [f"{k}={v}" for k, v in (labels or {}).items()]}
        params.update({k: v for k, v in (("cluster", cluster), ("tenant", tenant),
                                         ("after", after), ("parent", parent))
                       if v is not None})
        page = await self._json("GET", "/v1/jobs", params=params)
        return [job_from_api(j) for j in page["jobs"]], page["next"]

    async def cancel(self, job_id: str) -> Job:
        return job_from_api(await self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    async def wait(self, job_id: str, *, until: str = "terminal", timeout: float | None = None,
                   after_version: int | None = None) -> Job:
        """Wait (server long-polls, no busy polling) until the job ends (``until="terminal"``)
        or changes; ``timeout`` None waits for ever. Returns the job as it is then."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if until == "change" and after_version is None:
            after_version = (await self.get(job_id)).version
        while True:
            left = 30.0 if deadline is None else max(0.0, min(30.0, deadline - loop.time()))
            params: dict[str, Any] = {"until": until, "timeout": left}
            if after_version is not None:
                params["after_version"] = after_version
            job = job_from_api(await self._json("GET", f"/v1/jobs/{job_id}/wait", params=params,
                                                wait_s=left))
            changed = after_version is not None and job.version > after_version
            if job.terminal or (until == "change" and changed) or (
                deadline is not None and loop.time() >= deadline):
                return job

    async def read_logs(self, job_id: str, *, stream: str = "stdout", offset: int = 0,
                        wait: float = 0.0) -> tuple[bytes, int, JobState]:
        """(bytes, next offset, job state). Bytes never stored (a gap at ``offset``) are
        skipped by the server, which says so: a WARNING names the job and how many."""
        r = await self._request("GET", f"/v1/jobs/{job_id}/logs", wait_s=wait,
                                params={"stream": stream, "offset": offset, "wait": wait})
        if gap := r.headers.get("x-log-gap"):
            logger.warning("job %s: %s bytes of its %s at offset %d were never stored "
                           "(skipped)", job_id, gap, stream, offset)
        return r.content, int(r.headers["x-next-offset"]), JobState(r.headers["x-job-state"])

    async def follow_logs(self, job_id: str, *, stream: str = "stdout",
                          offset: int = 0) -> AsyncIterator[bytes]:
        """Yield log bytes as they arrive until the job has ended and everything is read."""
        while True:
            data, offset, state = await self.read_logs(job_id, stream=stream, offset=offset,
                                                       wait=25.0)
            if data:
                yield data
            elif state.terminal:
                return

    # -- workflow runs and rules ----------------------------------------------------------
    async def start_run(self, spec: str, *, filename: str = "workflow.yaml",
                        params: dict[str, Any] | None = None, tenant: str = "default",
                        idempotency_key: str | None = None) -> dict[str, Any]:
        """Start a run of the workflow whose YAML text is ``spec``; the run (``RunOut``)."""
        body = {"spec": spec, "filename": filename, "params": params or {}, "tenant": tenant,
                "idempotency_key": idempotency_key}
        return await self._json("POST", "/v1/workflows/runs", json=body)

    async def get_run(self, run_id: str, *, wait: float = 0.0, version: int = 0,
                      tasks: bool = True) -> dict[str, Any]:
        """A run with its steps and tasks; with ``wait``, long-poll for a version newer than
        ``version`` (answers at once when it is newer already)."""
        params = {"wait": wait, "version": version, "tasks": tasks}
        return await self._json("GET", f"/v1/workflows/runs/{run_id}", params=params,
                                wait_s=wait)

    async def list_runs(self, *, state: str | None = None, workflow: str | None = None,
                        limit: int = 50, after: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("state", state), ("workflow", workflow),
                                    ("limit", limit), ("after", after)) if v is not None}
        return await self._json("GET", "/v1/workflows/runs", params=params)

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        return await self._json("POST", f"/v1/workflows/runs/{run_id}/cancel")

    async def retry_run(self, run_id: str, *, from_failed: bool = True) -> dict[str, Any]:
        return await self._json("POST", f"/v1/workflows/runs/{run_id}/retry",
                                json={"from_failed": from_failed})

    async def wait_run(self, run_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Long-poll until the run has finished (or ``timeout``); the run as it is then."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        run = await self.get_run(run_id, tasks=False)
        while run["state"] == "running":
            left = 30.0 if deadline is None else min(30.0, deadline - loop.time())
            if left <= 0:
                break
            run = await self.get_run(run_id, wait=left, version=run["version"], tasks=False)
        return await self.get_run(run_id)

    async def put_rules(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace rules by name (their stored form); the rules as stored."""
        return await self._json("PUT", "/v1/rules", json={"rules": rules})

    async def list_rules(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/v1/rules")

    async def delete_rule(self, name: str) -> None:
        await self._request("DELETE", f"/v1/rules/{name}")

    # -- schedules ----------------------------------------------------------------------------
    async def list_schedules(self, *, next_runs: int = 5) -> list[dict[str, Any]]:
        """The workflow schedules the token may see, each with its next run times."""
        return await self._json("GET", "/v1/schedules", params={"next_runs": next_runs})

    async def pause_schedule(self, workflow: str) -> dict[str, Any]:
        return await self._json("POST", f"/v1/schedules/{quote(workflow, safe='')}/pause")

    async def resume_schedule(self, workflow: str) -> dict[str, Any]:
        """Resume: it ticks again from now (ticks that fell while paused are not run)."""
        return await self._json("POST", f"/v1/schedules/{quote(workflow, safe='')}/resume")

    # -- clusters, events, tokens -------------------------------------------------------------
    async def clusters(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/v1/clusters")

    async def pools(self) -> list[dict[str, Any]]:
        """``GET /v1/pools``: the elastic pools, each with its live nodes by state."""
        return await self._json("GET", "/v1/pools")

    async def lift_pool(self, name: str) -> dict[str, Any]:
        """End a pool's quarantine and backoff (admins)."""
        return await self._json("POST", f"/v1/pools/{quote(name, safe='')}/lift")

    async def costs(self, *, by: str = "dag", bucket: str = "day", since: float | None = None,
                    until: float | None = None) -> dict[str, Any]:
        """``GET /v1/costs``: costs rolled up ``by`` a job, run, workflow, dag, tenant,
        cluster or in total, per ``bucket`` (day, hour, none), over [since, until)."""
        params: dict[str, Any] = {"by": by, "bucket": bucket}
        params.update({k: v for k, v in (("since", since), ("until", until)) if v is not None})
        return await self._json("GET", "/v1/costs", params=params)

    async def events(
        self, *, after: int = 0, limit: int = 100, wait: float = 0.0
    ) -> dict[str, Any]:
        return await self._json("GET", "/v1/events", wait_s=wait,
                                params={"after": after, "limit": limit, "wait": wait})

    async def post_event(self, type: str, subject: str, data: dict[str, Any] | None = None, *,
                         source: str | None = None, id: str | None = None) -> dict[str, Any]:
        """Append an external event (``file.created``, a webhook's payload) to the log. An
        event with the ``id`` and ``source`` of one already logged is not logged twice."""
        body: dict[str, Any] = {"type": type, "subject": subject, "data": data or {}}
        if source is not None:
            body["source"] = source
        if id is not None:
            body["id"] = id
        return await self._json("POST", "/v1/events", json=body)

    async def create_token(self, *, name: str, role: str, cluster: str | None = None,
                           tenant: str | None = None) -> dict[str, Any]:
        body = {"name": name, "role": role, "cluster": cluster, "tenant": tenant}
        return await self._json("POST", "/v1/tokens", json=body)

    async def list_tokens(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/v1/tokens")

    async def revoke_token(self, token_id: str) -> None:
        await self._request("DELETE", f"/v1/tokens/{token_id}")

    async def health(self) -> dict[str, Any]:
        return await self._json("GET", "/health")

    # -- agent side ------------------------------------------------------------------------
    async def claim(self, cluster: str, agent_id: str, *, max_jobs: int, wait_s: float = 0.0,
                    cancelling: Sequence[str] = ()) -> tuple[list[Job], list[str]]:
        jobs, cancel, _poll, _at = await self.claim_work(
            cluster, agent_id, max_jobs=max_jobs, wait_s=wait_s, cancelling=cancelling)
        return jobs, cancel

    async def claim_work(self, cluster: str, agent_id: str, *, max_jobs: int,
                         wait_s: float = 0.0, cancelling: Sequence[str] = (),
                         poll_since: float | None = None
                         ) -> tuple[list[Job], list[str], bool, float | None]:
        """As :meth:`claim`, and whether the server says "poll your scheduler now" (a job
        event of the cluster's scheduler came during the wait, or since ``poll_since``), and
        the answer's server time (the next call's ``poll_since``)."""
        body = {"cluster": cluster, "agent_id": agent_id, "max_jobs": max_jobs,
                "wait_s": wait_s, "cancelling": list(cancelling), "poll_since": poll_since}
        out = await self._json("POST", "/v1/agent/claim", json=body, wait_s=wait_s)
        return ([job_from_api(j) for j in out["jobs"]], out["cancel"], bool(out.get("poll")),
                out.get("at"))

    async def adopt(self, cluster: str, agent_id: str) -> list[Job]:
        out = await self._json("POST", "/v1/agent/adopt",
                               json={"cluster": cluster, "agent_id": agent_id})
        return [job_from_api(j) for j in out["jobs"]]

    async def report(self, cluster: str, agent_id: str, *,
                     transitions: Sequence[Transition] = (),
                     logs: Sequence[LogChunk] = ()) -> list[bool]:
        body = {"cluster": cluster, "agent_id": agent_id,
                "transitions": [transition_to_api(t) for t in transitions],
                "logs": [chunk_to_api(c) for c in logs]}
        return (await self._json("POST", "/v1/agent/report", json=body))["applied"]

    async def heartbeat(self, cluster: str, agent_id: str, *, backend: str,
                        labels: dict[str, str] | None = None,
                        info: dict[str, Any] | None = None,
                        nodes: list[dict[str, Any]] | None = None,
                        node_errors: list[dict[str, Any]] | None = None,
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Mark the cluster online, renew the agent's leases; with ``nodes`` (the agent runs
        pool providers) report them and ``node_errors``. The answer's pools of this cluster
        and the scale commands for the agent: ``(pools, scale)``."""
        body: dict[str, Any] = {"cluster": cluster, "agent_id": agent_id, "backend": backend,
                                "labels": labels or {}, "info": info or {}}
        if nodes is not None:  # only then: a server without pools knows no such fields
            body["nodes"] = nodes
        if node_errors:
            body["node_errors"] = node_errors
        answer = await self._json("POST", "/v1/agent/heartbeat", json=body)
        return list(answer.get("pools") or []), list(answer.get("scale") or [])


def _spec_to_api(spec: JobSpec, explicit: Collection[str] = ()) -> dict[str, Any]:
    """The body of a submit. A resource at its default (cores 1, nodes 1, gpus 0, the rest
    unset) is left out unless ``explicit`` names it: the server then takes it from the
    script's #SBATCH directives."""
    data = spec.to_dict()
    defaults = Resources().to_dict()
    data["resources"] = {k: v for k, v in data["resources"].items()
                         if v != defaults[k] or (k in explicit and v is not None)}
    return {k: v for k, v in data.items() if v is not None}


def _raise_for(response: httpx.Response) -> None:
    raise _error_of(response)


def _error_of(response: httpx.Response) -> Exception:
    """The error of a failed answer: Bridgehead's ``detail``, else the first words of what
    answered (a proxy's HTML page says nothing a person needs: its title or its first line)."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = _plain(response.text)
    if response.status_code == 429:
        return RateLimited(f"429: {detail}", retry_after=_retry_after(response))
    return error_for(response.status_code, f"{response.status_code}: {detail}")


def _retry_after(response: httpx.Response) -> float:
    """A 429's ``Retry-After`` in seconds (1 if absent or a date), within 0.1 s and
    :data:`MAX_RETRY_AFTER_S`."""
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return min(MAX_RETRY_AFTER_S, max(0.1, seconds))


def _plain(text: str) -> str:
    if found := re.search(r"<h1>(.*?)</h1>|<title>(.*?)</title>", text, re.I | re.S):
        text = found[1] or found[2] or ""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line[:200] or "(no body)"


def error_for(status: int, message: str) -> Exception:
    """The SDK's exception for an HTTP error status (5xx: retry later; 4xx: by kind)."""
    if status >= 500:
        return ServerUnavailable(message, status=status)
    cls = _BY_STATUS.get(status)
    return ClientError(message, status=status) if cls is None else cls(message)


class Client:
    """Synchronous facade over ``AsyncClient``: every coroutine method of it is available
    here as a plain call, every async iterator as a plain iterator."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float | None = None, verify: Verify = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="bridgehead-client")
        self._thread.start()
        self._async = self._run(_make_async(url, token, timeout, verify))
        self.url = self._async.url

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._async, name)
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **kw: self._iterate(attr(*a, **kw))
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **kw: self._run(attr(*a, **kw))
        return attr

    def _iterate(self, agen: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self._run(agen.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Stop what is still in flight (a call Ctrl-C left waiting), close, end the loop."""
        if self._loop.is_running():
            self._run(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _shutdown(self) -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._async.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make_async(url: str | None, token: str | None, timeout: float | None,
                      verify: Verify) -> AsyncClient:
    return AsyncClient(url, token, timeout=timeout, verify=verify)
