"""What the local backend cannot honour is refused, never dropped: a partition, an account,
GPUs, scheduler options, memory beyond the host's, and any #SBATCH directive other than
those that become its request (cores, one node, memory, time, name, working dir). At
submit, from the capacity its agent reports (HTTP 400 naming the field or the directive's
line, nothing stored); and by the backend itself for a job that reached it another way (a
workflow step's, a rule's: the job fails with that reason). Real stores and backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.domain.clusters import Capacity
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.store import JobFilter
from tests.integration.test_agent import setup  # noqa: F401 - the fixture
from tests.integration.test_api import Api, api  # noqa: F401 - the fixture

LOCAL = "cluster 'c1' runs jobs with the local backend, which cannot honour it"


@pytest.fixture
async def bh(api: Api, tmp_path: Path) -> Api:  # noqa: F811 - the fixture imported above
    backend = LocalBackend(LocalBackendSettings(state_dir=tmp_path / "local", slots=2))
    r = await api.http.post("/v1/agent/heartbeat", headers=api.agent_c1, json={
        "cluster": "c1", "agent_id": "a1", "backend": "local",
        "info": {"capacity": backend.capacity().to_info()}})
    assert r.status_code == 200, r.text
    return api


def script(*directives: str) -> str:
    return "#!/bin/sh\n" + "".join(f"#SBATCH {d}\n" for d in directives) + "echo hi\n"


@pytest.mark.parametrize(("body", "detail"), [
    ({"resources": {"partition": "gpu"}}, "resources.partition (gpu): "),
    ({"resources": {"account": "lab"}}, "resources.account (lab): "),
    ({"resources": {"gpus": 1}}, "resources.gpus (1): "),
    ({"scheduler_options": ["--qos=high"]}, "scheduler_options (--qos=high): "),
    ({"script": script("-c 2", "--partition=gpu")}, "script line 3: #SBATCH --partition=gpu: "),
    ({"script": script("-n 1 --qos low")}, "script line 2: #SBATCH --qos low: "),
    ({"script": script("-t 5", "-o out-%j.txt")}, "script line 3: #SBATCH -o out-%j.txt: "),
    ({"script": script("--gres=gpu:1")}, "script line 2: #SBATCH --gres=gpu:1: "),
])
async def test_what_local_cannot_honour_is_refused_naming_it(bh: Api, body: dict,
                                                             detail: str) -> None:
    job = {"cluster": "c1", **({} if "script" in body else {"command": ["true"]}), **body}
    r = await bh.http.post("/v1/jobs", headers=bh.client, json=job)
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == detail + LOCAL + \
        ": leave it out, or submit to a cluster that can (Slurm)"
    assert await bh.store.list_jobs(JobFilter()) == []


async def test_what_local_honours_is_taken_and_memory_beyond_the_hosts_refused(
        bh: Api) -> None:
    body = {"cluster": "c1", "script": script("-c 2 -N 1 --mem=100M -t 1:00", "-J x",
                                                "--chdir=/tmp"), "resources": {"walltime_s": 5}}
    r = await bh.http.post("/v1/jobs", headers=bh.client, json=body)
    assert r.status_code == 201, r.text
    res = r.json()["job"]["spec"]["resources"]
    assert (res["cores"], res["memory_mb"], res["walltime_s"]) == (2, 100, 5)
    r = await bh.http.post("/v1/jobs", headers=bh.client, json={
        "cluster": "c1", "command": ["true"], "resources": {"memory_mb": 1 << 40}})
    assert r.status_code == 400
    assert f"the job asks for {1 << 40} MB of memory but cluster 'c1' can run at most" \
        in r.json()["detail"]


async def test_the_backend_fails_a_job_that_reached_it_another_way(
        setup: tuple, tmp_path: Path) -> None:  # noqa: F811
    agent, store = setup  # a job stored without the API's check (as a workflow step's)
    [res] = await store.submit([JobSpec(cluster="local", script=script("-n 1", "--qos=low"))])
    [claimed] = await store.claim("local", agent.agent_id, limit=1, lease_s=60)
    agent._to_submit[claimed.id] = claimed
    await agent._submit_pending()
    await agent._flush_all()
    job = await store.get(res.job.id)
    assert job.state is JobState.FAILED
    assert job.reason is not None and job.reason.startswith(
        "script line 3: #SBATCH --qos=low: cluster 'local' runs jobs with the local backend")
    assert not (tmp_path / "agent" / "local" / "jobs" / res.job.id).exists()


def test_an_agent_that_reports_no_honours_is_not_checked(tmp_path: Path) -> None:
    local = LocalBackend(LocalBackendSettings(state_dir=tmp_path, slots=2)).capacity()
    assert Capacity.from_info({"capacity": local.to_info()}) == local
    older = Capacity.from_info({"capacity": {"cores": 2, "nodes": 1}})  # before honours
    assert older is not None and older.honours is None
    older.refuse_unfit(JobSpec(cluster="c", command=("true",),
                               resources=Resources(partition="gpu", gpus=2)))


async def test_a_run_whose_step_local_cannot_honour_is_refused_naming_it(bh: Api) -> None:
    flow = ("name: w\ndefaults: {cluster: c1}\nsteps:\n  - {id: a, command: [echo]}\n"
            "  - id: b\n    script: |\n      #!/bin/sh\n      #SBATCH --qos=low\n      echo\n")
    r = await bh.http.post("/v1/workflows/runs", headers=bh.client, json={"spec": flow})
    assert r.status_code == 400
    assert r.json()["detail"].startswith(f"step 'b': script line 2: #SBATCH --qos=low: {LOCAL}")
    flow = flow.replace("--qos=low", "-c 2").replace("{id: a,", "{id: a, resources: {gpus: 1},")
    r = await bh.http.post("/v1/workflows/runs", headers=bh.client, json={"spec": flow})
    assert r.status_code == 400 and r.json()["detail"].startswith("step 'a': resources.gpus")
    assert await bh.store.list_runs() == []
