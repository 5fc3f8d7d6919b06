"""The clusters a pool makes carry what its settings say, as EMR (moto) recorded the RunJobFlow
the backend sent; a setting that cannot be honoured stops the backend at start, naming the
field (the request itself, field by field: tests/unit/test_emr_request.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridgehead.backends.emr import EmrBackend
from bridgehead.errors import ConfigError
from bridgehead.testing.emr_sim import EmrSimulator
from tests.emr.conftest import backend, settings
from tests.unit.test_emr_request import GROUPS


async def test_a_new_cluster_is_made_as_configured(sim: EmrSimulator, tmp_path: Path) -> None:
    emr = backend(sim, tmp_path, pool="conf", min_clusters=1, release_label="emr-7.2.0",
                  applications=["Spark", "Hadoop"], instance_groups=GROUPS,
                  step_concurrency=6, tags={"team": "ads"})
    await emr.poll([])  # min_clusters: the first cycle makes one
    assert sim.calls["RunJobFlow"] == 1
    client = sim.client()
    [summary] = (await asyncio.to_thread(client.list_clusters))["Clusters"]
    cluster = (await asyncio.to_thread(client.describe_cluster,
                                       ClusterId=summary["Id"]))["Cluster"]
    assert cluster["Name"] == "bh-conf-g1"
    assert cluster["ReleaseLabel"] == "emr-7.2.0"
    assert [a["Name"] for a in cluster["Applications"]] == ["Spark", "Hadoop"]
    assert cluster["StepConcurrencyLevel"] == 6
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]} == {
        "team": "ads", "bridgehead:pool": "conf", "bridgehead:generation": "1"}
    groups = (await asyncio.to_thread(client.list_instance_groups,
                                      ClusterId=summary["Id"]))["InstanceGroups"]
    seen = sorted((g["InstanceGroupType"], g["Market"], g["InstanceType"],
                   g["RequestedInstanceCount"]) for g in groups)
    assert seen == [("CORE", "ON_DEMAND", "r5.2xlarge", 3),
                    ("MASTER", "ON_DEMAND", "m5.xlarge", 1), ("TASK", "SPOT", "c5.4xlarge", 6)]
    assert [g.get("BidPrice") for g in groups if g["Market"] == "SPOT"] == ["0.25"]


def test_a_setting_that_cannot_be_honoured_stops_the_backend_at_start(
        sim: EmrSimulator, tmp_path: Path) -> None:
    given = settings(sim, idle_timeout_s=7200.0, auto_termination_s=3600)
    with pytest.raises(ConfigError, match=r"^emr idle_timeout_s \(7200\) is above "
                                          r"auto_termination_s \(3600\)"):
        EmrBackend(given, state_dir=tmp_path)
    assert sim.calls["RunJobFlow"] == 0
