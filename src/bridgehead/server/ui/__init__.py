"""The web UI under ``/ui``: server-rendered pages (Jinja2 templates) plus one small script
and one stylesheet, all package data, so the installed package serves it with no build step.

:func:`install` adds the pages and forms, the static files, the security headers of every
``/ui`` response (a CSP without inline script, no framing, no sniffing) and HTML answers to
errors on ``/ui`` (a missing or ended session goes to the login page).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridgehead.errors import AuthError, BridgeheadError, Forbidden
from bridgehead.server.sessions import COOKIE, clear_cookie
from bridgehead.server.ui import (
    actions,
    clusters_page,
    costs_page,
    more_pages,
    pages,
    save_page,
    schedules_page,
)
from bridgehead.server.ui.views import render

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin")]


class UiHeaders:
    """Add :data:`HEADERS` to every response under ``/ui``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] + "/").startswith("/ui/"):
            return await self.app(scope, receive, send)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, sending)


def install(app: FastAPI) -> None:
    app.include_router(actions.router)
    app.include_router(pages.router)
    app.include_router(more_pages.router)
    app.include_router(costs_page.router)
    app.include_router(schedules_page.router)
    app.include_router(save_page.router)
    app.include_router(clusters_page.router)
    app.mount("/ui/static", StaticFiles(packages=[("bridgehead.server.ui", "static")]),
              name="ui-static")
    app.add_middleware(UiHeaders)
    api_handler: Any = app.exception_handlers[BridgeheadError]

    async def error(request: Request, exc: Exception) -> Response:
        if not (request.url.path + "/").startswith("/ui/"):
            return await api_handler(request, exc)
        if isinstance(exc, AuthError) and not isinstance(exc, Forbidden):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response: Response = RedirectResponse(f"/ui/login?next={quote(target)}", 303)
            if COOKIE in request.cookies:
                clear_cookie(request, response)
            return response
        api = await api_handler(request, exc)
        message = exc.message if isinstance(exc, BridgeheadError) else "error"
        return render(request, "error.html", api.status_code, title="Error", message=message,
                      code=api.status_code)

    app.add_exception_handler(BridgeheadError, error)
