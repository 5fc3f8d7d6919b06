"""Clusters, the event log (cursor long-poll and SSE) and tokens."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bridgehead.domain.clusters import Principal, Role
from bridgehead.domain.events import Event
from bridgehead.errors import Conflict, Forbidden, InvalidSpec
from bridgehead.server.auth import Admin, Authed, ClientOrAdmin
from bridgehead.server.deps import store_of
from bridgehead.server.guard import to_json
from bridgehead.server.schemas import (
    MAX_INT,
    MAX_WAIT,
    ClusterOut,
    EventIn,
    EventPage,
    TokenIn,
    TokenOut,
)

router = APIRouter(prefix="/v1")
RESERVED_TYPES = "bridgehead."
RESERVED_SOURCES = frozenset({"bridgehead", "bridgehead.rules"})
KEEPALIVE_S = 15.0
MAX_EVENT_DATA = 64 << 10
"""The largest external event's data, as JSON."""
PAGE_BYTES = 4 << 20
"""A page of events ends once its data passes this many bytes (the next page goes on)."""


@router.get("/clusters", response_model=list[ClusterOut], tags=["clusters"])
async def clusters(request: Request, _p: Authed) -> list[ClusterOut]:
    """Every cluster that ever sent a heartbeat: online, queue depth and running counts."""
    ttl = request.app.state.settings.cluster_ttl_s
    now = time.time()
    return [ClusterOut.of(s, now, ttl) for s in await store_of(request).clusters()]


@router.get("/events", response_model=EventPage, tags=["events"])
async def events(
    request: Request,
    p: ClientOrAdmin,
    after: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
) -> EventPage:
    """Events after the cursor ``after`` (a ``seq``); with ``wait``, long-poll for new ones.
    A client token of one tenant sees that tenant's events only, as with jobs."""
    store = store_of(request)
    tenant = _scope(p)
    deadline = time.monotonic() + min(wait, request.app.state.settings.max_wait_s)
    async with store.hub.watch("events") as changed:
        found = await store.events(after=after, limit=limit, tenant=tenant)
        while not found and (left := deadline - time.monotonic()) > 0:
            if not await changed.wait(left):
                break
            found = await store.events(after=after, limit=limit, tenant=tenant)
    parts: list[bytes] = []
    size, last = 0, after
    for event in found:  # each event serialized once; the page ends past PAGE_BYTES
        if parts and size > PAGE_BYTES:
            break
        parts.append(to_json(event.to_cloudevent()))
        size, last = size + len(parts[-1]), event.seq
    body = b'{"events":[' + b",".join(parts) + b'],"next":' + str(last).encode() + b"}"
    return Response(body, media_type="application/json")  # type: ignore[return-value]


@router.get("/events/stream", tags=["events"],
            responses={200: {"content": {"text/event-stream": {}}}})
async def event_stream(
    request: Request, p: ClientOrAdmin,
    after: Annotated[int, Query(ge=0, le=MAX_INT)] = 0
) -> StreamingResponse:
    """Server-sent events from the cursor ``after``; each event's ``id:`` is its ``seq``
    (reconnect with ``Last-Event-ID`` or ``after``). Scoped by tenant as ``GET /v1/events``."""
    store = store_of(request)
    tenant = _scope(p)
    last = request.headers.get("last-event-id")
    cursor = int(last) if last and last.isdigit() else after

    async def stream() -> AsyncIterator[bytes]:
        nonlocal cursor
        async with store.hub.watch("events") as changed:
            while not store.hub.closed and not await request.is_disconnected():
                batch = await store.events(after=cursor, limit=500, tenant=tenant)
                for e in batch:
                    payload = to_json(e.to_cloudevent()).decode()
                    yield f"id: {e.seq}\nevent: {e.type}\ndata: {payload}\n\n".encode()
                    cursor = e.seq
                if not batch and not await changed.wait(KEEPALIVE_S):
                    yield b": keepalive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@router.post("/events", status_code=201, tags=["events"],
             responses={200: {"description": "An event with this source and id is logged "
                                             "already; it is returned and not logged again."}})
async def post_event(body: EventIn, request: Request, p: ClientOrAdmin) -> JSONResponse:
    """Append an external event (``file.created``, a webhook's payload) to the log, where
    rules see it. Give ``id`` to make re-sending safe: the (source, id) is logged once."""
    if body.type.lower().startswith(RESERVED_TYPES) or body.source.lower() in RESERVED_SOURCES:
        raise InvalidSpec("event types 'bridgehead.*' and the sources 'bridgehead' and "
                          "'bridgehead.rules' are Bridgehead's own: an external event may "
                          "not pose as a job's or a workflow's")
    tenant = body.tenant if body.tenant is not None else (p.tenant or "")
    allowed = p.may_see_tenant(tenant) if tenant else p.tenant is None
    if not allowed:
        raise Forbidden(f"this token may not post events for tenant {tenant!r}")
    if len(json.dumps(body.data)) > MAX_EVENT_DATA:
        raise InvalidSpec(f"event data larger than {MAX_EVENT_DATA} bytes as JSON: events "
                          "announce data, they do not carry it (give its path)")
    event = Event(type=body.type, subject=body.subject, source=body.source, data=body.data,
                  tenant=tenant)
    if body.id is not None:
        event = replace(event, id=body.id)
    [(logged, created)] = await store_of(request).append_events([event])
    return JSONResponse(logged.to_cloudevent(), 201 if created else 200)


def _scope(p: Principal) -> str | None:
    """The tenant whose events ``p`` may read; None: every tenant's (admins, clients of
    every tenant)."""
    return None if p.role is Role.ADMIN else p.tenant


@router.post("/tokens", response_model=TokenOut, status_code=201, tags=["tokens"])
async def create_token(body: TokenIn, request: Request, _p: Admin) -> TokenOut:
    """Create a token; the secret is in this answer only."""
    principal, secret = await store_of(request).create_token(
        name=body.name, role=body.role, cluster=body.cluster, tenant=body.tenant
    )
    return TokenOut.of(principal, secret)


@router.get("/tokens", response_model=list[TokenOut], tags=["tokens"])
async def list_tokens(request: Request, _p: Admin) -> list[TokenOut]:
    return [TokenOut.of(p) for p in await store_of(request).list_tokens()]


@router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
async def revoke_token(token_id: str, request: Request, _p: Admin) -> None:
    """Revoke a token at once. The last admin token cannot be revoked (nobody could create
    tokens any more): create another admin first."""
    store = store_of(request)
    tokens = await store.list_tokens()
    admins = [t for t in tokens if t.role is Role.ADMIN]
    if [t.token_id for t in admins] == [token_id]:
        raise Conflict(f"token {token_id} is the last admin token: create another admin "
                       "token before revoking it")
    await store.revoke_token(token_id)
