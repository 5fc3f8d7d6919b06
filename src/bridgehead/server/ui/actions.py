"""Log in and out, and the pages' writes (cancel, retry failed), as HTML forms that work
without JavaScript. Each write goes through the API's role check (``ClientOrAdmin``), which
for a session cookie checks the Origin and the form's CSRF token
(:mod:`bridgehead.server.sessions`); then it answers with a redirect to the page (303)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bridgehead.domain.clusters import Role
from bridgehead.errors import AuthError, Conflict
from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.jobs import _visible_job as visible_job
from bridgehead.server.runs import _visible as visible_run
from bridgehead.server.sessions import (
    COOKIE,
    check_origin,
    clear_cookie,
    set_cookie,
    ui_store,
)
from bridgehead.server.ui.views import render

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)


def _next(target: str | None) -> str:
    """Where to go after logging in: a page of the UI, never another site."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", title="Log in", next=_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Trade a client or admin token for a session; the token itself is kept nowhere."""
    check_origin(request)
    form = await request.form()
    secret, target = str(form.get("token") or "").strip(), _next(str(form.get("next") or ""))
    try:
        principal = await ui_store(request).authenticate(secret) if secret else None
    except AuthError:
        principal = None
    if principal is None or principal.role not in (Role.ADMIN, Role.CLIENT):
        why = ("an agent token cannot log in: use a client or admin token"
               if principal is not None else "unknown or revoked token")
        return render(request, "login.html", 401, title="Log in", next=target, error=why)
    ttl = request.app.state.settings.ui_session_s
    cookie, _csrf = await ui_store(request).create_session(principal.token_id, ttl)
    logger.info("ui session started for token %s (%s)", principal.token_id, principal.name)
    response = RedirectResponse(target, 303)
    set_cookie(request, response, cookie, ttl)
    return response


@router.post("/logout")
async def logout(request: Request, _p: ClientOrAdmin) -> Response:
    await ui_store(request).end_session(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/ui/login", 303)
    clear_cookie(request, response)
    return response


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str, p: ClientOrAdmin) -> Response:
    await visible_job(request, p, job_id)
    await ui_store(request).request_cancel(job_id)
    return RedirectResponse(f"/ui/jobs/{job_id}", 303)


@router.post("/runs/{run_id}/cancel")
async def cancel_run(request: Request, run_id: str, p: ClientOrAdmin) -> Response:
    await visible_run(request, p, run_id)
    await ui_store(request).request_run_cancel(run_id)
    return RedirectResponse(f"/ui/runs/{run_id}", 303)


@router.post("/runs/{run_id}/retry")
async def retry_run(request: Request, run_id: str, p: ClientOrAdmin) -> Response:
    """Retry what failed, as the preview showed it: refused (409) when the run changed since
    the page was made (its ``version`` in the form), so what re-runs is what was shown."""
    run = await visible_run(request, p, run_id)
    seen = str((await request.form()).get("version") or "")
    if seen != str(run.version):
        raise Conflict(f"run {run_id} changed since its page was shown: reload it to see what "
                       "a retry would run now")
    await ui_store(request).retry_run(run_id)
    return RedirectResponse(f"/ui/runs/{run_id}", 303)
