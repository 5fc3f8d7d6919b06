"""The provider registry, provider options, and the ``sim`` provider on real time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.domain.pools import InvalidPool, NodeShape, Pool
from bridgehead.pools.providers import PROVIDERS, make
from bridgehead.pools.providers.base import ProviderError
from bridgehead.pools.providers.local import LocalProvider
from bridgehead.pools.providers.sim import SimProvider


def pool(provider: str = "sim", **options: Any) -> Pool:
    return Pool(name="p", cluster="c", provider=provider, shape=NodeShape(cpus=2, memory_mb=512),
                options=options)


def test_the_registry_builds_each_shipped_provider_it_has() -> None:
    assert isinstance(make(pool("sim")), SimProvider)
    assert isinstance(make(pool("local")), LocalProvider)
    assert {"local", "sim"} <= set(PROVIDERS)


def test_a_provider_this_agent_does_not_have_is_refused_naming_the_field(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(PROVIDERS, "spark_standalone")  # (every shipped one is registered)
    with pytest.raises(InvalidPool) as info:
        make(pool("spark_standalone"))
    assert info.value.loc == ("provider",)
    assert "spark_standalone" in info.value.detail and "sim" in info.value.detail


@pytest.mark.parametrize(("provider", "options"), [
    ("emr", {"instance_type": "m5.xlarge"}), ("spark_standalone", {})])
def test_a_cluster_provider_in_an_agent_of_another_backend_does_not_start(
        tmp_path: Path, provider: str, options: dict[str, Any]) -> None:
    """The server checks the options alone (no backend); an agent whose backend is another
    refuses the pool at once, so the agent leaves it out instead of failing every listing."""
    assert make(pool(provider, **options)).name == provider
    local = LocalBackend(LocalBackendSettings(state_dir=tmp_path, slots=1))
    with pytest.raises(ProviderError, match=f"only in an agent of the {provider} backend"):
        make(pool(provider, **options), local)


@pytest.mark.parametrize(("provider", "options", "name", "says"), [
    ("sim", {"boot_z": 1}, "boot_z", "unknown option 'boot_z' for provider sim"),
    ("sim", {"boot_s": -1}, "boot_s", "must be >= 0"),
    ("sim", {"boot_s": "soon"}, "boot_s", "must be a number"),
    ("sim", {"boot_s": True}, "boot_s", "must be a number"),
    ("sim", {"failed_boot_p": 1.5}, "failed_boot_p", "must be <= 1"),
    ("sim", {"seed": 1.5}, "seed", "must be an integer"),
    ("local", {"boot_s": float("inf")}, "boot_s", "must be a number"),
    ("local", {"partition": "x"}, "partition", "known: boot_s"),
])
def test_bad_options_are_refused_at_the_option(provider: str, options: dict[str, Any],
                                                name: str, says: str) -> None:
    with pytest.raises(InvalidPool) as info:
        make(pool(provider, **options))
    assert info.value.loc == ("options", name)
    assert says in info.value.detail


def test_good_options_are_taken_and_defaults_filled() -> None:
    assert make(pool("local", boot_s=0)).boot_s == 0.0  # type: ignore[attr-defined]
    assert make(pool("local")).boot_s == 2.0  # type: ignore[attr-defined]


async def test_sim_launch_is_idempotent_by_key_and_boots_after_boot_s() -> None:
    p = pool("sim", boot_s=0.3, seed=1)
    sim = make(p)
    first = await sim.launch(p, ["n1", "n2"])
    again = await sim.launch(p, ["n2", "n1"])
    assert first == again and len(set(first.values())) == 2
    listed = await sim.list([p])
    assert sorted((n.key, n.ready) for n in listed) == [("n1", False), ("n2", False)]

    async def booted() -> None:
        while not all(n.ready for n in await sim.list([p])):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(booted(), 30)
    await sim.terminate(p, [first["n1"], "vm-unknown"])  # an unknown node is gone already
    assert [n.key for n in await sim.list([p])] == ["n2"]
    assert await sim.list([replace(p, name="other")]) == []


async def test_sim_failed_boots_never_become_ready() -> None:
    p = pool("sim", boot_s=0, failed_boot_p=1.0)
    sim = make(p)
    await sim.launch(p, ["n1"])
    [node] = await sim.list([p])
    assert node.key == "n1" and not node.ready


async def test_the_local_provider_without_a_local_backend_says_so() -> None:
    p = pool("local")
    with pytest.raises(ProviderError, match="only in an agent of the local backend"):
        await make(p).launch(p, ["n1"])
