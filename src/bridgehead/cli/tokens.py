"""Token bootstrap straight into a store (before any admin token exists)."""

from __future__ import annotations

from typing import Any

from bridgehead.domain.clusters import Role
from bridgehead.store import create_store


async def create_in_store(dsn: str, name: str, role: str, cluster: str | None,
                          tenant: str | None) -> dict[str, Any]:
    store = create_store(dsn)
    await store.open()
    try:
        p, secret = await store.create_token(name=name, role=Role(role), cluster=cluster,
                                             tenant=tenant)
    finally:
        await store.close()
    return {"id": p.token_id, "name": p.name, "role": p.role.value, "cluster": p.cluster,
            "tenant": p.tenant, "token": secret}
