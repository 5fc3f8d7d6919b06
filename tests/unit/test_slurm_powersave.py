"""``scontrol show node --oneline`` as the slurm_powersave provider reads it (lines from the
lab's Slurm 22.05), and its options. Its behaviour against real Slurm: tests/slurm."""

from __future__ import annotations

import time

import pytest

from bridgehead.domain.pools import InvalidPool, pool_from_dict
from bridgehead.pools.providers import make
from bridgehead.pools.providers.slurm_powersave import parse_nodes

POWERED_DOWN = (
    "NodeName=d1 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=13.07 "
    "AvailableFeatures=(null) NodeAddr=127.0.0.1 NodeHostName=localhost Port=6841 "
    "Version=22.05.8 OS=Linux 6.18.44-fc-v1294 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=1000 "
    "State=IDLE+CLOUD+POWERED_DOWN ThreadsPerCore=1 Weight=1 Partitions=elastic  "
    "BootTime=2026-12-05T11:32:23 CfgTRES=cpu=2,mem=1000M,billing=2 AllocTRES=")
BOOTING = ("NodeName=d2 CPUAlloc=1 State=MIXED+CLOUD+POWERING_UP Weight=2 "
           "Partitions=elastic,other Comment=elastic-f2c5cae053 Reason=(null)")
FAILED = ("NodeName=d3 CPUAlloc=0 State=DOWN+CLOUD+POWERED_DOWN Weight=3 Partitions=elastic "
          "Comment=elastic-1 Reason=bridgehead: not resumed by ResumeTimeout "
          "[root@2026-12-05T10:54:52]")


def test_nodes_are_read_with_values_that_hold_spaces() -> None:
    d1, d2, d3 = parse_nodes("\n".join((POWERED_DOWN, BOOTING, FAILED)))
    assert (d1.name, d1.base, d1.flags, d1.comment, d1.partitions, d1.weight) == (
        "d1", "IDLE", frozenset({"CLOUD", "POWERED_DOWN"}), None, frozenset({"elastic"}), 1)
    assert d1.powered_down and not d1.down and not d1.ready and d1.jobs == 0
    assert (d2.comment, d2.jobs, d2.ready, d2.powered_down) == ("elastic-f2c5cae053", 1,
                                                                False, False)
    assert d2.partitions == {"elastic", "other"}
    assert d3.down and d3.powered_down and d3.comment == "elastic-1"
    assert d3.reason.startswith("bridgehead: not resumed")
    assert d3.down_since() == time.mktime(time.strptime("2026-12-05T10:54:52",
                                                        "%Y-%m-%dT%H:%M:%S"))
    [up] = parse_nodes("NodeName=d1 CPUAlloc=0 State=IDLE+CLOUD Weight=1 Partitions=elastic")
    assert up.ready and not up.powered_down


def test_a_reason_not_ours_is_never_taken_for_a_failed_boot() -> None:
    [node] = parse_nodes("NodeName=d1 State=DOWN+CLOUD+POWERED_DOWN Partitions=elastic "
                         "Reason=admin says no [root@2026-12-05T10:54:52]")
    assert node.down_since() is None  # an admin's DOWN stays down
    [evicted] = parse_nodes("NodeName=d1 State=DOWN+CLOUD+POWERED_DOWN Partitions=elastic "
                            "Reason=POWER_DOWN_ASAP [root@2026-12-05T11:40:35]")
    assert evicted.down_since() is not None  # a terminated evicted node: offered again


@pytest.mark.parametrize(("options", "field"), [
    ({}, "partition"), ({"partition": "a b"}, "partition"),
    ({"partition": "elastic", "nodes": "d[1-3"}, "nodes"),
    ({"partition": "elastic", "down_cooloff_s": -1}, "down_cooloff_s"),
    ({"partition": "elastic", "colour": "red"}, "colour")])
def test_bad_options_are_refused_naming_the_option(options: dict[str, object],
                                                   field: str) -> None:
    pool = pool_from_dict({"name": "p", "cluster": "c", "provider": "slurm_powersave",
                           "shape": {"cpus": 1, "memory_mb": 100}, "options": options})
    with pytest.raises(InvalidPool) as caught:
        make(pool)
    assert caught.value.loc[-2:] == ("options", field), caught.value
