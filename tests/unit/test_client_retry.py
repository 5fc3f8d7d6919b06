"""The SDK and a 429 (its token had too many requests in service at once, nothing of the
request was done): it waits the answer's Retry-After and sends the request again, up to its
timeout; then RateLimited, with the wait the server asked for."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bridgehead.client import AsyncClient
from bridgehead.errors import RateLimited
from bridgehead.server.limits import long_poll, token_key


class Busy:
    """Answers 429 (Retry-After ``retry_after``) ``refusals`` times, then accepts."""

    def __init__(self, refusals: int, retry_after: str = "0.1") -> None:
        self.refusals, self.retry_after, self.seen = refusals, retry_after, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.seen <= self.refusals:
            return httpx.Response(429, headers={"Retry-After": self.retry_after},
                                  json={"detail": "too many requests at once"})
        return httpx.Response(200, json={"status": "ok"})


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRIDGEHEAD_HOME", str(tmp_path / "home"))


async def test_a_refused_request_is_sent_again_after_retry_after() -> None:
    server = Busy(refusals=3)
    async with AsyncClient("http://bh.test", "tok", transport=httpx.MockTransport(server)) as bh:
        health = await bh.health()
    assert health == {"status": "ok"} and server.seen == 4


async def test_refusals_past_the_timeout_raise_rate_limited_with_the_wait_asked() -> None:
    server = Busy(refusals=1000, retry_after="0.4")
    async with AsyncClient("http://bh.test", "tok", timeout=1.0,
                           transport=httpx.MockTransport(server)) as bh:
        with pytest.raises(RateLimited) as caught:
            await bh.health()
    assert caught.value.retry_after == 0.4 and caught.value.status == 429
    assert 1 < server.seen < 1000  # it retried, then gave up


def test_long_polls_are_not_counted_against_a_token() -> None:
    def scope(path: str, query: bytes = b"") -> dict[str, object]:
        return {"path": path, "query_string": query, "headers": []}

    assert long_poll(scope("/v1/agent/claim"))
    assert long_poll(scope("/v1/jobs/j1/wait", b"until=terminal"))
    assert long_poll(scope("/v1/events/stream"))
    assert long_poll(scope("/v1/events", b"after=3&wait=20"))
    assert not long_poll(scope("/v1/events", b"after=3&wait=0"))
    assert not long_poll(scope("/v1/jobs/batch"))


def test_the_limit_keys_on_a_digest_of_the_bearer_token() -> None:
    def scope(header: bytes) -> dict[str, object]:
        return {"headers": [(b"authorization", header)]}

    key = token_key(scope(b"Bearer s3cret"))
    assert key is not None and "s3cret" not in key
    assert token_key(scope(b"bearer s3cret")) == key
    assert token_key(scope(b"Basic abc")) is None and token_key({"headers": []}) is None
