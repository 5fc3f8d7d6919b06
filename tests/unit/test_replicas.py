"""Which replica a client tries, in which order, and which requests it may send twice."""

from __future__ import annotations

import pytest

from bridgehead.client.replicas import Replicas, may_repeat
from bridgehead.config import server_urls
from bridgehead.errors import ConfigError

A, B, C = "http://a:1", "http://b:2", "http://c:3"


def test_sticks_to_the_replica_that_answered_and_backs_off_the_failed() -> None:
    r = Replicas([A, B, C])
    assert r.order() == [A, B, C]
    r.failed(A)
    assert r.order() == [B, C, A]  # a failed one comes last, not never
    r.ok(B)
    assert r.url == B and r.order() == [B, C, A]
    r.failed(B)
    r.failed(C)
    assert r.order()[0] == A  # all backed off: the soonest back first


def test_backoff_doubles_to_a_cap() -> None:
    r = Replicas([A, B])
    for _ in range(20):
        r.failed(A)
    health = r._health[A]
    assert health.backoff_s == 30.0
    r.ok(A)
    assert r._health[A].backoff_s == 0.0


@pytest.mark.parametrize(("method", "path", "body", "repeat"), [
    ("GET", "/v1/jobs/j/wait", None, True),
    ("GET", "/v1/events", None, True),
    ("POST", "/v1/agent/claim", {}, True),
    ("POST", "/v1/agent/report", {}, True),
    ("POST", "/v1/jobs/j/cancel", None, True),
    ("POST", "/v1/jobs", {"idempotency_key": "k"}, True),
    ("POST", "/v1/jobs", {"command": ["true"]}, False),  # could run twice
    ("POST", "/v1/jobs/batch", {"jobs": []}, False),
    ("POST", "/v1/workflows/runs", {"spec": "x", "idempotency_key": "k"}, True),
    ("POST", "/v1/workflows/runs", {"spec": "x", "idempotency_key": None}, False),
    ("POST", "/v1/events", {"type": "x"}, False),
    ("POST", "/v1/events", {"type": "x", "id": "e1"}, True),
    ("DELETE", "/v1/rules/r", None, False),
])
def test_may_repeat(method: str, path: str, body: object, repeat: bool) -> None:
    assert may_repeat(method, path, {"json": body} if body is not None else {}) is repeat


def test_server_urls() -> None:
    assert server_urls(f" {A}/, {B} ") == [A, B]
    with pytest.raises(ConfigError, match="'a:1'"):
        server_urls("a:1")
