"""Webhook delivery: POST a rule's event to its URL, retrying what may succeed later.

Retried: connection errors, timeouts, 408, 429 and 5xx, up to ``webhook.retries`` times after
the first attempt, waiting ``backoff_s * 2**n`` (capped at ``max_backoff_s``, plus up to 10%
jitter; a 429/503's ``Retry-After`` in seconds is honoured up to the cap). Not retried: any
other status outside 2xx. Each attempt is capped at ``timeout_s`` as a whole (connect, send
and the status line); the response body is never read.

:func:`deliver` never raises for HTTP or network failures: it returns a :class:`Delivery`.
It never logs the secret, the signature or the URL's path and query (which may carry a
token): failed attempts are logged at WARNING with the rule, the host and the status.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from bridgehead.domain.rules import Webhook

logger = logging.getLogger(__name__)

JITTER = 0.1
"""The most a wait is lengthened at random (a fraction), so retries spread out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """How a delivery went: ``ok`` if an attempt got a 2xx; ``status`` and ``error`` are the
    last attempt's (``error`` None when ok)."""

    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def retryable(status: int) -> bool:
    """Whether a response with ``status`` may succeed if sent again."""
    return status in (408, 429) or 500 <= status <= 599


def _target(url: str) -> str:
    """``scheme://host[:port]``: the URL without what may be a credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


async def _attempt(webhook: Webhook, body: bytes, headers: Mapping[str, str],
                   client: httpx.AsyncClient) -> tuple[int | None, str | None, float | None]:
    """One POST: (status, error, Retry-After); the error is None for a 2xx."""
    try:
        async with asyncio.timeout(webhook.timeout_s):
            async with client.stream("POST", webhook.url, content=body, headers=dict(headers),
                                     timeout=webhook.timeout_s) as response:
                status = response.status_code
                wait = _retry_after(response) if status in (429, 503) else None
    except (TimeoutError, httpx.TimeoutException):
        return None, f"timed out after {webhook.timeout_s:g}s", None
    except httpx.HTTPError as exc:
        detail = str(exc).replace(webhook.url, _target(webhook.url))
        return None, f"{type(exc).__name__}: {detail}"[:500], None
    return status, None if 200 <= status <= 299 else f"HTTP {status}", wait


async def deliver(webhook: Webhook, body: bytes, headers: Mapping[str, str], *,
                  client: httpx.AsyncClient,
                  sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> Delivery:
    """Send ``body`` with ``headers`` (from :meth:`Webhook.body` and
    :meth:`Webhook.headers_for`) until a 2xx, a status not worth retrying, or the retries
    run out. The headers are the same on every attempt (receivers dedupe on
    ``X-Bridgehead-Delivery``)."""
    delivery = headers.get("X-Bridgehead-Delivery", "")
    rule = delivery.split(":", 1)[0] or "?"
    total = webhook.retries + 1
    status: int | None = None
    error: str | None = None
    for attempt in range(1, total + 1):
        status, error, wait = await _attempt(webhook, body, headers, client)
        if error is None:
            return Delivery(ok=True, attempts=attempt, status=status)
        final = attempt == total or (status is not None and not retryable(status))
        logger.warning("webhook of rule %s to %s: attempt %d/%d failed (status %s): %s%s",
                       rule, _target(webhook.url), attempt, total, status, error,
                       "" if final else "; retrying")
        if final:
            return Delivery(ok=False, attempts=attempt, status=status, error=error)
        delay = webhook.delay(attempt)
        if wait is not None:
            delay = min(webhook.max_backoff_s, max(delay, wait))
        await sleep(delay * (1 + random.uniform(0, JITTER)))
    raise AssertionError("unreachable")  # pragma: no cover
