"""``BridgeheadHook``: the ``bridgehead`` connection type and SDK clients made from it.

A connection holds the server URL in *host* (a full ``https://bh.example:8765`` URL, or a host
name with *port* and ``http``/``https`` in *schema*; replicas comma separated), an API token
in *password* and, for a certificate of a private CA, ``{"ca_bundle": "/path/ca.pem"}`` in
*extra*::

    AIRFLOW_CONN_BRIDGEHEAD_DEFAULT='{"conn_type": "bridgehead",
                                      "host": "https://bh.example:8765", "password": "bh_...",
                                      "extra": {"ca_bundle": "/etc/ssl/bh-ca.pem"}}'
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from bridgehead.airflow._compat import BaseHook, aget_connection
from bridgehead.client import AsyncClient, Client
from bridgehead.errors import BridgeheadError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def server_of(conn: Any) -> tuple[str, str | None]:
    """(server URL, token) of a ``bridgehead`` connection. *host* may list replicas, comma
    separated (``https://bh1:8765,https://bh2:8765``): the client fails over between them."""
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host: set the Bridgehead URL")
    scheme = conn.schema if conn.schema in ("http", "https") else "http"
    return ",".join(_url(h.strip(), scheme, conn.port) for h in host.split(",") if h.strip()), \
        conn.password or None


def _url(host: str, scheme: str, port: int | None) -> str:
    """A URL as given, or ``scheme://host:port`` for a host name (with its own port, or the
    connection's)."""
    if "://" in host:
        return host.rstrip("/")
    if urlsplit(f"//{host}").port is not None:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port or DEFAULT_PORT}"


def ca_bundle_of(conn: Any) -> str | None:
    """The connection's ``ca_bundle`` extra: PEM CA certificates of the server's TLS
    certificate (default: certifi's, as httpx)."""
    extra = conn.extra_dejson if conn.extra else {}
    return extra.get("ca_bundle") or None


CONNECTION_TTL_S = 60.0
"""How long a triggerer reuses a connection it looked up (an edited one is seen after)."""
_Server = tuple[str, str | None, str | None]
_lookups: dict[str, tuple[float, asyncio.Task[_Server]]] = {}


async def _connection(conn_id: str) -> _Server:
    """(URL, token, CA bundle) of ``conn_id``: one lookup shared by every trigger of this
    event loop while it is fresh (200 triggers resuming at once make one, not 200)."""
    loop = asyncio.get_running_loop()
    held = _lookups.get(conn_id)
    if held is None or held[1].get_loop() is not loop or loop.time() > held[0] or (
            held[1].done() and (held[1].cancelled() or held[1].exception() is not None)):
        held = (loop.time() + CONNECTION_TTL_S, loop.create_task(_look_up(conn_id)))
        _lookups[conn_id] = held
    return await asyncio.shield(held[1])


async def _look_up(conn_id: str) -> _Server:
    conn = await aget_connection(conn_id)
    url, token = server_of(conn)
    return url, token, ca_bundle_of(conn)


class BridgeheadHook(BaseHook):
    """Talks to a Bridgehead server. ``get_conn()`` gives a sync ``Client`` (close it, or use
    it as a context manager); triggers use ``await hook.aget_async_client()``."""

    conn_name_attr = "bridgehead_conn_id"
    default_conn_name = "bridgehead_default"
    conn_type = "bridgehead"
    hook_name = "Bridgehead"

    def __init__(self, bridgehead_conn_id: str = default_conn_name, *,
                 timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bridgehead_conn_id = bridgehead_conn_id
        self.timeout_s = timeout_s

    def get_conn(self) -> Client:
        conn = self.get_connection(self.bridgehead_conn_id)
        url, token = server_of(conn)
        return Client(url, token, timeout=self.timeout_s, verify=ca_bundle_of(conn))

    async def aget_async_client(self) -> AsyncClient:
        """A client, made without blocking the event loop: the connection is looked up once
        per :data:`CONNECTION_TTL_S` for all triggers of the process, and the client (which
        reads settings files) is built in a worker thread."""
        url, token, ca_bundle = await _connection(self.bridgehead_conn_id)
        return await asyncio.to_thread(AsyncClient, url, token, timeout=self.timeout_s,
                                       verify=ca_bundle)

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's *Test* button: the server answers and the token is accepted."""
        try:
            with self.get_conn() as bh:
                clusters = bh.clusters()
        except (BridgeheadError, ValueError) as exc:
            return False, str(exc)
        return True, f"Bridgehead is reachable; {len(clusters)} cluster(s) known"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["login"],
            "relabeling": {"host": "Server URL(s), comma separated", "password": "API token",
                           "schema": "Scheme (http/https, when Server URL is a host name)"},
            "placeholders": {"host": "https://bridgehead.example:8765", "port": str(DEFAULT_PORT)},
        }
