"""Event rules: create or replace (by name), list (secrets masked), delete.

Rules act with the server's authority (they submit jobs, start runs, and send webhooks from
the server's network position), so changing them needs an admin token. A webhook whose host
is or resolves to a loopback, link-local, private or other non-public address, or to this
server's API, is refused (400, naming the rule and field) unless ``[server] webhook_allow``
lists it. Non-admins see webhook URLs cut to ``scheme://host[:port]``, header values masked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from bridgehead.domain.clusters import Role
from bridgehead.errors import InvalidSpec
from bridgehead.rules.spec import validate_rule
from bridgehead.rules.webhook import check_webhooks
from bridgehead.server.auth import Admin, ClientOrAdmin
from bridgehead.server.deps import store_of
from bridgehead.server.schemas import RulesIn

router = APIRouter(prefix="/v1/rules", tags=["rules"])


def _public(stored: dict[str, Any], *, full: bool = True) -> dict[str, Any]:
    data = {k: v for k, v in stored.items() if k not in ("created_at", "updated_at")}
    return {**validate_rule(data).public_dict(full=full), "created_at": stored["created_at"],
            "updated_at": stored["updated_at"]}


@router.put("", response_model=list[dict[str, Any]])
async def put_rules(body: RulesIn, request: Request, _p: Admin) -> list[dict[str, Any]]:
    """Create or replace each rule by name; all or none (one invalid rule refuses the lot,
    its index and field named). Answers the rules as stored, secrets masked."""
    rules = []
    for index, data in enumerate(body.rules):
        try:
            rule = validate_rule(data)
            await check_webhooks(rule, request.app.state.rules.egress)
            rules.append(rule)
        except InvalidSpec as exc:
            located = bool(getattr(exc, "loc", ()))
            raise InvalidSpec(f"rules[{index}]{'.' if located else ': '}{exc.message}") from exc
    names = [r.name for r in rules]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise InvalidSpec(f"rules[{index}].name: {name!r} is given twice")
    store = store_of(request)
    await store.put_rules([(r.name, r.to_dict()) for r in rules])
    wanted = set(names)
    return [_public(r) for r in await store.list_rules() if r["name"] in wanted]


@router.get("", response_model=list[dict[str, Any]])
async def list_rules(request: Request, p: ClientOrAdmin) -> list[dict[str, Any]]:
    """Every rule, by name, with webhook secrets shown as ``***`` (and, to non-admins,
    webhook URLs as ``scheme://host[:port]`` and header values as ``***``)."""
    full = p.role is Role.ADMIN
    return [_public(r, full=full) for r in await store_of(request).list_rules()]


@router.delete("/{name}", status_code=204)
async def delete_rule(name: str, request: Request, _p: Admin) -> Response:
    await store_of(request).delete_rule(name)
    return Response(status_code=204)
