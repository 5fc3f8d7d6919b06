"""The ``slurm_powersave`` provider on the lab's elastic cluster ``delta`` (Slurm 22.05 CLOUD
nodes d1-d3 whose "VMs" are slurmds in PID namespaces, powered up and down by Bridgehead's own
Resume/Suspend/ResumeFail programs; see scripts/slurm-lab-delta.bash).

Provider level: launch, idempotency by key, list (ready, jobs, adopted), graceful terminate,
a failed boot, and an eviction (the node's whole process tree killed) with and without
``--no-requeue``. Each test starts from every node powered down (the ``elastic`` fixture)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends.base import Backend
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.pools import Pool, pool_from_dict
from bridgehead.pools.providers import make
from bridgehead.pools.providers.base import Listed, NodeBusy, Provider
from tests.procs import eventually
from tests.slurm.conftest import Lab

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CLUSTER = "delta"


@dataclass
class Elastic:
    """The lab's elastic partition, every node powered down, and a provider for it."""

    lab: Lab
    info: dict[str, Any]
    pool: Pool
    provider: Provider
    backend: Backend

    def run(self, *argv: str) -> str:
        return self.lab.run(CLUSTER, *argv)

    def node(self, name: str) -> dict[str, str]:
        """State and Comment of one node, read with scontrol (not with the provider)."""
        line = self.run("scontrol", "show", "node", name, "--oneline")
        state = re.search(r"\bState=(\S+)", line)
        comment = re.search(r"\bComment=(\S+)", line)
        return {"state": state.group(1) if state else "",
                "comment": comment.group(1) if comment else ""}

    def listed(self) -> dict[str, Listed]:
        return {n.provider_id: n for n in asyncio.run(self.provider.list([self.pool]))}

    def launch(self, *keys: str) -> dict[str, str]:
        return asyncio.run(self.provider.launch(self.pool, keys))

    def terminate(self, *ids: str) -> None:
        asyncio.run(self.provider.terminate(self.pool, ids))

    def sbatch(self, tmp_path: Path, *options: str, seconds: int = 317) -> str:
        out = self.run("sbatch", "--parsable", f"--output={tmp_path}/%j.out", *options,
                       f"--wrap=sleep {seconds}")
        return out.strip().split(";")[0]

    def squeue_state(self, job: str) -> str:
        return self.run("squeue", "-h", "-j", job, "-o", "%T").strip()

    def evict(self, node: str) -> None:
        """Kill the node's "VM": its namespace's unshare (the kernel kills the rest)."""
        pid = int((Path(self.info["node_pid_dir"]) / f"{node}.pid").read_text())
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "unshare"
        os.kill(pid, signal.SIGKILL)


def reset(e: Elastic) -> bool:
    """One step towards every node powered down, idle, keyless; True once there."""
    done = True
    for name in e.info["nodes"]:
        node = e.node(name)
        flags = set(node["state"].split("+"))
        clean = "POWERED_DOWN" in flags and not flags & {"DOWN", "POWERING_DOWN", "POWER_UP",
                                                          "DRAIN", "POWER_DOWN"}
        if clean and not node["comment"]:
            continue
        done = False
        down = node["state"].split("+")[0] == "DOWN" or "DRAIN" in flags
        if "POWERING_DOWN" in flags:
            continue  # on its way
        if "POWERED_DOWN" in flags and down:
            e.run("scontrol", "update", f"NodeName={name}", "State=RESUME", "Comment=")
        elif "POWERED_DOWN" in flags:
            e.run("scontrol", "update", f"NodeName={name}", "Comment=")
        else:
            e.run("scontrol", "update", f"NodeName={name}", "State=POWER_DOWN_FORCE")
    return done


@pytest.fixture
def elastic(lab: Lab, tmp_path: Path) -> Iterator[Elastic]:
    info = lab.cluster(CLUSTER)
    pool = pool_from_dict({"name": "elastic", "cluster": CLUSTER, "provider": "slurm_powersave",
                           "shape": {"cpus": info["cpus"], "memory_mb": info["memory_mb"]},
                           "options": {"partition": info["partition"]}})
    backend = lab.backend("slurm_cli", CLUSTER, tmp_path)
    e = Elastic(lab, info, pool, make(pool, backend), backend)
    jobs = e.run("squeue", "-h", "-o", "%i").split()
    if jobs:
        e.run("scancel", *jobs)
    for f in Path(info["noboot_dir"]).iterdir():
        f.unlink()
    eventually(lambda: reset(e), 90, interval=1, what="every delta node powered down")
    yield e
    jobs = e.run("squeue", "-h", "-o", "%i").split()
    if jobs:
        e.run("scancel", *jobs)
    for f in Path(info["noboot_dir"]).iterdir():
        f.unlink()


def test_launch_is_idempotent_by_key_and_terminate_powers_down(elastic: Elastic) -> None:
    made = elastic.launch("bh-n1", "bh-n2")
    # the lowest Weight first: the nodes Slurm fills first are the ones that are up
    assert made == {"bh-n1": "d1", "bh-n2": "d2"}
    assert elastic.launch("bh-n2", "bh-n1") == made  # asked again: the same nodes, no more
    assert elastic.node("d1")["comment"] == "bh-n1"
    listed = eventually(lambda: (n := elastic.listed()) and all(x.ready for x in n.values())
                        and n, 60, interval=0.5, what="both nodes ready")
    assert set(listed) == {"d1", "d2"}
    assert {(x.key, x.jobs, x.adopted) for x in listed.values()} == {("bh-n1", 0, False),
                                                                      ("bh-n2", 0, False)}
    assert "POWERED_DOWN" in elastic.node("d3")["state"]
    elastic.terminate("d1", "d2")
    eventually(lambda: not elastic.listed(), 60, interval=0.5, what="terminated nodes unlisted")
    # the SuspendProgram powers them down and clears the key: a later power-up is not ours
    eventually(lambda: all("POWERED_DOWN" in elastic.node(n)["state"]
                           and not elastic.node(n)["comment"] for n in ("d1", "d2")),
               60, interval=1, what="d1 and d2 powered down with their keys cleared")
    elastic.terminate("d1")  # a node already gone: not an error


def test_terminate_refuses_a_node_with_a_job(elastic: Elastic, tmp_path: Path) -> None:
    [node] = elastic.launch("bh-busy").values()
    eventually(lambda: elastic.listed().get(node, Listed(provider_id="", pool="")).ready,
               60, interval=0.5, what="the node ready")
    job = elastic.sbatch(tmp_path, f"--nodelist={node}")
    eventually(lambda: elastic.squeue_state(job) == "RUNNING", 60, interval=0.5,
               what="the job running")
    assert elastic.listed()[node].jobs == 1
    with pytest.raises(NodeBusy):
        elastic.terminate(node)
    assert elastic.squeue_state(job) == "RUNNING"
    assert "POWER" not in elastic.node(node)["state"]  # not even marked for power-down
    elastic.run("scancel", job)
    eventually(lambda: elastic.listed()[node].jobs == 0, 60, interval=0.5, what="job gone")
    elastic.terminate(node)
    eventually(lambda: node not in elastic.listed(), 60, interval=0.5, what="node unlisted")


def test_a_node_slurm_powers_up_for_its_own_job_is_adopted(elastic: Elastic,
                                                           tmp_path: Path) -> None:
    job = elastic.sbatch(tmp_path, seconds=2)
    listed = eventually(lambda: elastic.listed(), 60, interval=0.5, what="a node powering up")
    [(node, seen)] = listed.items()
    assert (seen.key, seen.adopted, seen.jobs) == (None, True, 1)
    eventually(lambda: elastic.listed().get(node, seen).ready, 90, interval=0.5,
               what="the adopted node ready")
    eventually(lambda: not elastic.squeue_state(job), 90, interval=0.5, what="the job done")
    # launching now takes a powered-down node, never the adopted one
    assert elastic.launch("bh-after")["bh-after"] != node


def test_a_node_that_never_boots_is_listed_not_ready_then_kept_down_for_its_cooloff(
        elastic: Elastic) -> None:
    (Path(elastic.info["noboot_dir"]) / "d1").touch()
    assert elastic.launch("bh-dud") == {"bh-dud": "d1"}
    assert not elastic.listed()["d1"].ready
    # Slurm gives up after ResumeTimeout (15 s in the lab): DOWN, powered down, our key still on it
    eventually(lambda: "DOWN" in elastic.node("d1")["state"].split("+")
               and "POWERED_DOWN" in elastic.node("d1")["state"], 120, interval=1,
               what="d1 marked down by ResumeTimeout")
    seen = elastic.listed()["d1"]
    assert (seen.key, seen.ready, seen.adopted) == ("bh-dud", False, False)
    # never picked again while down: the next launch gets another node
    assert elastic.launch("bh-next") == {"bh-next": "d2"}
    elastic.terminate("d1")
    eventually(lambda: "d1" not in elastic.listed(), 30, interval=0.5, what="d1 unlisted")
    node = elastic.node("d1")
    # kept DOWN (keyless) for its cool-off: Slurm must not lose a job to it a second time
    assert "DOWN" in node["state"].split("+") and not node["comment"], node
    assert elastic.launch("bh-third") == {"bh-third": "d3"}
    # once the cool-off is over (0 here), list offers it again
    (Path(elastic.info["noboot_dir"]) / "d1").unlink()
    cooled = make(replace(elastic.pool, options={**elastic.pool.options, "down_cooloff_s": 0}),
                 elastic.backend)
    asyncio.run(cooled.list([elastic.pool]))
    node = elastic.node("d1")
    assert "DOWN" not in node["state"].split("+") and "POWERED_DOWN" in node["state"], node
    assert asyncio.run(cooled.launch(elastic.pool, ["bh-again"])) == {"bh-again": "d1"}
    eventually(lambda: elastic.listed().get("d1", seen).ready, 60, interval=0.5,
               what="d1 boots this time")


def test_an_eviction_requeues_in_slurm_unless_no_requeue(elastic: Elastic,
                                                         tmp_path: Path) -> None:
    made = elastic.launch("bh-a", "bh-b")
    eventually(lambda: all(x.ready for x in elastic.listed().values())
               and len(elastic.listed()) == 2, 60, interval=0.5, what="two nodes ready")
    ours = elastic.sbatch(tmp_path, "--no-requeue", f"--nodelist={made['bh-a']}")
    slurms = elastic.sbatch(tmp_path, f"--nodelist={made['bh-b']}")
    eventually(lambda: {elastic.squeue_state(ours), elastic.squeue_state(slurms)} == {"RUNNING"},
               60, interval=0.5, what="both jobs running")
    eventually(lambda: _sleepers() == 2, 30, what="both jobs' processes seen")
    elastic.evict(made["bh-a"])
    elastic.evict(made["bh-b"])
    # the whole tree went with the node: no job process is left anywhere
    eventually(lambda: _sleepers() == 0, 30, what="the jobs' processes gone")

    def sacct(job: str) -> list[str]:
        return elastic.run("sacct", "-n", "-X", "-P", "--duplicates", "-j", job,
                           "-o", "State").split()

    eventually(lambda: sacct(ours) == ["NODE_FAIL"], 120, interval=1,
               what="the --no-requeue job ended NODE_FAIL")
    # without --no-requeue Slurm runs the job again by itself: with Bridgehead's own retry,
    # that would be a second run of one attempt
    eventually(lambda: elastic.squeue_state(slurms) in ("PENDING", "REQUEUED", "CONFIGURING",
                                                        "RUNNING")
               and len(sacct(slurms)) >= 2, 120, interval=1,
               what="Slurm requeued the other job itself")
    assert sacct(ours) == ["NODE_FAIL"]


def _sleepers() -> int:
    """Processes of this module's jobs (``sleep 317``) on this machine."""
    count = 0
    for p in Path("/proc").iterdir():
        try:
            count += p.name.isdigit() and (p / "cmdline").read_bytes() == b"sleep\x00317\x00"
        except OSError:
            continue
    return count


def test_the_slurm_backends_job_on_an_evicted_node_is_lost_to_the_infrastructure_once(
        elastic: Elastic) -> None:
    """Through Bridgehead's own submit: --no-requeue, so the attempt ends once (NODE_FAIL, one
    sacct row) and the agent gets LOST with infrastructure, for Bridgehead's single re-run."""
    [node] = elastic.launch("bh-evicted").values()
    eventually(lambda: elastic.listed().get(node, Listed(provider_id="", pool="")).ready,
               60, interval=0.5, what="the node ready")
    backend = elastic.backend
    spec = JobSpec(cluster=CLUSTER, command=("sleep", "317"),
                   scheduler_options=(f"--nodelist={node}",))
    native = asyncio.run(backend.submit("job-evicted", spec))

    def poll() -> Any:
        return asyncio.run(backend.poll([native]))[native]

    eventually(lambda: poll().state is JobState.RUNNING and _sleepers() == 1, 60,
               interval=0.5, what="the job running")
    elastic.evict(node)
    status = eventually(lambda: (s := poll()).state.terminal and s, 120, interval=1,
                        what="the job's end")
    assert (status.state, status.infrastructure) == (JobState.LOST, True), status
    rows = elastic.run("sacct", "-n", "-X", "-P", "--duplicates", "-j", native, "-o", "State")
    assert rows.split() == ["NODE_FAIL"]
    assert not elastic.squeue_state(native)  # not requeued by Slurm


def test_a_pool_of_some_nodes_of_the_partition_uses_only_those(elastic: Elastic) -> None:
    pool = replace(elastic.pool, options={**elastic.pool.options, "nodes": "d[2-3]"})
    some = make(pool, elastic.backend)
    assert asyncio.run(some.launch(pool, ["bh-s1"])) == {"bh-s1": "d2"}  # not d1
    assert elastic.launch("bh-all") == {"bh-all": "d1"}
    listed = eventually(lambda: (n := asyncio.run(some.list([pool]))) and n[0].ready and n,
                        60, interval=0.5, what="d2 ready")
    assert [(n.provider_id, n.key) for n in listed] == [("d2", "bh-s1")]  # d1 is not its
