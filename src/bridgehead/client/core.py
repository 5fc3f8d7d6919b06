"""The Python SDK: ``AsyncClient`` (the one implementation) and ``Client`` (sync, for scripts,
the CLI and the Airflow hook), which runs the async methods on a private event loop.

    with Client() as bh:                 # URL and token from settings / `bridgehead up`
        job = bh.submit(JobSpec(cluster="local", command=("echo", "hi")))
        job = bh.wait(job.id, until="terminal")
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any

import httpx

from bridgehead.config import ClientSettings
from bridgehead.domain.jobs import Job, JobSpec, JobState, Transition, Usage
from bridgehead.errors import (
    AuthError,
    ClientError,
    Conflict,
    Forbidden,
    InvalidSpec,
    NotFound,
    ServerUnavailable,
)
from bridgehead.store.base import LogChunk

_BY_STATUS: dict[int, type[ClientError] | type[Exception]] = {
    400: InvalidSpec, 401: AuthError, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: InvalidSpec, 422: InvalidSpec,
}


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def job_from_api(data: dict[str, Any]) -> Job:
    usage = data.get("usage")
    return Job(
        id=data["id"], spec=JobSpec.from_dict(data["spec"]), state=JobState(data["state"]),
        version=data["version"], attempt=data["attempt"], native_id=data["native_id"],
        agent_id=data.get("agent_id"),
        exit_code=data["exit_code"], reason=data["reason"],
        cancel_requested=data["cancel_requested"],
        usage=Usage(elapsed_s=usage["elapsed_s"], cores=usage["cores"], nodes=usage["nodes"],
                    max_rss_mb=usage["max_rss_mb"]) if usage else None,
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
    return out


def chunk_to_api(c: LogChunk) -> dict[str, Any]:
    return {"job_id": c.job_id, "stream": c.stream, "pos": c.pos,
            "data": base64.b64encode(c.data).decode()}


class AsyncClient:
    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        settings = ClientSettings.load(url=url, token=token, timeout_s=timeout)
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self.url = settings.url.rstrip("/")
        self.timeout = settings.timeout_s
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, transport=transport,
                                       timeout=httpx.Timeout(settings.timeout_s, connect=5.0))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, *, wait_s: float = 0.0, **kw: Any
    ) -> httpx.Response:
        if wait_s:
            kw["timeout"] = httpx.Timeout(self.timeout + wait_s, connect=5.0)
        try:
            response = await self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot reach Bridgehead at {self.url}: {exc!r}") from exc
        if response.status_code >= 400:
            _raise_for(response)
        return response

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self._request(method, path, **kw)).json()

    # -- jobs ------------------------------------------------------------------------------
    async def submit(self, spec: JobSpec) -> Job:
        return job_from_api((await self._json("POST", "/v1/jobs", json=_spec_to_api(spec)))["job"])

    async def submit_many(self, specs: Sequence[JobSpec]) -> list[Job]:
        body = {"jobs": [_spec_to_api(s) for s in specs]}
        results = await self._json("POST", "/v1/jobs/batch", json=body)
        return [job_from_api(r["job"]) for r in results]

    async def get(self, job_id: str) -> Job:
        return job_from_api(await self._json("GET", f"/v1/jobs/{job_id}"))

    async def list_jobs(
        self, *, cluster: str | None = None, states: Sequence[str] = (), tenant: str | None = None,
        labels: dict[str, str] | None = None, limit: int = 100, after: str | None = None,
    ) -> tuple[list[Job], str | None]:
        params: dict[str, Any] = {"limit": limit, "state": list(states),
                                  "label": [f"{k}={v}" for k, v in (labels or {}).items()]}
        params.update({k: v for k, v in (("cluster", cluster), ("tenant", tenant),
                                         ("after", after)) if v is not None})
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
        """(bytes, next offset, job state)."""
        r = await self._request("GET", f"/v1/jobs/{job_id}/logs", wait_s=wait,
                                params={"stream": stream, "offset": offset, "wait": wait})
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

    # -- clusters, events, tokens -------------------------------------------------------------
    async def clusters(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/v1/clusters")

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
        body = {"cluster": cluster, "agent_id": agent_id, "max_jobs": max_jobs,
                "wait_s": wait_s, "cancelling": list(cancelling)}
        out = await self._json("POST", "/v1/agent/claim", json=body, wait_s=wait_s)
        return [job_from_api(j) for j in out["jobs"]], out["cancel"]

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
                        info: dict[str, Any] | None = None) -> None:
        await self._json("POST", "/v1/agent/heartbeat", json={
            "cluster": cluster, "agent_id": agent_id, "backend": backend,
            "labels": labels or {}, "info": info or {}})


def _spec_to_api(spec: JobSpec) -> dict[str, Any]:
    data = spec.to_dict()
    return {k: v for k, v in data.items() if v is not None}


def _raise_for(response: httpx.Response) -> None:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise error_for(response.status_code, f"{response.status_code}: {detail}")


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
                 timeout: float | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="bridgehead-client")
        self._thread.start()
        self._async = self._run(_make_async(url, token, timeout))
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


async def _make_async(url: str | None, token: str | None, timeout: float | None) -> AsyncClient:
    return AsyncClient(url, token, timeout=timeout)
