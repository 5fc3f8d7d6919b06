"""What the SDK says when something other than Bridgehead answers (a load balancer's 503 page,
an empty 502): one short line, never a page of HTML."""

from __future__ import annotations

import httpx

from bridgehead.client.core import _error_of
from bridgehead.errors import NotFound, ServerUnavailable

HAPROXY_503 = ("<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle "
               "this request.\n</body></html>\n")


def test_a_proxy_page_becomes_its_heading() -> None:
    error = _error_of(httpx.Response(503, text=HAPROXY_503))
    assert isinstance(error, ServerUnavailable) and str(error) == "503: 503 Service Unavailable"
    assert str(_error_of(httpx.Response(502, text=""))) == "502: (no body)"
    assert str(_error_of(httpx.Response(504, text="upstream timed out\nmore"))) == (
        "504: upstream timed out")


def test_bridgeheads_own_detail_is_kept() -> None:
    error = _error_of(httpx.Response(404, json={"detail": "job x not found"}))
    assert isinstance(error, NotFound) and "job x not found" in str(error)
