"""The scaler with the ``emr`` provider, end to end: a real server with an ``emr`` pool and a
real ``emr`` agent on the simulator. A step waiting for room on the cluster is demand: the
scaler buys a TASK node (the agent adds a group), keeps it while the cluster runs steps, and
releases it (the group resized to 0) once it has been idle for its grace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.testing.emr_sim import EmrSimulator
from tests.e2e.test_local_pool_scaling import FAST, HOLD
from tests.emr.test_agent_e2e import start_emr_agent
from tests.procs import eventually, stack

pytestmark = pytest.mark.slow

POOL_MAX_NODES = 2
POOL = f"""
[[server.pools]]
name = "task"
cluster = "emr"
provider = "emr"
shape = {{ cpus = 4, memory_mb = 16384 }}
max_nodes = {POOL_MAX_NODES}
idle_grace_s = 2
price_per_hour = 0.2
options = {{ instance_type = "m5.xlarge" }}
"""


def task_groups(sim: EmrSimulator) -> dict[str, int]:
    """Name -> instance count of every TASK group moto holds."""
    return {g.name: g.num_instances for c in sim.clusters() for g in c.instance_groups
            if g.role == "TASK"}


def test_a_waiting_step_buys_a_task_node_released_after_its_idle_grace(
        tmp_path: Path, sim: EmrSimulator) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(FAST + POOL)
    release = tmp_path / "release"
    with stack(home, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        agent = start_emr_agent(s, sim, BRIDGEHEAD_EMR__STEP_CONCURRENCY="1",
                                BRIDGEHEAD_EMR__MIN_CLUSTERS="1",
                                BRIDGEHEAD_EMR__MAX_CLUSTERS="1")

        def until(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
            try:
                return eventually(check, timeout, what=what)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; groups {task_groups(sim)}; agent's log:\n"
                                     f"{agent.output()[-3000:]}") from None

        holder = bh.submit(JobSpec(cluster="emr", command=("sh", "-c", HOLD, str(release))))
        until(lambda: bh.get(holder.id).state is JobState.RUNNING, "the first step running")
        waiting = bh.submit(JobSpec(cluster="emr", command=("true",)))
        until(lambda: 1 in task_groups(sim).values(), "a TASK node bought for the waiting "
                                                      "step")
        assert bh.get(waiting.id).state is not JobState.SUCCEEDED
        release.touch()  # both steps end; the node is idle from then on
        until(lambda: all(bh.get(j).state is JobState.SUCCEEDED
                          for j in (holder.id, waiting.id)), "both steps to succeed")
        # (on a busy machine the cluster may start later than the pool's expected boot: the
        # scaler then hedges with a second node, a key of its own, released the same way)
        until(lambda: set(task_groups(sim).values()) == {0}, "the idle nodes released")
        assert len(task_groups(sim)) <= POOL_MAX_NODES
        assert sim.calls["AddInstanceGroups"] == len(task_groups(sim))  # one per node, never
        # twice for one (launch is idempotent by key, however often it is asked)
        log = agent.output()
        assert "pool task: launch" in log and "pool task: terminate" in log
