"""Fairness between tokens: one token may have only so many requests in service at once in one
server process; more are answered 429 with ``Retry-After`` before any work is done for them.

Why: a client flooding submits and listings at full speed (a runaway script, a DAG with
thousands of mapped tasks) otherwise queues hundreds of requests for the store's few
connections, and every agent's claim and report waits behind them: the agents starve and
jobs stop moving. With the limit, the flooder holds at most ``max_requests_per_token`` of a
process's requests (a refusal costs a hash and a dict look-up, no store); everyone else's go
ahead of its surplus. The SDK (and so the CLI, agents and the Airflow hook) waits the
``Retry-After`` and sends the request again, so a client that merely runs hot slows down
instead of failing.

Not counted: long-polls (an agent's claim, a job's ``/wait``, ``/stream`` and any request with
``wait`` > 0): parked, they hold no store connection, and one client legitimately waits on
many jobs at once (``bridgehead wait``, an Airflow triggerer). Requests without a bearer
token (the web UI's session, ``/health``) are not limited here. The count is per process: N
replicas serve a token N times as many at once.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from bridgehead.metrics import Metrics

RETRY_AFTER_S = 1
"""What a refused request is told to wait (whole seconds, as HTTP wants)."""


def long_poll(scope: Scope) -> bool:
    """Whether the request parks on the server waiting for a change (not counted)."""
    path: str = scope["path"]
    if path == "/v1/agent/claim" or path.endswith(("/wait", "/stream")):
        return True
    query = scope.get("query_string", b"").decode("latin-1")
    return any(k == "wait" and v not in ("", "0", "0.0") for k, v in parse_qsl(query))


def token_key(scope: Scope) -> str | None:
    """A digest of the request's bearer token (the token itself is not kept), or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.partition(b" ")
            if scheme.lower() == b"bearer" and secret.strip():
                return hashlib.blake2b(secret.strip(), digest_size=16).hexdigest()
    return None


class TokenLimit:
    """ASGI middleware: at most ``limit`` requests of one token in service at once."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics
        self.busy: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or long_poll(scope):
            return await self.app(scope, receive, send)
        key = token_key(scope)
        if key is None:
            return await self.app(scope, receive, send)
        if self.busy[key] >= self.limit:
            self.metrics.throttled()
            return await self._refuse(send)
        self.busy[key] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.busy[key] -= 1
            if not self.busy[key]:
                del self.busy[key]

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": (
            f"too many requests at once with this token (at most {self.limit} in service: "
            f"[server] max_requests_per_token); retry after {RETRY_AFTER_S} s")}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"retry-after", str(RETRY_AFTER_S).encode()),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
