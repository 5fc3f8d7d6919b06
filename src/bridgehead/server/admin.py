"""Clusters, the event log (cursor long-poll and SSE) and tokens."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, cast

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bridgehead.domain.clusters import Principal, Role
from bridgehead.domain.events import Event
from bridgehead.errors import Conflict, Forbidden, InvalidSpec
from bridgehead.server.auth import Admin, Authed, ClientOrAdmin
from bridgehead.server.deps import store_of
from bridgehead.server.guard import to_json
from bridgehead.server.openapi import errors
from bridgehead.server.schemas import (
    MAX_INT,
    MAX_WAIT,
    NAME_PATTERN,
    ClusterOut,
    EventIn,
    EventPage,
    TokenIn,
    TokenOut,
)
from bridgehead.store.ui_sql import UiStore

router = APIRouter(prefix="/v1")
RESERVED_TYPES = "bridgehead."
RESERVED_SOURCES = frozenset({"bridgehead", "bridgehead.rules"})
SCHEDULER_SOURCE = "slurm"
"""Events of source ``slurm/<cluster>`` are that cluster's scheduler's (its Slurm hook)."""
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
    subject: Annotated[str | None, Query(min_length=1, max_length=1024, description=(
        "Only the events about this subject: jobs/<id>, runs/<id>, runs/<id>/<step>/<i>, "
        "an external event's subject."))] = None,
) -> EventPage:
    """Events after the cursor ``after`` (a ``seq``); with ``wait``, long-poll for new ones.
    A client token of one tenant sees that tenant's events only, as with jobs."""
    store = store_of(request)
    tenant = _scope(p)
    deadline = time.monotonic() + min(wait, request.app.state.settings.max_wait_s)

    async def read() -> list[Event]:
        if subject is None:
            return await store.events(after=after, limit=limit, tenant=tenant)
        return await cast(UiStore, store).subject_events(subject, after=after, limit=limit,
                                                         tenant=tenant)

    async with store.hub.watch("events") as changed:
        found = await read()
        while not found and (left := deadline - time.monotonic()) > 0:
            if not await changed.wait(left):
                break
            found = await read()
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
    after: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_INT, description=(
        "The last seq seen, sent by a reconnecting EventSource; wins over after."))] = None,
) -> StreamingResponse:
    """Server-sent events from the cursor ``after``; each event's ``id:`` is its ``seq``
    (reconnect with ``Last-Event-ID`` or ``after``). Scoped by tenant as ``GET /v1/events``."""
    store = store_of(request)
    tenant = _scope(p)
    cursor = after if last_event_id is None else last_event_id

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
                                             "already; it is returned and not logged again."},
                        **errors(403)})
async def post_event(body: EventIn, request: Request, p: Authed) -> JSONResponse:
    """Append an external event (``file.created``, a webhook's payload) to the log, where
    rules see it. Give ``id`` to make re-sending safe: the (source, id) is logged once per
    tenant. A client token of one tenant posts only its own sources (:func:`_source`).

    A scheduler's job event (source ``slurm/<cluster>``, from ``bridgehead slurm-event``)
    comes with an agent token of that cluster (or an admin's): it also tells the cluster's
    agents to poll their scheduler now, wherever they run."""
    source = _source(p, body.source if "source" in body.model_fields_set else None)
    if body.type.lower().startswith(RESERVED_TYPES) or source.lower() in RESERVED_SOURCES:
        raise InvalidSpec("event types 'bridgehead.*' and the sources 'bridgehead' and "
                          "'bridgehead.rules' are Bridgehead's own: an external event may "
                          "not pose as a job's or a workflow's")
    wake = _scheduler_wake(source, p)
    tenant = body.tenant if body.tenant is not None else (p.tenant or "")
    allowed = p.may_see_tenant(tenant) if tenant else p.tenant is None
    if not allowed:
        raise Forbidden(f"this token may not post events for tenant {tenant!r}")
    if len(json.dumps(body.data)) > MAX_EVENT_DATA:
        raise InvalidSpec(f"event data larger than {MAX_EVENT_DATA} bytes as JSON: events "
                          "announce data, they do not carry it (give its path)")
    event = Event(type=body.type, subject=body.subject, source=source, data=body.data,
                  tenant=tenant)
    if body.id is not None:
        event = replace(event, id=body.id)
    [(logged, created)] = await store_of(request).append_events([event], wake=wake)
    if wake:
        request.app.state.metrics.scheduler_event(wake[0].partition(":")[2])
    return JSONResponse(logged.to_cloudevent(), 201 if created else 200)


def _scheduler_wake(source: str, p: Principal) -> list[str]:
    """The change key that wakes the agents of the cluster a scheduler event comes from
    (``poll:<cluster>``), or none for other events. Only an agent token of that cluster (or
    an admin's) posts as its scheduler; an agent token posts nothing else."""
    kind, slash, cluster = source.partition("/")
    if kind.lower() != SCHEDULER_SOURCE or not slash:
        if p.role is Role.AGENT:
            raise Forbidden(f"an agent token posts only its cluster's scheduler events "
                            f"(source '{SCHEDULER_SOURCE}/{p.cluster}'), not source "
                            f"{source!r}")
        return []
    if not p.may_serve(cluster) or not re.fullmatch(NAME_PATTERN, cluster):
        raise Forbidden(f"events of source {source!r} come from cluster {cluster!r}'s "
                        "Slurm hook: post them with an agent token of that cluster")
    return [f"poll:{cluster}"]


def _source(p: Principal, given: str | None) -> str:
    """The source of an event ``p`` posts (``given``, or None when the body has none).

    A client token of one tenant is bound to its name: it posts the source ``<name>`` (its
    default) or ``<name>/<anything>``, so a rule matching a source matches only what the
    tokens so named posted (name a watcher's token after its source,
    ``bridgehead.watch/<host>``, or give ``bridgehead watch --source``). Tokens that act in
    every tenant (admins, clients without a tenant) post any source, ``external`` by
    default; agent tokens, their cluster's scheduler events (:func:`_scheduler_wake`)."""
    if p.role is not Role.CLIENT or p.tenant is None:
        return given or "external"
    if given is None:
        return p.name
    if given != p.name and not given.startswith(f"{p.name}/"):
        raise Forbidden(f"token {p.name!r} (tenant {p.tenant!r}) posts only the sources "
                        f"{p.name!r} and '{p.name}/...', not {given!r}: a tenant's token "
                        "speaks for its own name (ask an admin for a token named after the "
                        "source)")
    return given


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


@router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"], responses=errors(409))
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
