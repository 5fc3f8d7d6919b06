"""Rendering: the Jinja2 templates (package data, autoescaped) and the filters they use.

Every page is complete HTML from the server, so it reads with JavaScript off; ``ui.js`` only
adds live updates. Pages carry no inline script or style (the CSP forbids both): what the
script needs is in ``data-`` attributes.

No stored row may break a page: text that cannot be encoded (an unpaired surrogate in a row
stored before the edge checked text) is shown as U+FFFD and data nested too deep for YAML is
cut, as the API's ``guard.plain`` does for JSON; the rest of the page is unchanged.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import yaml
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from bridgehead.domain.jobs import JobState
from bridgehead.server.guard import plain

FAILED_STATES = (JobState.FAILED, JobState.TIMED_OUT, JobState.LOST)


def when(ts: float | None) -> str:
    """UNIX seconds as ``2026-12-05 07:44:01Z``; ``-`` for none."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(ts: float | None, now: float | None = None) -> str:
    """How long ago: ``4s``, ``3m``, ``2h``, ``5d``; ``never`` for none."""
    if not ts:
        return "never"
    seconds = max(0, int((now or time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def as_yaml(data: Any) -> str:
    """JSON-shaped ``data`` (a spec, params, a rule) as YAML, cleaned by ``plain`` first: an
    unpaired surrogate shows as U+FFFD (YAML would escape it as ``\\uDFFF``), and data nested
    deeper than the dumper can recurse (a row stored before the checks) is cut."""
    return yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True, width=100)


def _env() -> Environment:
    env = Environment(loader=PackageLoader("bridgehead.server.ui", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(when=when, age=age, duration=duration, yaml=as_yaml)
    return env


ENV = _env()


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "ui_session", None)
    context.setdefault("me", session.principal if session else None)
    context.setdefault("csrf", session.csrf if session else "")
    context.setdefault("path", request.url.path)
    html = ENV.get_template(name).render(request=request, **context)
    headers = {"Cache-Control": "no-store"}
    try:
        return HTMLResponse(html, status, headers=headers)  # encodes the page as UTF-8
    except UnicodeEncodeError:  # an unpaired surrogate: U+FFFD instead, as the API shows it
        return HTMLResponse(plain(html), status, headers=headers)
