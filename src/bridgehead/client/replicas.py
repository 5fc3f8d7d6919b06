"""Client-side failover between server replicas (``URL1,URL2``: several servers on one
PostgreSQL, any of which may die).

A client sticks to the replica that answered last. One that fails (no connection, a dropped
connection, 502/503/504) is backed off (0.5 s, doubling to 30 s) and the request goes to the
next one at once; a replica in backoff is tried only after every healthy one, so a request
fails (``ServerUnavailable``) only when every replica failed it once. Callers that retry
(agents, triggers, ``wait``) back off as before.

A request is sent again to another replica only if it was never sent, or if sending it twice
does no harm: reads, the agent's calls (claims are leases an agent takes back with ``adopt``,
reports are compare-and-set), a submit or workflow run with its idempotency key, an event
with its id, a cancel.
Long-polls resume where they were: their cursor (``after``, ``after_version``, ``offset``,
``version``) is part of the request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

logger = logging.getLogger(__name__)

UNAVAILABLE = frozenset({502, 503, 504})
"""Answers that mean "this replica cannot serve now", not "this request is wrong"."""
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before any byte of the request left: always safe to send again."""
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


def may_repeat(method: str, path: str, kw: dict[str, Any]) -> bool:
    """Whether sending this request a second time (after an answer that may have been lost)
    changes nothing a first time did not."""
    if method in ("GET", "HEAD", "PUT"):
        return True
    if method != "POST":
        return False
    sent = kw.get("json")
    body: dict[str, Any] = sent if isinstance(sent, dict) else {}
    return (path.startswith("/v1/agent/") or path.endswith("/cancel")
            or (path in ("/v1/jobs", "/v1/workflows/runs") and bool(body.get("idempotency_key")))
            or (path == "/v1/events" and bool(body.get("id"))))


@dataclass
class _Health:
    down_until: float = 0.0
    backoff_s: float = 0.0


@dataclass
class Replicas:
    urls: list[str]
    current: int = 0
    _health: dict[str, _Health] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._health = {url: _Health() for url in self.urls}

    @property
    def url(self) -> str:
        return self.urls[self.current]

    def order(self) -> list[str]:
        """The replicas to try, in turn: the current one and the healthy ones after it, then
        those backed off, the soonest back first."""
        now = time.monotonic()
        turn = self.urls[self.current:] + self.urls[:self.current]
        healthy = [u for u in turn if self._health[u].down_until <= now]
        resting = sorted((u for u in turn if u not in healthy),
                         key=lambda u: self._health[u].down_until)
        return healthy + resting

    def ok(self, url: str) -> None:
        index = self.urls.index(url)
        if index != self.current:
            logger.warning("Bridgehead: now using %s (%s failed)", url, self.url)
            self.current = index
        self._health[url] = _Health()

    def failed(self, url: str) -> None:
        health = self._health[url]
        health.backoff_s = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, health.backoff_s * 2))
        health.down_until = time.monotonic() + health.backoff_s
