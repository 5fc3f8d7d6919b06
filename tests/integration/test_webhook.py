"""Webhook delivery against a real HTTP server on 127.0.0.1: retries with one delivery id, a
signature the receiver can verify, no retry on 4xx, refused connections and timeouts. The
receiver is on loopback, which webhooks may reach only when allowed (LOOPBACK)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bridgehead.domain.egress import Egress
from bridgehead.domain.events import Event
from bridgehead.domain.rules import Webhook, verify
from bridgehead.rules import Delivery, deliver

SECRET = "s3cret-value"
LOOPBACK = Egress.of(["127.0.0.1"])
"""What a server with ``webhook_allow = ["127.0.0.1"]`` lets webhooks reach."""
EVENT = Event(type="file.created", subject="/data/a.csv", id="ev-42", time=1_700_000_000.0,
              data={"path": "/data/a.csv", "size": 10})


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    """The receiver answers ``statuses`` in turn (then 200), sleeping ``delay_s`` first."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        behaviour = self.server.behaviour
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        behaviour.received.append(Received(dict(self.headers.items()), body))
        time.sleep(behaviour.delay_s)
        status = behaviour.statuses.pop(0) if behaviour.statuses else 200
        try:
            self.send_response(status)
            for name, value in behaviour.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour


@pytest.fixture
def receiver() -> Iterator[tuple[str, Behaviour]]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.behaviour = Behaviour()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/t0ken-in-path", server.behaviour
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def hook(url: str, **changes: object) -> Webhook:
    values: dict[str, object] = {"url": url, "secret": SECRET, "retries": 5, "backoff_s": 0.01,
                                 "max_backoff_s": 0.05, "timeout_s": 2.0,
                                 "headers": {"X-Team": "hpc"}}
    return Webhook(**{**values, **changes})  # type: ignore[arg-type]


async def send(webhook: Webhook, client: httpx.AsyncClient, **kwargs: object) -> Delivery:
    body = webhook.body(EVENT, "notify")
    kwargs.setdefault("egress", LOOPBACK)
    return await deliver(webhook, body, webhook.headers_for(EVENT, "notify", body),
                         client=client, **kwargs)  # type: ignore[arg-type]


async def test_retries_until_success_with_one_delivery_id(
        receiver: tuple[str, Behaviour], client: httpx.AsyncClient,
        caplog: pytest.LogCaptureFixture) -> None:
    url, behaviour = receiver
    behaviour.statuses = [503, 503, 503]
    with caplog.at_level(logging.WARNING, logger="bridgehead.rules.webhook"):
        delivery = await send(hook(url), client)
    assert delivery == Delivery(ok=True, attempts=4, status=200)
    assert len(behaviour.received) == 4
    assert {r.headers["X-Bridgehead-Delivery"] for r in behaviour.received} == {"notify:ev-42"}
    for received in behaviour.received:
        assert verify(SECRET, received.body, received.headers["X-Bridgehead-Signature"])
        assert received.headers["X-Bridgehead-Event"] == "file.created"
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["X-Team"] == "hpc"
    assert not verify(SECRET, behaviour.received[0].body + b" ",
                      behaviour.received[0].headers["X-Bridgehead-Signature"])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3 and all("notify" in w and "503" in w for w in warnings)
    assert "attempt 1/6" in warnings[0]
    signature = behaviour.received[0].headers["X-Bridgehead-Signature"]
    for text in (SECRET, signature, signature.removeprefix("sha256="), "t0ken"):
        assert text not in caplog.text


async def test_backoff_doubles_with_jitter_up_to_the_cap(
        receiver: tuple[str, Behaviour], client: httpx.AsyncClient) -> None:
    url, behaviour = receiver
    behaviour.statuses = [500, 502, 503, 504, 429]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    delivery = await send(hook(url, backoff_s=0.01, max_backoff_s=0.05), client, sleep=sleep)
    assert delivery.ok and delivery.attempts == 6
    for wait, base in zip(waits, [0.01, 0.02, 0.04, 0.05, 0.05], strict=True):
        assert base <= wait <= base * 1.1 + 1e-9


async def test_retry_after_is_honoured_up_to_the_cap(
        receiver: tuple[str, Behaviour], client: httpx.AsyncClient) -> None:
    url, behaviour = receiver
    behaviour.statuses = [429]
    behaviour.extra_headers = {"Retry-After": "30"}
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    assert (await send(hook(url, max_backoff_s=0.2), client, sleep=sleep)).ok
    assert 0.2 <= waits[0] <= 0.22


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
async def test_other_4xx_and_3xx_are_not_retried(
        receiver: tuple[str, Behaviour], client: httpx.AsyncClient, status: int) -> None:
    url, behaviour = receiver
    behaviour.statuses = [status]
    delivery = await send(hook(url), client)
    assert delivery == Delivery(ok=False, attempts=1, status=status, error=f"HTTP {status}")
    assert len(behaviour.received) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_retryable_statuses_give_up_after_the_retries(
        receiver: tuple[str, Behaviour], client: httpx.AsyncClient, status: int) -> None:
    url, behaviour = receiver
    behaviour.statuses = [status] * 10
    delivery = await send(hook(url, retries=2), client)
    assert delivery == Delivery(ok=False, attempts=3, status=status, error=f"HTTP {status}")
    assert len(behaviour.received) == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_closed_port_fails_after_all_attempts(client: httpx.AsyncClient) -> None:
    delivery = await send(hook(f"http://127.0.0.1:{free_port()}/hook", retries=3), client)
    assert not delivery.ok and delivery.attempts == 4 and delivery.status is None
    assert delivery.error is not None and "ConnectError" in delivery.error


async def test_a_slow_receiver_times_out(
        receiver: tuple[str, Behaviour], client: httpx.AsyncClient) -> None:
    url, behaviour = receiver
    behaviour.delay_s = 1.0
    started = time.monotonic()
    delivery = await send(hook(url, retries=1, timeout_s=0.2), client)
    assert delivery == Delivery(ok=False, attempts=2, status=None, error="timed out after 0.2s")
    assert time.monotonic() - started < 1.5
    assert len(behaviour.received) == 2


async def test_no_secret_no_signature(
        receiver: tuple[str, Behaviour], client: httpx.AsyncClient) -> None:
    url, behaviour = receiver
    delivery = await send(hook(url, secret=None), client)
    assert delivery.ok and delivery.attempts == 1
    assert "X-Bridgehead-Signature" not in behaviour.received[0].headers
