"""The agent's heartbeat with pools against a real server app and store (in process): the
pools come in the answer, the nodes go in the next heartbeat, and a pool report the server
refuses never stops the heartbeat from renewing the agent's leases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from bridgehead.agent.loop import Agent
from bridgehead.backends.base import Backend
from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.client import AsyncClient
from bridgehead.config import AgentSettings, ServerSettings
from bridgehead.controllers.scaler import Scaler
from bridgehead.domain.clusters import Role
from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.pools import Pool
from bridgehead.pools import providers
from bridgehead.pools.providers.base import Listed
from bridgehead.server.app import create_app
from bridgehead.store import JobStore, create_store

POOLS = [{"name": "site", "cluster": "local", "provider": "emr", "min_nodes": 1,
          "shape": {"cpus": 1, "memory_mb": 512}}]


class SiteProvider:
    """A site's provider whose nodes boot at once; with ``long_ids`` it lists a node whose
    id is longer than the server takes."""

    name: ClassVar[str] = "emr"
    long_ids = False

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        self.nodes: dict[str, str] = {}

    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        self.nodes.update({key: f"i-{key}" for key in keys})
        return {key: self.nodes[key] for key in keys}

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        self.nodes = {k: pid for k, pid in self.nodes.items() if pid not in provider_ids}

    async def list(self, pools: Sequence[Pool]) -> list[Listed]:
        odd = [Listed(provider_id="i-" + "x" * 300, pool="site")] if self.long_ids else []
        return [*odd, *(Listed(provider_id=pid, pool="site", key=key, ready=True)
                        for key, pid in self.nodes.items())]


@pytest.fixture
async def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[tuple[Agent, JobStore, httpx.AsyncClient, Scaler]]:
    monkeypatch.setitem(providers.PROVIDERS, "emr", SiteProvider)
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    store = create_store(dsn)
    await store.open()
    app = create_app(ServerSettings.load(store=dsn, pools=POOLS), store)
    _, secret = await store.create_token(name="a", role=Role.AGENT, cluster="local", tenant=None)
    _, admin = await store.create_token(name="b", role=Role.ADMIN, cluster=None, tenant=None)
    transport = httpx.ASGITransport(app=app)
    client = AsyncClient("http://bh", secret, transport=transport)
    http = httpx.AsyncClient(transport=transport, base_url="http://bh",
                             headers={"Authorization": f"Bearer {admin}"})
    settings = AgentSettings.load(cluster="local", server="http://bh", token=secret,
                                  state_dir=tmp_path / "agent")
    backend = LocalBackend(LocalBackendSettings(state_dir=tmp_path / "agent" / "local",
                                                slots=2))
    agent = Agent(settings, backend, client, handle_signals=False)
    yield agent, store, http, app.state.scaler
    await agent.pools.close()
    await http.aclose()
    await client.aclose()
    agent.outbox.close()
    await store.close()


async def pool_nodes(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await http.get("/v1/pools")
    assert r.status_code == 200, r.text
    [site] = r.json()
    return list(site["nodes"])


async def test_pools_come_with_the_answer_and_nodes_go_with_the_next_heartbeat(
        setup: tuple[Agent, JobStore, httpx.AsyncClient, Scaler]) -> None:
    agent, _, http, scaler = setup
    await agent._heartbeat()
    assert set(agent.pools.pools) == {"site"}
    await scaler.scale_pass()  # min_nodes 1: one node requested
    [node] = await pool_nodes(http)
    assert node["state"] == "requested"
    await agent._heartbeat()  # its answer: launch that node
    await agent.pools.settled()
    await agent._heartbeat()  # the node listed: booted and ready
    [node] = await pool_nodes(http)
    assert (node["state"], node["provider_id"]) == ("idle", f"i-{node['id']}")


async def test_a_refused_pool_report_still_renews_the_leases(
        setup: tuple[Agent, JobStore, httpx.AsyncClient, Scaler],
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, store, _, _ = setup
    monkeypatch.setattr(SiteProvider, "long_ids", True)
    await agent._heartbeat()
    await store.submit([JobSpec(cluster="local", command=("true",))])
    [claimed] = await store.claim("local", agent.agent_id, limit=1, lease_s=1)
    assert claimed.lease_expires_at is not None
    with caplog.at_level("ERROR", logger="bridgehead"):
        await agent._heartbeat()
    assert "server refused this agent's pool report, sent without it" in caplog.text
    renewed = await store.get(claimed.id)
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > claimed.lease_expires_at + 30  # the server's lease_s
