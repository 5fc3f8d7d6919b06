"""The ``emr`` pool provider on moto (with :class:`EmrSimulator`): a node is a TASK instance
group of its own in the agent's EMR pool's cluster. What is asserted is what moto recorded:
the groups, their counts, and the calls made."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends.emr import EmrBackend
from bridgehead.domain.pools import InvalidPool, Pool, pool_from_dict
from bridgehead.pools.providers import make
from bridgehead.pools.providers.base import CapacityShortage, NodeBusy, ProviderError
from bridgehead.pools.providers.emr import EmrProvider, Slot
from bridgehead.testing.emr_sim import EmrSimulator
from tests.emr.conftest import backend


def pool(**kw: Any) -> Pool:
    given: dict[str, Any] = {"name": "task", "cluster": "emr", "provider": "emr",
                             "shape": {"cpus": 4, "memory_mb": 16384}, "max_nodes": 4,
                             "options": {"instance_type": "m5.xlarge"}}
    return pool_from_dict({**given, **kw})


async def cluster_of(sim: EmrSimulator, tmp_path: Path) -> tuple[EmrBackend, str]:
    """The agent's EMR pool with one cluster kept (min_clusters 1), booted."""
    emr = backend(sim, tmp_path, min_clusters=1)
    for _ in range(200):
        await emr.poll([])
        ready = [v for v in emr.views.values() if v.ready]
        if ready:
            return emr, ready[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("the pool's cluster never became ready")


def task_groups(sim: EmrSimulator, cid: str) -> dict[str, int]:
    """Name -> instance count of the cluster's TASK groups, as moto holds them."""
    cluster = sim.backend.clusters[cid]
    return {g.name: g.num_instances for g in cluster.instance_groups if g.role == "TASK"}


async def test_launch_is_idempotent_by_key_across_an_agent_restart(
        sim: EmrSimulator, tmp_path: Path) -> None:
    emr, cid = await cluster_of(sim, tmp_path)
    p = pool()
    first = EmrProvider(p, emr)
    made = await first.launch(p, ["n1", "n2"])
    assert task_groups(sim, cid) == {"bh-task-1": 1, "bh-task-2": 1}
    assert sim.calls["AddInstanceGroups"] == 2
    # the agent dies between the call and the heartbeat that reports it; a new one asks again
    again = EmrProvider(p, backend(sim, tmp_path, min_clusters=1))
    assert await again.launch(p, ["n1", "n2"]) == made
    assert task_groups(sim, cid) == {"bh-task-1": 1, "bh-task-2": 1}
    assert sim.calls["AddInstanceGroups"] == 2 and sim.calls["ModifyInstanceGroups"] == 0
    listed = {n.key: n for n in await again.list([p])}
    assert set(listed) == {"n1", "n2"}
    assert listed["n1"].provider_id == made["n1"] and listed["n1"].ready
    assert listed["n1"].jobs == 0 and not listed["n1"].interrupted


async def test_a_terminated_slot_is_reused_for_the_next_key(sim: EmrSimulator,
                                                            tmp_path: Path) -> None:
    emr, cid = await cluster_of(sim, tmp_path)
    p = pool()
    provider = EmrProvider(p, emr)
    made = await provider.launch(p, ["n1"])
    await provider.terminate(p, [made["n1"]])
    assert task_groups(sim, cid) == {"bh-task-1": 0}  # EMR cannot delete a group: resized
    assert await provider.list([p]) == []
    await provider.terminate(p, [made["n1"]])  # gone already: not an error
    again = await provider.launch(p, ["n2"])
    assert again["n2"] == made["n1"]  # the same group, grown back for the new key
    assert task_groups(sim, cid) == {"bh-task-1": 1}
    assert [(n.key, n.provider_id) for n in await provider.list([p])] == [("n2", made["n1"])]


async def test_a_launch_refused_by_emr_is_completed_when_asked_again(
        sim: EmrSimulator, tmp_path: Path) -> None:
    """The key's slot is recorded before AddInstanceGroups; EMR refuses it (or the agent dies
    before it is sent): the next launch of that key creates the group under the same name."""
    emr, cid = await cluster_of(sim, tmp_path)
    p = pool()
    sim.refuse("AddInstanceGroups", "Instance type m5.xlarge is not available")
    with pytest.raises(ProviderError, match="not available"):
        await EmrProvider(p, emr).launch(p, ["n1"])
    assert task_groups(sim, cid) == {}
    made = await EmrProvider(p, emr).launch(p, ["n1"])
    assert task_groups(sim, cid) == {"bh-task-1": 1}
    assert made["n1"].startswith(f"{cid}/")


async def test_a_node_is_not_terminated_while_the_cluster_runs_a_step(
        sim: EmrSimulator, tmp_path: Path) -> None:
    emr, cid = await cluster_of(sim, tmp_path)
    p = pool()
    provider = EmrProvider(p, emr)
    made = await provider.launch(p, ["n1"])
    gate = tmp_path / "gate"
    sim.client().add_job_flow_steps(JobFlowId=cid, Steps=[{
        "Name": "work", "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar",
                          "Args": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.1; done"]}}])
    for _ in range(200):
        [node] = await provider.list([p])
        if node.jobs:
            break
        await asyncio.sleep(0.05)
    assert node.jobs == 1 and node.ready
    with pytest.raises(NodeBusy, match="running steps"):
        await provider.terminate(p, [made["n1"]])
    assert task_groups(sim, cid) == {"bh-task-1": 1}
    gate.touch()
    for _ in range(200):
        [node] = await provider.list([p])
        if not node.jobs:
            break
        await asyncio.sleep(0.05)
    await provider.terminate(p, [made["n1"]])
    assert task_groups(sim, cid) == {"bh-task-1": 0}


async def test_a_group_of_ours_with_no_recorded_key_is_listed_as_an_orphan(
        sim: EmrSimulator, tmp_path: Path) -> None:
    emr, _ = await cluster_of(sim, tmp_path)
    p = pool()
    await EmrProvider(p, emr).launch(p, ["n1"])
    (tmp_path / "emr" / "nodes-task.json").unlink()  # the agent's state dir was lost
    [node] = await EmrProvider(p, emr).list([p])
    assert node.key is None and not node.adopted


async def test_the_clusters_48_task_groups_are_a_shortage(sim: EmrSimulator,
                                                         tmp_path: Path) -> None:
    emr, cid = await cluster_of(sim, tmp_path)
    sim.client().add_instance_groups(JobFlowId=cid, InstanceGroups=[
        {"Name": f"site-{i}", "InstanceRole": "TASK", "InstanceType": "m5.large",
         "InstanceCount": 1} for i in range(47)])
    p = pool()
    provider = EmrProvider(p, emr)
    made = await provider.launch(p, ["n1", "n2"])
    assert list(made) == ["n1"]  # the 48th TASK group; n2 is asked again later
    with pytest.raises(CapacityShortage, match="48 TASK instance groups"):
        await provider.launch(p, ["n2"])


def test_spot_interruption_is_read_from_the_group() -> None:
    """EMR shows a spot loss as a SPOT group that was ready running fewer than it asks for
    (ListInstanceGroups' documented fields; moto never takes an instance back)."""
    group = {"Id": "ig-1", "Name": "bh-task-1", "Market": "SPOT", "InstanceGroupType": "TASK",
             "RequestedInstanceCount": 1, "RunningInstanceCount": 0,
             "Status": {"State": "RESIZING", "Timeline": {"ReadyDateTime": "2026-12-05"}}}
    assert Slot.of(group).interrupted and not Slot.of(group).ready
    booting = {**group, "Status": {"State": "PROVISIONING", "Timeline": {}}}
    assert not Slot.of(booting).interrupted
    on_demand = {**group, "Market": "ON_DEMAND"}
    assert not Slot.of(on_demand).interrupted


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"options": {}}, ("options", "instance_type"), "EC2 instance type"),
    ({"options": {"instance_type": "m5 xlarge"}}, ("options", "instance_type"), "EC2"),
    ({"options": {"instance_type": "m5.xlarge", "cluster_id": "cluster-1"}},
     ("options", "cluster_id"), "j-"),
    ({"options": {"instance_type": "m5.xlarge", "bid": 1}}, ("options", "bid"),
     "unknown option"),
    ({"max_nodes": 49}, ("max_nodes",), "at most 48"),
])
def test_bad_options_are_refused_naming_the_field(change: dict[str, Any],
                                                  field: tuple[str, ...], says: str) -> None:
    with pytest.raises(InvalidPool, match=says) as refused:
        make(pool(**change))
    assert refused.value.loc == field


async def test_the_pools_cluster_must_be_kept(sim: EmrSimulator, tmp_path: Path) -> None:
    """Without cluster_id, an agent whose EMR pool may retire every cluster is refused."""
    with pytest.raises(InvalidPool, match="min_clusters") as refused:
        EmrProvider(pool(), backend(sim, tmp_path, min_clusters=0))
    assert refused.value.loc == ("options", "cluster_id")


async def test_nodes_of_a_cluster_that_died_are_gone(sim: EmrSimulator, tmp_path: Path) -> None:
    """A spot loss of the whole cluster: its nodes are no longer listed (the scaler calls them
    lost) and terminating them asks EMR nothing."""
    emr, cid = await cluster_of(sim, tmp_path)
    p = pool()
    provider = EmrProvider(p, emr)
    made = await provider.launch(p, ["n1"])
    sim.kill(cid)
    assert await provider.list([p]) == []
    await provider.terminate(p, [made["n1"]])
    assert sim.calls["ModifyInstanceGroups"] == 0
