"""The agent's provider runner: list before the heartbeat, commands after it, errors kept for
the next one, and nothing a provider does blocks or stops it.

The runner drives the shipped ``sim`` provider, and a site's provider written here against the
documented interface (registered as a site would), whose calls can be held or made to fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import pytest

from bridgehead.agent.pools import PoolRunner
from bridgehead.backends.base import Backend
from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.domain.pools import NodeShape, Pool, pool_to_dict
from bridgehead.pools import providers
from bridgehead.pools.providers.base import CapacityShortage, Listed, NodeBusy, ProviderError


def sim_pool(name: str = "cloud", **options: Any) -> dict[str, Any]:
    return pool_to_dict(Pool(name=name, cluster="c", provider="sim",
                             shape=NodeShape(cpus=2, memory_mb=512),
                             options={"boot_s": 0, **options}))


def launch(pool: str, *keys: str) -> list[dict[str, Any]]:
    return [{"op": "launch", "pool": pool, "key": k, "provider_id": None} for k in keys]


class SiteProvider:
    """A site's provider: records its calls; a call waits while ``hold`` is clear, and
    raises ``fail`` when set."""

    name: ClassVar[str] = "emr"
    made: ClassVar[list[SiteProvider]] = []

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.nodes: dict[str, Listed] = {}
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail: Exception | None = None
        SiteProvider.made.append(self)

    async def _call(self, op: str, ids: Sequence[str]) -> None:
        self.calls.append((op, list(ids)))
        await self.hold.wait()
        if self.fail is not None:
            raise self.fail

    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        await self._call("launch", keys)
        for key in keys:
            self.nodes[key] = Listed(provider_id=f"i-{key}", pool=pool.name, key=key)
        return {key: f"i-{key}" for key in keys}

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        await self._call("terminate", provider_ids)
        self.nodes = {k: n for k, n in self.nodes.items() if n.provider_id not in provider_ids}

    async def list(self, pools: Sequence[Pool]) -> list[Listed]:
        await self._call("list", [p.name for p in pools])
        return list(self.nodes.values())


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A site pool (its provider registered under a name the domain knows)."""
    SiteProvider.made.clear()
    monkeypatch.setitem(providers.PROVIDERS, "emr", SiteProvider)
    return {**sim_pool("site"), "provider": "emr", "options": {}}


@pytest.fixture
async def runner(tmp_path: Any) -> AsyncIterator[PoolRunner]:
    backend = LocalBackend(LocalBackendSettings(state_dir=tmp_path / "state", slots=1))
    runner = PoolRunner(backend, list_timeout_s=1.0, call_timeout_s=1.0)
    yield runner
    await runner.close()


async def test_an_agent_without_pools_reports_no_nodes(runner: PoolRunner) -> None:
    assert await runner.report() == (None, [])
    runner.configure([])
    runner.apply([])
    assert await runner.report() == (None, [])


async def test_launch_then_list_on_the_sim_provider(runner: PoolRunner) -> None:
    runner.configure([sim_pool()])
    assert await runner.report() == ([], [])
    runner.apply(launch("cloud", "n1", "n2"))
    await runner.settled()
    assert runner.ended.is_set()  # the agent's next heartbeat comes at once
    nodes, errors = await runner.report()
    assert errors == [] and nodes is not None
    assert sorted((n["key"], n["ready"], n["pool"]) for n in nodes) == [
        ("n1", True, "cloud"), ("n2", True, "cloud")]
    pid = next(n["provider_id"] for n in nodes if n["key"] == "n1")
    runner.apply([{"op": "terminate", "pool": "cloud", "key": "n1", "provider_id": pid}])
    await runner.settled()
    nodes, _ = await runner.report()
    assert [n["key"] for n in nodes or []] == ["n2"]


async def test_a_failed_command_waits_for_the_regular_heartbeat(runner: PoolRunner) -> None:
    """Its error goes with the next heartbeat, which would ask for the same launch again: not
    brought forward, or a provider that keeps failing is called in a tight loop."""
    runner.configure([sim_pool()])
    runner.apply(launch("elsewhere", "n1"))  # a pool this agent does not run: it fails
    await runner.settled()
    assert not runner.ended.is_set()
    _, errors = await runner.report()
    assert [(e["pool"], e["keys"], e["op"]) for e in errors] == [("elsewhere", ["n1"], "launch")]


async def test_the_same_pool_table_keeps_its_provider_a_changed_one_gets_a_new_one(
        runner: PoolRunner) -> None:
    runner.configure([sim_pool()])
    runner.apply(launch("cloud", "n1"))
    await runner.settled()
    runner.configure([sim_pool()])
    assert [n["key"] for n in (await runner.report())[0] or []] == ["n1"]
    runner.configure([sim_pool(seed=7)])
    assert (await runner.report())[0] == []  # a new cloud: the sim's nodes lived in the old
    runner.configure([])
    assert await runner.report() == (None, [])


async def test_launches_go_per_pool_with_all_keys_and_never_twice_while_running(
        runner: PoolRunner, site: dict[str, Any]) -> None:
    runner.configure([site, sim_pool()])
    [provider] = SiteProvider.made
    provider.hold.clear()
    runner.apply([*launch("site", "a", "b"), *launch("cloud", "c")])
    runner.apply(launch("site", "a", "b", "d"))  # the server asks again while a, b launch
    await asyncio.sleep(0.05)
    assert provider.calls == [("launch", ["a", "b"]), ("launch", ["d"])]
    provider.hold.set()
    await runner.settled()
    nodes, errors = await runner.report()
    assert errors == []
    assert sorted(n["key"] for n in nodes or []) == ["a", "b", "c", "d"]


async def test_failures_are_kept_until_a_heartbeat_carries_them(
        runner: PoolRunner, site: dict[str, Any]) -> None:
    runner.configure([site])
    [provider] = SiteProvider.made
    provider.fail = CapacityShortage("no m5.large in eu-west-1a")
    runner.apply(launch("site", "a"))
    await runner.settled()
    provider.fail = NodeBusy("i-x runs job j1")
    runner.apply([{"op": "terminate", "pool": "site", "key": "x", "provider_id": "i-x"},
                  {"op": "terminate", "pool": "site", "key": "y", "provider_id": None},
                  *launch("gone", "z")])
    await runner.settled()
    provider.fail = None
    _, errors = await runner.report()
    assert sorted(errors, key=lambda e: e["op"] + e["pool"]) == [
        {"pool": "gone", "keys": ["z"], "op": "launch",
         "error": "pool gone is not run by this agent", "shortage": False},
        {"pool": "site", "keys": ["a"], "op": "launch", "error": "no m5.large in eu-west-1a",
         "shortage": True},
        {"pool": "site", "keys": ["x"], "op": "terminate", "error": "i-x runs job j1",
         "shortage": False}]
    assert ("terminate", ["i-x"]) in provider.calls  # y had no provider id: nothing to stop
    assert len((await runner.report())[1]) == 3  # no heartbeat took them: reported again
    runner.sent()
    assert (await runner.report())[1] == []


async def test_a_call_that_hangs_is_cut_at_its_timeout_and_reported(
        runner: PoolRunner, site: dict[str, Any]) -> None:
    runner.configure([site])
    [provider] = SiteProvider.made
    provider.hold.clear()
    runner.apply(launch("site", "a"))
    await runner.settled()
    nodes, errors = await runner.report()  # its listing hangs too: no nodes this time
    assert nodes is None
    assert errors == [{"pool": "site", "keys": ["a"], "op": "launch", "error": "timed out",
                       "shortage": False}]
    provider.hold.set()
    runner.apply(launch("site", "a"))  # asked again: launched this time
    await runner.settled()
    assert [n["key"] for n in (await runner.report())[0] or []] == ["a"]


@pytest.mark.parametrize("how", ["fails", "hangs"])
async def test_a_failed_listing_reports_no_nodes_rather_than_some(
        runner: PoolRunner, site: dict[str, Any], how: str) -> None:
    runner.configure([sim_pool(), site])
    runner.apply(launch("cloud", "n1"))
    await runner.settled()
    [provider] = SiteProvider.made
    if how == "fails":
        provider.fail = ProviderError("the cloud's API answered 503")
    else:
        provider.hold.clear()
    assert await runner.report() == (None, [])  # never the sim pool's node alone


class BrokenProvider(SiteProvider):
    """A site's provider that cannot start in this agent (no credentials, say)."""

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        raise ProviderError("no credentials for the cloud's API")


async def test_a_pool_this_agent_cannot_run_is_left_out(
        runner: PoolRunner, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(providers.PROVIDERS, "emr", BrokenProvider)
    bad = {**sim_pool("spark"), "provider": "spark_standalone", "options": {}}
    broken = {**sim_pool("site"), "provider": "emr", "options": {}}
    with caplog.at_level("ERROR", logger="bridgehead"):
        runner.configure([bad, sim_pool(), replace_options(sim_pool("odd"), boot_z=1), broken])
    assert set(runner.pools) == {"cloud"}
    assert "pool site from the server cannot run in this agent: no credentials" in caplog.text
    assert "pool odd from the server cannot run in this agent: options.boot_z" in caplog.text


def replace_options(table: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {**table, "options": {**table["options"], **options}}

