"""``BridgeheadHook``: the ``bridgehead`` connection type and SDK clients made from it.

A connection holds the server URL in *host* (a full ``https://bh.example:8765`` URL, or a host
name with *port* and ``http``/``https`` in *schema*) and an API token in *password*::

    AIRFLOW_CONN_BRIDGEHEAD_DEFAULT='{"conn_type": "bridgehead",
                                      "host": "https://bh.example:8765", "password": "bh_..."}'
"""

from __future__ import annotations

import logging
from typing import Any

from bridgehead.airflow._compat import BaseHook, aget_connection
from bridgehead.client import AsyncClient, Client
from bridgehead.errors import BridgeheadError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def server_of(conn: Any) -> tuple[str, str | None]:
    """(server URL, token) of a ``bridgehead`` connection."""
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host: set the Bridgehead URL")
    if "://" in host:
        url = host.rstrip("/")
    else:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
        url = f"{scheme}://{host}:{conn.port or DEFAULT_PORT}"
    return url, conn.password or None


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
        url, token = server_of(self.get_connection(self.bridgehead_conn_id))
        return Client(url, token, timeout=self.timeout_s)

    async def aget_async_client(self) -> AsyncClient:
        url, token = server_of(await aget_connection(self.bridgehead_conn_id))
        return AsyncClient(url, token, timeout=self.timeout_s)

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
            "hidden_fields": ["login", "extra"],
            "relabeling": {"host": "Server URL", "password": "API token",
                           "schema": "Scheme (http/https, when Server URL is a host name)"},
            "placeholders": {"host": "https://bridgehead.example:8765", "port": str(DEFAULT_PORT)},
        }
