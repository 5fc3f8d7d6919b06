"""Spark applications through the HTTP API (SQLite and PostgreSQL): ``spark`` accepted and
shown, its sizes made the job's resources, ``max_cores`` clamping executors, bad input
refused naming the field, and a cluster whose agents do not run Spark refusing it."""

from __future__ import annotations

from typing import Any

from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.spark import SparkApp

# ruff: noqa: F811  (the api fixture is imported, then named by the tests)
from tests.integration.test_api import Api, api  # noqa: F401

SPARK_CAPACITY = {"capacity": {"cores": 64, "backend": "spark_standalone",
                               "honours": ["spark", "spark-only", "resources.memory_mb"]}}


async def heartbeat(api: Api, backend: str, info: dict[str, Any] | None = None) -> None:
    r = await api.http.post("/v1/agent/heartbeat", headers=api.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "backend": backend, "info": info or {}})
    assert r.status_code in (200, 204), r.text


def spark_job(**spark: Any) -> dict[str, Any]:
    return {"cluster": "c1", "spark": {"application": "/apps/pi.py", **spark}}


async def submit(api: Api, body: dict[str, Any]) -> Any:
    return await api.http.post("/v1/jobs", headers=api.client, json=body)


async def test_a_spark_job_is_accepted_and_shown_with_derived_resources(api: Api) -> None:
    await heartbeat(api, "spark_standalone", SPARK_CAPACITY)
    r = await submit(api, spark_job(
        arguments=["--n", "$(rm -rf /)"], conf={"spark.sql.shuffle.partitions": "8"},
        executors=4, executor_cores=2, driver_cores=1, executor_memory_mb=2048,
        driver_memory_mb=512, py_files=["/apps/lib.zip"]))
    assert r.status_code == 201, r.text
    spec = r.json()["job"]["spec"]
    assert spec["command"] == [] and spec["script"] is None
    assert spec["spark"]["arguments"] == ["--n", "$(rm -rf /)"]
    assert spec["spark"]["conf"] == {"spark.sql.shuffle.partitions": "8"}
    assert spec["spark"]["py_files"] == ["/apps/lib.zip"]
    assert spec["resources"]["cores"] == 1 + 4 * 2
    assert spec["resources"]["memory_mb"] == 512 + 4 * 2048
    got = (await api.http.get(f"/v1/jobs/{r.json()['job']['id']}", headers=api.client)).json()
    assert got["spec"]["spark"] == spec["spark"]


async def test_max_cores_clamps_the_executors(api: Api) -> None:
    await heartbeat(api, "spark_standalone", SPARK_CAPACITY)
    body = spark_job(executors=10, executor_cores=4, driver_cores=2)
    body["resources"] = {"max_cores": 15}
    r = await submit(api, body)
    assert r.status_code == 201, r.text
    spec = r.json()["job"]["spec"]
    assert spec["spark"]["executors"] == 3 and spec["resources"]["cores"] == 2 + 3 * 4
    body["resources"] = {"max_cores": 4}  # the driver and one executor do not fit
    r = await submit(api, body)
    assert r.status_code == 400 and "max_cores 4" in r.json()["detail"]


async def test_the_capacity_sees_the_whole_application(api: Api) -> None:
    await heartbeat(api, "spark_standalone", SPARK_CAPACITY)
    r = await submit(api, spark_job(executors=32, executor_cores=2))
    assert r.status_code == 400 and "asks for 65 cores" in r.json()["detail"]


async def test_resources_that_contradict_the_app_are_refused(api: Api) -> None:
    await heartbeat(api, "spark_standalone", SPARK_CAPACITY)
    for resources, named in (({"cores": 4}, "resources.cores (4)"),
                             ({"memory_mb": 100}, "resources.memory_mb (100)"),
                             ({"nodes": 2}, "resources.nodes")):
        r = await submit(api, {**spark_job(executors=2), "resources": resources})
        assert r.status_code == 400 and named in r.json()["detail"], r.text
    r = await submit(api, {**spark_job(executors=2), "resources": {"cores": 3}})
    assert r.status_code == 201, r.text  # the same as derived: a re-sent spec is fine


async def test_bad_spark_input_is_refused_naming_the_field(api: Api) -> None:
    await heartbeat(api, "spark_standalone", SPARK_CAPACITY)
    for spark, named in (
            ({"conf": {"foo": "1"}}, "spark.conf name 'foo' is not a spark.* setting"),
            ({"conf": {"spark.master": "local"}}, "spark.conf spark.master is Bridgehead's"),
            ({"application": "app.py"}, "spark.application 'app.py' must be an absolute"),
            ({"application": "/a/app.jar"}, "spark.main_class is required"),
            ({"application": "/a/app.txt"}, "must be a .py or .jar"),
            ({"executors": 0}, "executors"),
            ({"colour": "red"}, "colour")):
        r = await submit(api, spark_job(**spark))
        assert r.status_code in (400, 422) and named in r.text, (spark, r.text)
    r = await submit(api, {**spark_job(), "command": ["true"]})
    assert r.status_code == 400 and "exactly one of command" in r.text


async def test_a_cluster_that_does_not_run_spark_refuses_it(api: Api) -> None:
    for backend, info in (
            ("local", {"capacity": {"cores": 8, "backend": "local",
                                    "honours": ["resources.memory_mb"]}}),
            ("slurm_cli", {})):
        await heartbeat(api, backend, info)
        r = await submit(api, spark_job())
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert detail.startswith("spark:") and f"the {backend} backend" in detail
        assert (await submit(api, {"cluster": "c1", "command": ["true"]})).status_code == 201
    r = await submit(api, {**spark_job(), "cluster": "never-seen"})
    assert r.status_code == 201, r.text  # no agent yet: its agent decides


async def test_the_sdk_round_trips_a_spark_job(api: Api) -> None:
    await heartbeat(api, "spark_standalone", SPARK_CAPACITY)
    secret = api.client["Authorization"].removeprefix("Bearer ")
    app = SparkApp(application="s3://b/etl.jar", main_class="com.example.Etl",
                   arguments=("a b", "--x"), conf={"spark.eventLog.enabled": "true"},
                   executors=3, executor_cores=2, executor_memory_mb=1024, jars=("/l/x.jar",))
    async with AsyncClient("http://bh", secret, transport=api.http._transport) as bh:
        job = await bh.submit(JobSpec(cluster="c1", spark=app, idempotency_key="k1"))
        assert job.spec.spark == app and job.spec.resources.cores == 7
        assert job.spec.resources.memory_mb == 1024 + 3 * 1024
        again = await bh.submit(job.spec)  # the spec read back is the same request
        assert again.id == job.id


async def test_a_spark_only_cluster_refuses_commands_and_scripts(api: Api) -> None:
    await heartbeat(api, "spark_standalone", SPARK_CAPACITY)
    for body, given in (({"command": ["true"]}, "command"),
                        ({"script": "#!/bin/sh\ntrue\n"}, "script")):
        r = await submit(api, {"cluster": "c1", **body})
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith(
            f"{given}: cluster 'c1' runs jobs with the spark_standalone backend, which runs "
            "Spark applications only")
    assert (await api.http.get("/v1/jobs", headers=api.client)).json()["jobs"] == []
    assert (await submit(api, spark_job())).status_code == 201
