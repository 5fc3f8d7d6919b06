"""Browser sessions: a token pasted once becomes a server-side session and a cookie.

A browser cannot keep a bearer token safely (script could read it) nor send one on an
``EventSource``; so ``POST /ui/login`` trades a client or admin token for a session row
(:mod:`bridgehead.store.ui_sql`) and an ``HttpOnly; SameSite=Strict`` cookie holding only a
random secret. :func:`bridgehead.server.auth.principal` takes that cookie when a request has no
``Authorization`` header, so every page and every ``/v1`` call from the UI goes through the
same principal and role checks as a bearer call.

A cookie is sent by the browser whoever made the page, so a write on a cookie (any method
but GET, HEAD, OPTIONS) must also prove it came from our own page: its ``Origin`` (or, when
absent, ``Referer``) names this server's host, and it carries the session's CSRF token (the
``X-CSRF-Token`` header or a form's ``csrf`` field). A bearer call needs neither: no browser
attaches a bearer token on its own.
"""

from __future__ import annotations

import hmac
from typing import cast
from urllib.parse import urlsplit

from fastapi import Request, Response

from bridgehead.domain.clusters import Principal
from bridgehead.errors import Forbidden
from bridgehead.store.ui_sql import Session, UiStore

COOKIE = "bh_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def ui_store(request: Request) -> UiStore:
    return cast(UiStore, request.app.state.store)


async def session_of(request: Request) -> Session | None:
    """The request's session, checked once per request (and kept on ``request.state``);
    None without a session cookie; AuthError for an unknown, expired or revoked one."""
    if hasattr(request.state, "ui_session"):
        return cast(Session | None, request.state.ui_session)
    secret = request.cookies.get(COOKIE)
    found = await ui_store(request).session(secret) if secret else None
    request.state.ui_session = found
    return found


async def cookie_principal(request: Request) -> Principal | None:
    """The principal of the request's session cookie, with the CSRF and origin checks of a
    write; None when there is no cookie."""
    session = await session_of(request)
    if session is None:
        return None
    if request.method not in SAFE_METHODS:
        check_origin(request)
        await check_csrf(request, session)
    return session.principal


def check_origin(request: Request) -> None:
    """Forbidden unless the request's Origin (or Referer) is this server's own host."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if not origin or origin == "null" or urlsplit(origin).netloc != host:
        raise Forbidden("cross-site request refused: a write with a session cookie must come "
                        "from this server's own pages (Origin)")


async def check_csrf(request: Request, session: Session) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and "form" in request.headers.get("content-type", ""):
        value = (await request.form()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not given or not hmac.compare_digest(given, session.csrf):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def set_cookie(request: Request, response: Response, secret: str, max_age: float) -> None:
    response.set_cookie(COOKIE, secret, max_age=int(max_age), path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
