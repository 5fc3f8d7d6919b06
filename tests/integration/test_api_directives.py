"""A script's #SBATCH directives at submit, through the HTTP API on real stores: they become
the job's request unless the body gives a value (explicit wins), the capacity check and caps
see them, a refused one is a 400 naming its line with nothing stored; args are kept."""

from __future__ import annotations

import pytest

from bridgehead.client.core import _spec_to_api
from bridgehead.domain.jobs import JobSpec, Resources
from bridgehead.store import JobFilter
from tests.integration.test_api import Api, api  # noqa: F401 - the fixture
from tests.integration.test_capacity import CAPACITY, heartbeat

SCRIPT = ("#!/bin/sh\n#SBATCH --job-name=from-script\n#SBATCH -n 2 -c 4 --mem=2G -t 0-1\n"
          "#SBATCH --qos=low   # stays in the script\necho \"$@\"\n")


@pytest.fixture
def bh(api: Api) -> Api:  # noqa: F811 - the fixture imported above
    return api


async def submit(bh: Api, **body: object) -> dict:
    r = await bh.http.post("/v1/jobs", headers=bh.client,
                           json={"cluster": "c2", "script": SCRIPT, **body})
    assert r.status_code == 201, r.text
    return r.json()["job"]


async def test_directives_become_the_request(bh: Api) -> None:
    job = await submit(bh, args=["a", "b c"])
    res = job["spec"]["resources"]
    assert (res["cores"], res["memory_mb"], res["walltime_s"]) == (8, 2048, 3600)
    assert job["name"] == "from-script" and job["spec"]["args"] == ["a", "b c"]
    assert job["spec"]["script"] == SCRIPT  # the script is kept as written


async def test_what_the_body_gives_wins(bh: Api) -> None:
    job = await submit(bh, name="mine", resources={"cores": 1, "walltime_s": 60})
    res = job["spec"]["resources"]
    assert (res["cores"], res["walltime_s"], res["memory_mb"]) == (1, 60, 2048)
    assert job["name"] == "mine"


async def test_the_sdk_sends_only_resources_it_was_given(bh: Api) -> None:
    spec = JobSpec(cluster="c2", script=SCRIPT, resources=Resources(walltime_s=120))
    r = await bh.http.post("/v1/jobs", headers=bh.client, json=_spec_to_api(spec))
    res = r.json()["job"]["spec"]["resources"]
    assert (res["cores"], res["walltime_s"]) == (8, 120)


async def test_caps_and_capacity_see_directives(bh: Api) -> None:
    await heartbeat(bh, CAPACITY)  # c1 runs at most 2 cores per job
    r = await bh.http.post("/v1/jobs", headers=bh.client,
                           json={"cluster": "c1", "script": SCRIPT})
    assert r.status_code == 400 and "asks for 8 cores" in r.json()["detail"]
    r = await bh.http.post("/v1/jobs", headers=bh.client, json={
        "cluster": "c1", "script": SCRIPT, "resources": {"max_cores": 2}})
    assert r.status_code == 201, r.text
    res = r.json()["job"]["spec"]["resources"]
    assert (res["cores"], res["max_cores"]) == (8, 2)  # the agent clamps 8 to 2


async def test_a_refused_directive_is_a_400_naming_its_line(bh: Api) -> None:
    script = "#!/bin/sh\n#SBATCH -n 2\n\n#SBATCH --comment=mine\nrun\n"
    r = await bh.http.post("/v1/jobs/batch", headers=bh.client, json={"jobs": [
        {"cluster": "c2", "command": ["true"]}, {"cluster": "c2", "script": script}]})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("script line 4: #SBATCH --comment=mine: not allowed")
    assert await bh.store.list_jobs(JobFilter()) == []


async def test_args_need_a_script(bh: Api) -> None:
    r = await bh.http.post("/v1/jobs", headers=bh.client,
                           json={"cluster": "c2", "command": ["echo"], "args": ["x"]})
    assert r.status_code == 400 and "args are a script's arguments" in r.json()["detail"]
