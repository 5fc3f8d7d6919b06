"""A small async client for Airflow's stable REST API, with httpx only (no Airflow import):
``bridgehead airflow run`` must work from a machine without Airflow installed.

- ``v2`` (Airflow 3): ``/api/v2``; a JWT from ``POST /auth/token`` (username + password), or a
  ready token; renewed once when a long follow outlives it.
- ``v1`` (Airflow 2): ``/api/v1``; HTTP basic auth.
- ``auto``: ``GET /api/v2/version``, then ``/api/v1/version`` (both public).

HTTP failures become Bridgehead errors at this boundary: unreachable or 5xx ->
``ServerUnavailable``, 401 -> ``AuthError``, 403 -> ``Forbidden``, 404 -> ``NotFound``,
400/422 -> ``InvalidSpec``, 409 -> ``Conflict``, anything else -> ``ClientError``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

from bridgehead.client.core import error_for
from bridgehead.config import AirflowSettings
from bridgehead.errors import (
    AuthError,
    ClientError,
    ConfigError,
    ServerUnavailable,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
"""Airflow's default ``maximum_page_limit``."""


def _q(part: str) -> str:
    """One path segment: run ids hold ``:`` and ``+`` (``manual__2025-01-01T00:00:00+00:00``)."""
    return quote(part, safe="")


class AirflowApi:
    """The calls the launcher needs: DAGs, DAG runs and their task instances."""

    def __init__(self, settings: AirflowSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.version: str | None = None if settings.api_version == "auto" else settings.api_version
        self._http = httpx.AsyncClient(base_url=self.url, transport=transport,
                                       timeout=httpx.Timeout(settings.timeout_s, connect=5.0))
        self._renewable = False

    async def __aenter__(self) -> AirflowApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> str:
        """Find the API version (unless configured) and log in; returns ``v1`` or ``v2``."""
        if self.version is None:
            self.version = await self._detect()
        await self._login()
        logger.debug("Airflow API %s at %s", self.version, self.url)
        return self.version

    async def _detect(self) -> str:
        for version in ("v2", "v1"):
            response = await self._send("GET", f"/api/{version}/version")
            if response.status_code in (200, 401, 403):
                return version
        raise ClientError(f"{self.url} is not an Airflow API server "
                          "(neither /api/v2/version nor /api/v1/version answers)")

    async def _login(self) -> None:
        s = self.settings
        if s.token is not None:
            self._http.headers["Authorization"] = f"Bearer {s.token.get_secret_value()}"
        elif s.username and s.password is not None:
            if self.version == "v1":
                self._http.auth = httpx.BasicAuth(s.username, s.password.get_secret_value())
            else:
                await self._new_jwt()
                self._renewable = True
        elif s.username or s.password is not None:
            raise ConfigError("Airflow needs both a username and a password "
                              "(or a token: BRIDGEHEAD_AIRFLOW__TOKEN)")

    async def _new_jwt(self) -> None:
        s = self.settings
        assert s.username and s.password is not None
        body = {"username": s.username, "password": s.password.get_secret_value()}
        response = await self._send("POST", "/auth/token", json=body)
        if response.status_code in (401, 403):
            raise AuthError(f"Airflow at {self.url} refused user {s.username!r}: "
                            "wrong username or password")
        self._check(response)
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    # -- requests --------------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot reach Airflow at {self.url}: {exc!r}") from exc

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        """``path`` under ``/api/<version>``; the JSON answer. A JWT that expired during a
        long follow is renewed once."""
        full = f"/api/{self.version}{path}"
        response = await self._send(method, full, **kw)
        if response.status_code == 401 and self._renewable:
            await self._new_jwt()
            response = await self._send(method, full, **kw)
        self._check(response)
        return response.json() if response.content else None

    def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        message = f"Airflow answered {response.status_code}: {_detail(response)}"
        if response.status_code == 401:
            message += " (give --username and BRIDGEHEAD_AIRFLOW__PASSWORD, or a token)"
        raise error_for(response.status_code, message)

    # -- DAGs and runs -----------------------------------------------------------------------
    async def get_dag(self, dag_id: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/dags/{_q(dag_id)}"))

    async def unpause(self, dag_id: str) -> None:
        await self._call("PATCH", f"/dags/{_q(dag_id)}", params={"update_mask": "is_paused"},
                         json={"is_paused": False})

    async def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Create a DAG run now (``logical_date`` null on Airflow 3: runs may overlap)."""
        body: dict[str, Any] = {"dag_run_id": run_id, "conf": conf}
        if self.version == "v2":
            body["logical_date"] = None
        return dict(await self._call("POST", f"/dags/{_q(dag_id)}/dagRuns", json=body))

    async def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}"))

    async def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (mapped ones one per ``map_index``), all pages."""
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        seen: dict[tuple[str, int], dict[str, Any]] = {}
        offset = 0
        while True:
            page = await self._call("GET", path, params={"limit": PAGE_SIZE, "offset": offset})
            items = page.get("task_instances") or []
            for ti in items:  # an offset page may repeat a row when the order has ties
                seen[(ti["task_id"], ti.get("map_index", -1))] = ti
            offset += len(items)
            if not items or offset >= int(page.get("total_entries") or 0):
                return list(seen.values())


def _detail(response: httpx.Response) -> str:
    """FastAPI's ``detail`` (a string, or a list of validation errors), else the body."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', '')}"
    return " ".join(str(detail).split())[:300] or response.reason_phrase
