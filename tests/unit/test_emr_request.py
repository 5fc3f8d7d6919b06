"""The RunJobFlow request an ``emr`` pool sends for each of its clusters
(:func:`bridgehead.backends.emr_pool.run_job_flow_request`): exactly what the pool's settings
say, and a setting EMR could not honour as given refused at start, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from bridgehead.backends.emr_pool import check_settings, run_job_flow_request
from bridgehead.config import EmrSettings
from bridgehead.errors import ConfigError

GROUPS = [
    {"Name": "master", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
     "InstanceType": "m5.xlarge", "InstanceCount": 1},
    {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
     "InstanceType": "r5.2xlarge", "InstanceCount": 3},
    {"Name": "task-spot", "InstanceRole": "TASK", "Market": "SPOT", "BidPrice": "0.25",
     "InstanceType": "c5.4xlarge", "InstanceCount": 6},
]
FLEETS = [
    {"Name": "master", "InstanceFleetType": "MASTER", "TargetOnDemandCapacity": 1,
     "InstanceTypeConfigs": [{"InstanceType": "m5.xlarge"}]},
    {"Name": "core", "InstanceFleetType": "CORE", "TargetOnDemandCapacity": 2,
     "InstanceTypeConfigs": [{"InstanceType": "r5.2xlarge"}, {"InstanceType": "r6i.2xlarge"}]},
    {"Name": "task", "InstanceFleetType": "TASK", "TargetSpotCapacity": 8,
     "InstanceTypeConfigs": [{"InstanceType": "c5.4xlarge", "WeightedCapacity": 2},
                             {"InstanceType": "c6i.4xlarge", "WeightedCapacity": 2}],
     "LaunchSpecifications": {"SpotSpecification": {
         "TimeoutDurationMinutes": 10, "TimeoutAction": "SWITCH_TO_ON_DEMAND"}}},
]


def settings(**kw: Any) -> EmrSettings:
    return EmrSettings(**{"pool": "etl", **kw})


def test_the_request_carries_exactly_the_pools_settings_with_instance_groups() -> None:
    s = settings(release_label="emr-7.2.0", applications=["Spark", "Hadoop", "Livy"],
                 instance_groups=GROUPS, step_concurrency=12, auto_termination_s=1800,
                 idle_timeout_s=300, subnet_id="subnet-0abc", log_uri="s3://logs/emr/",
                 service_role="MyEmrRole", job_flow_role="MyEc2Role",
                 tags={"team": "ads", "cost-centre": "42"})
    assert run_job_flow_request(s, "etl", 7) == {
        "Name": "bh-etl-g7",
        "ReleaseLabel": "emr-7.2.0",
        "Applications": [{"Name": "Spark"}, {"Name": "Hadoop"}, {"Name": "Livy"}],
        "Instances": {"KeepJobFlowAliveWhenNoSteps": True, "TerminationProtected": False,
                      "InstanceGroups": GROUPS, "Ec2SubnetId": "subnet-0abc"},
        "StepConcurrencyLevel": 12,
        "AutoTerminationPolicy": {"IdleTimeout": 1800},
        "ServiceRole": "MyEmrRole", "JobFlowRole": "MyEc2Role", "VisibleToAllUsers": True,
        "LogUri": "s3://logs/emr/",
        "Tags": [{"Key": "team", "Value": "ads"}, {"Key": "cost-centre", "Value": "42"},
                 {"Key": "bridgehead:pool", "Value": "etl"},
                 {"Key": "bridgehead:generation", "Value": "7"}],
    }
    spot = run_job_flow_request(s, "etl", 7)["Instances"]["InstanceGroups"][2]
    assert (spot["InstanceRole"], spot["Market"], spot["BidPrice"]) == ("TASK", "SPOT", "0.25")


def test_instance_fleets_replace_the_groups_and_take_the_subnet_as_a_list() -> None:
    request = run_job_flow_request(settings(instance_fleets=FLEETS, subnet_id="subnet-0abc"),
                                   "etl", 1)
    assert request["Instances"] == {
        "KeepJobFlowAliveWhenNoSteps": True, "TerminationProtected": False,
        "InstanceFleets": FLEETS, "Ec2SubnetIds": ["subnet-0abc"]}
    assert "LogUri" not in request  # not configured: not sent


def test_the_defaults_are_the_documented_ones() -> None:
    request = run_job_flow_request(settings(), "etl", 1)
    assert request["ReleaseLabel"] == "emr-7.5.0"
    assert request["Applications"] == [{"Name": "Spark"}]
    assert request["StepConcurrencyLevel"] == 8
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    roles = [(g["InstanceRole"], g["Market"], g["InstanceCount"])
             for g in request["Instances"]["InstanceGroups"]]
    assert roles == [("MASTER", "ON_DEMAND", 1), ("CORE", "ON_DEMAND", 2)]


@pytest.mark.parametrize(("given", "field"), [
    ({"release_label": "7.5.0"}, "release_label"),
    ({"release_label": "emr-5.27.0", "step_concurrency": 4}, "step_concurrency"),
    ({"release_label": "emr-5.29.0", "step_concurrency": 1}, "release_label"),
    ({"release_label": "emr-6.0.0", "step_concurrency": 1}, "release_label"),
    ({"idle_timeout_s": 7200, "auto_termination_s": 3600}, "idle_timeout_s"),
    ({"instance_groups": GROUPS, "instance_fleets": FLEETS}, "instance_groups and "
                                                             "instance_fleets"),
    ({"instance_groups": GROUPS[1:]}, "instance_groups"),
    ({"instance_fleets": FLEETS[1:]}, "instance_fleets"),
    ({"tags": {"bridgehead:pool": "other"}}, "tags"),
])
def test_what_emr_cannot_honour_is_refused_naming_the_field(given: dict[str, Any],
                                                           field: str) -> None:
    """Never sent changed: a reserved tag would be overwritten, groups dropped for fleets, an
    idle timeout cut short by the backstop, a release EMR would refuse at every RunJobFlow."""
    s = settings(**given)
    with pytest.raises(ConfigError, match=rf"^emr {field}\b"):
        check_settings(s)
    with pytest.raises(ConfigError, match=rf"^emr {field}\b"):
        run_job_flow_request(s, "etl", 1)


def test_the_oldest_releases_that_can_carry_the_request_are_accepted() -> None:
    check_settings(settings(release_label="emr-5.30.0", step_concurrency=4))
    check_settings(settings(release_label="emr-6.1.0", step_concurrency=4))
