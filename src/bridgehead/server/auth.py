"""Bearer-token (or browser-session) authentication and role checks (every endpoint but
/health)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from bridgehead.domain.clusters import Principal, Role
from bridgehead.errors import AuthError, Forbidden
from bridgehead.server.sessions import cookie_principal
from bridgehead.store.sql import hash_token

CACHE_TTL_S = 5.0
"""A revoked token stops working within this many seconds on every replica."""
ROLE_CHECKS: dict[Callable[..., Any], tuple[Role, ...]] = {}
"""Each dependency made by ``require``, with the roles it lets through (the OpenAPI document
and the authorization tests read it)."""


class TokenCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: str, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (principal, time.monotonic() + CACHE_TTL_S)


async def principal(request: Request) -> Principal:
    """The bearer token's principal; without an Authorization header, the browser session's
    (:mod:`bridgehead.server.sessions`, which checks a cookie write's origin and CSRF)."""
    header = request.headers.get("authorization", "")
    if not header and (found := await cookie_principal(request)) is not None:
        return found
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    secret = secret.strip()
    state = request.app.state
    key = hash_token(secret)
    found = state.tokens.get(key)
    if found is None:
        found = await state.store.authenticate(secret)
        state.tokens.put(key, found)
    return found


Authed = Annotated[Principal, Depends(principal)]


def require(*roles: Role):
    async def check(p: Authed) -> Principal:
        if p.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"this endpoint needs a token with role {allowed}")
        return p

    ROLE_CHECKS[check] = roles
    return check


Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
ClientOrAdmin = Annotated[Principal, Depends(require(Role.ADMIN, Role.CLIENT))]
AgentOrAdmin = Annotated[Principal, Depends(require(Role.ADMIN, Role.AGENT))]
