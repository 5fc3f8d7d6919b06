"""Webhook delivery: POST a rule's event to its URL, retrying what may succeed later.

Retried: connection errors, timeouts, 408, 429 and 5xx, up to ``webhook.retries`` times after
the first attempt, waiting ``backoff_s * 2**n`` (capped at ``max_backoff_s``, plus up to 10%
jitter; a 429/503's ``Retry-After`` in seconds is honoured up to the cap). Not retried: any
other status outside 2xx. Each attempt is capped at ``timeout_s`` as a whole (connect, send
and the status line); the response body is never read.

:func:`deliver` never raises for HTTP or network failures: it returns a :class:`Delivery`.
It never logs the secret, the signature or the URL's path and query (which may carry a
token): failed attempts are logged at WARNING with the rule, the host and the status.

Each attempt resolves the URL's host and checks every address against the
:class:`~bridgehead.domain.egress.Egress` policy (public addresses only unless
``[server] webhook_allow`` lists them), then connects to the address it checked (the URL's
host stays in the ``Host`` header and TLS's SNI and certificate check), so a name that
resolves to a public address when checked and to a private one when connecting (DNS
rebinding) reaches nothing it may not. A refused address ends the delivery at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from bridgehead.domain.egress import Egress
from bridgehead.domain.rules import InvalidRule, Rule, Webhook

logger = logging.getLogger(__name__)

PUBLIC_ONLY = Egress()
"""The default policy: public addresses only, no exception."""
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


class Refused(Exception):
    """The URL's host is (or resolves to) an address webhooks may not reach."""


@dataclass(frozen=True, slots=True)
class _Pinned:
    """The request to make: the URL with the checked address for its host, the ``Host``
    header and the TLS server name."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


async def pin(url: str, egress: Egress) -> _Pinned:
    """Resolve ``url``'s host, check every address (``Refused`` naming the host and the
    address), and aim the request at the first one. ``OSError`` if the name does not
    resolve."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    else:
        addresses = [host]
    reason = egress.refusal(host, port, addresses)
    if reason is not None:
        raise Refused(reason)
    if addresses == [host]:
        return _Pinned(url, {}, {})
    address = addresses[0]
    netloc = (f"[{address}]" if ":" in address else address) + (
        f":{parts.port}" if parts.port else "")
    return _Pinned(urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc},
                   {"sni_hostname": host})


async def _attempt(webhook: Webhook, body: bytes, headers: Mapping[str, str],
                   client: httpx.AsyncClient,
                   egress: Egress) -> tuple[int | None, str | None, float | None]:
    """One POST: (status, error, Retry-After); the error is None for a 2xx. ``Refused``
    when the host may not be reached."""
    url = webhook.url
    try:
        async with asyncio.timeout(webhook.timeout_s):
            target = await pin(webhook.url, egress)
            url = target.url
            async with client.stream("POST", url, content=body,
                                     headers={**headers, **target.headers},
                                     extensions=target.extensions,
                                     timeout=webhook.timeout_s) as response:
                status = response.status_code
                wait = _retry_after(response) if status in (429, 503) else None
    except (TimeoutError, httpx.TimeoutException):
        return None, f"timed out after {webhook.timeout_s:g}s", None
    except httpx.HTTPError as exc:
        detail = str(exc).replace(url, _target(webhook.url)).replace(
            webhook.url, _target(webhook.url))
        return None, f"{type(exc).__name__}: {detail}"[:500], None
    except OSError as exc:  # the name did not resolve (now)
        return None, f"cannot resolve {urlsplit(webhook.url).hostname}: {exc}"[:500], None
    return status, None if 200 <= status <= 299 else f"HTTP {status}", wait


async def deliver(webhook: Webhook, body: bytes, headers: Mapping[str, str], *,
                  client: httpx.AsyncClient, egress: Egress = PUBLIC_ONLY,
                  sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> Delivery:
    """Send ``body`` with ``headers`` (from :meth:`Webhook.body` and
    :meth:`Webhook.headers_for`) until a 2xx, a status not worth retrying, an address
    ``egress`` refuses, or the retries run out. The headers are the same on every attempt
    (receivers dedupe on ``X-Bridgehead-Delivery``)."""
    delivery = headers.get("X-Bridgehead-Delivery", "")
    rule = delivery.split(":", 1)[0] or "?"
    total = webhook.retries + 1
    status: int | None = None
    error: str | None = None
    for attempt in range(1, total + 1):
        try:
            status, error, wait = await _attempt(webhook, body, headers, client, egress)
        except Refused as exc:
            logger.warning("webhook of rule %s to %s refused: %s", rule, _target(webhook.url),
                           exc)
            return Delivery(ok=False, attempts=attempt, error=f"refused: {exc}")
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


def server_egress(allow: list[str], host: str, port: int) -> Egress:
    """The policy of a server listening on ``host:port``: its own addresses are the host's
    (on a wildcard address, this machine's names' and loopback)."""
    names = [host] if host not in ("", "0.0.0.0", "::") else [socket.gethostname(), "localhost"]
    own = {host} if host in ("0.0.0.0", "::") else set()
    for name in names:
        try:
            own.update(str(info[4][0]).split("%", 1)[0] for info in socket.getaddrinfo(name, None))
        except OSError:  # a name that does not resolve has no address to protect
            continue
    return Egress.of(allow, own=own, own_port=port)


RESOLVE_AT_APPLY_S = 2.0
"""How long applying a rule waits for a webhook host's name to resolve (one that does not
resolve yet is accepted: each delivery checks it again)."""


async def check_webhooks(rule: Rule, egress: Egress) -> None:
    """``InvalidRule`` at ``actions[i].webhook.url`` for a webhook whose host is, or now
    resolves to, an address ``egress`` refuses."""
    for index, action in enumerate(rule.actions):
        if not isinstance(action, Webhook):
            continue
        try:
            async with asyncio.timeout(RESOLVE_AT_APPLY_S):
                await pin(action.url, egress)
        except Refused as exc:
            raise InvalidRule(f"rule {rule.name!r}: {exc}",
                              ("actions", index, "webhook", "url")) from exc
        except (OSError, TimeoutError):
            logger.info("rule %s: webhook host %s does not resolve yet", rule.name,
                        urlsplit(action.url).hostname)
