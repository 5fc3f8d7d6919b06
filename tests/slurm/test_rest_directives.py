"""A user's #SBATCH script through slurm_rest on the real daemons, 22.05 (v0.0.38, alpha) and
24.11 (v0.0.40, v0.0.41, v0.0.42, gamma): slurmrestd itself ignores the script's directives,
so the backend sends each as a job field and Slurm applies it (``scontrol show job``); the
script's own -o/-e logs are collected; and a job found again by its tag after an agent crash
gets its -o/-e logs too (CLI and REST).

Evidence (2026-12-05, this lab): the same held script submitted through slurmrestd with the
directives left in the script only (the backend before this change) showed, on 22.05.8 and
on 24.11.5 with each of v0.0.40/41/42, ``Nice=0``, ``Requeue=1``, ``MinMemoryCPU=256M`` (the
lab's DefMemPerCPU), ``NtasksPerN:B:S:C=0:0:*:*``, ``OverSubscribe=OK``, no ``MailType`` and
no hold: none of ``--nice=7 --no-requeue --mem-per-cpu=300 --ntasks-per-node=1 --exclusive
--mail-type=END --hold`` was applied. Only -o (a job field already) was.
:func:`test_slurmrestd_itself_ignores_a_scripts_directives` keeps that fact checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends import slurm
from bridgehead.backends.slurm_rest import SlurmRestBackend
from bridgehead.backends.slurm_rest_api import submit_body
from bridgehead.client import Client
from bridgehead.domain import sbatch
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.errors import InvalidSpec
from tests.procs import Stack, eventually, stack
from tests.slurm.conftest import Lab, Target
from tests.slurm.test_agent_e2e import sacct_tagged, start_slurm_agent
from tests.slurm.test_backends import log_of, until
from tests.slurm.test_rest_versions import VERSIONS, rest_backend, token_file

pytestmark = pytest.mark.slurm


@pytest.fixture(params=VERSIONS, ids=lambda t: t.id)
async def rest(request: pytest.FixtureRequest, lab: Lab, tmp_path: Path
               ) -> AsyncIterator[tuple[SlurmRestBackend, str]]:
    target: Target = request.param
    b = rest_backend(lab, target, tmp_path)
    yield b, target.cluster
    await b.close()


def as_submitted(cluster: str, script: str) -> JobSpec:
    """The job the server makes of ``script`` (its directives taken in)."""
    spec = JobSpec(cluster=cluster, script=script)
    return sbatch.apply(spec, sbatch.given_by_default(spec))


def shown(lab: Lab, cluster: str, native_id: str) -> str:
    return lab.run(cluster, "scontrol", "show", "job", native_id)


def directives(node: str) -> str:
    return ("#!/bin/sh\n#SBATCH --mail-type=END --mail-user=someone@example.org\n"
            "#SBATCH --mem-per-cpu=300\n#SBATCH --ntasks-per-node=1\n#SBATCH --exclusive\n"
            f"#SBATCH --nice=7 --no-requeue\n#SBATCH --nodelist={node}\n#SBATCH --hold\n"
            "true\n")


async def test_slurm_applies_every_directive_of_the_script(
        rest: tuple[SlurmRestBackend, str], lab: Lab) -> None:
    backend, cluster = rest
    node = lab.cluster(cluster)["node"]
    native = await backend.submit("bh-rest-dirs", as_submitted(cluster, directives(node)))
    try:
        job = shown(lab, cluster, native)
    finally:
        await backend.cancel([native])
    for applied in ("Reason=JobHeldUser", "Nice=7", "Requeue=0", "NtasksPerN:B:S:C=1:",
                    "MinMemoryCPU=300M", "OverSubscribe=NO", "MailType=END",
                    "MailUser=someone@example.org", f"ReqNodeList={node}"):
        assert applied in job, (applied, job)


async def test_slurmrestd_itself_ignores_a_scripts_directives(
        rest: tuple[SlurmRestBackend, str], lab: Lab, tmp_path: Path) -> None:
    """Why the backend translates: the description alone, with the directives left in the
    script, gets none of them applied (a Slurm that read them would make this test fail, and
    the translation harmless). The description says --no-requeue (Bridgehead owns retries):
    the script's --requeue is not taken either."""
    backend, cluster = rest
    bare = slurm.build_request("bh-rest-ignored", JobSpec(cluster=cluster, script="#!/bin/sh\n"),
                               caps=slurm.Caps(), working_dir=str(backend.files.work),
                               stdout="/dev/null", stderr="/dev/null",
                               base_env={"PATH": "/usr/bin:/bin"})
    backend.files.work.mkdir(parents=True, exist_ok=True)
    api = await backend._version()
    body = submit_body(bare, api)  # the description of a script without directives
    (body if "script" in body else body["job"])["script"] = (
        "#!/bin/sh\n#SBATCH --nice=7 --hold\n#SBATCH --requeue --mem-per-cpu=300\ntrue\n")
    _, answer, _ = await backend._call("submit", "POST", api.path("submit"), json=body,
                                       repeat=False)
    native = str(answer["job_id"])
    try:
        job = shown(lab, cluster, native)
    finally:
        await backend.cancel([native])
    assert "Nice=0" in job and "Requeue=0" in job and "JobHeldUser" not in job, job
    assert "MinMemoryCPU=300M" not in job, job


@pytest.mark.parametrize("target", [VERSIONS[0], VERSIONS[2], VERSIONS[3]],
                         ids=lambda t: t.id)
async def test_the_scripts_own_o_and_e_logs_are_collected(target: Target, lab: Lab,
                                                          tmp_path: Path) -> None:
    backend = rest_backend(lab, target, tmp_path)
    script = ("#!/bin/sh\n#SBATCH -J mylogs\n#SBATCH -o out-%x-%j.txt\n#SBATCH -e err-%j.txt\n"
              "echo to-out\necho to-err >&2\n")
    try:
        native = await backend.submit("bh-rest-logs", as_submitted(target.cluster, script))
        status = await until(backend, native)
        assert status.state is JobState.SUCCEEDED, status
        work = backend.files.work / "bh-rest-logs"
        assert (work / f"out-mylogs-{native}.txt").read_text() == "to-out\n"  # the user's path
        assert await log_of(backend, native) == "to-out\n"
        assert await log_of(backend, native, "stderr") == "to-err\n"
    finally:
        await backend.close()


# -- a job found again by its tag after a crash ------------------------------------------------
@pytest.fixture
def bh_stack(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        yield s, bh


@pytest.mark.slow
@pytest.mark.parametrize("cluster, backend", [("alpha", "slurm_cli"), ("alpha", "slurm_rest"),
                                              ("gamma", "slurm_rest")])
def test_a_job_adopted_after_a_crash_gets_its_o_and_e_logs(
        bh_stack: tuple[Stack, Client], lab: Lab, tmp_path: Path, cluster: str,
        backend: str) -> None:
    """The agent dies right after the scheduler took the job; its -o/-e links are removed,
    as if it had died before making them. The next agent finds the job by its tag, and the
    job's logs still come from the user's files."""
    s, bh = bh_stack
    root = lab.job_root(cluster, tmp_path / "jobs")
    env: dict[str, Any] = {"BRIDGEHEAD_SLURM__JOB_ROOT": str(root)}
    if backend == "slurm_rest" and (token := token_file(lab, cluster, tmp_path)) is not None:
        env["BRIDGEHEAD_SLURM__REST_TOKEN_FILE"] = str(token)
    job = bh.submit(JobSpec(cluster=cluster, script=(
        "#!/bin/sh\n#SBATCH -o mine-%j.out\n#SBATCH -e mine-%j.err\n"
        "sleep 3\necho to-out\necho to-err >&2\n")))
    doomed = start_slurm_agent(s, lab, cluster, backend=backend, hook=False,
                               BRIDGEHEAD_FAILPOINT="after-backend-submit", **env)
    eventually(lambda: not doomed.alive, 60, what="the agent to kill itself after submit")
    [native] = eventually(lambda: sacct_tagged(lab, cluster, job.id), 30,
                          what="sacct to show the job")
    links = [root / "logs" / f"{native}.{ext}" for ext in ("out", "err")]
    assert all(link.is_symlink() for link in links)  # the submit made them
    for link in links:
        link.unlink()
    start_slurm_agent(s, lab, cluster, backend=backend, hook=False, **env)
    done = bh.wait(job.id, until="terminal", timeout=120)
    assert (done.state, done.native_id) == (JobState.SUCCEEDED, native), done
    assert all(link.is_symlink() for link in links)
    assert eventually(lambda: bh.read_logs(job.id)[0] == b"to-out\n", 30,
                      what="stdout shipped from the user's file")
    assert eventually(lambda: bh.read_logs(job.id, stream="stderr")[0] == b"to-err\n", 30,
                      what="stderr shipped from the user's file")


# -- refused at submit, from what the REST agent reports ---------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("cluster, begin", [("alpha", True), ("gamma", False)])
def test_the_server_refuses_a_directive_the_clusters_rest_version_cannot_honour(
        bh_stack: tuple[Stack, Client], lab: Lab, tmp_path: Path, cluster: str,
        begin: bool) -> None:
    """An idle REST agent learns its slurmrestd's version and says in its heartbeat what that
    version honours: a directive it cannot is a 400 naming the line, nothing stored. --begin
    is v0.0.38's (alpha) but no field of v0.0.40-42's (gamma)."""
    s, bh = bh_stack
    env: dict[str, Any] = {}
    if (token := token_file(lab, cluster, tmp_path)) is not None:
        env["BRIDGEHEAD_SLURM__REST_TOKEN_FILE"] = str(token)
    start_slurm_agent(s, lab, cluster, backend="slurm_rest", hook=False, **env)

    def honours() -> list[str] | None:
        info = [c.get("info") or {} for c in bh.clusters() if c["name"] == cluster]
        return (info[0].get("capacity") or {}).get("honours") if info else None
    assert "#SBATCH --mail-type" in eventually(honours, 60, what="the agent's capacity")
    refused = f"cluster {cluster!r} runs jobs with the slurm_rest backend, which cannot honour it"
    with pytest.raises(InvalidSpec) as caught:
        bh.submit(JobSpec(cluster=cluster, script="#!/bin/sh\n#SBATCH -n 1\n"
                                                  "#SBATCH --open-mode=append\ntrue\n"))
    assert caught.value.message == (
        f"400: script line 3: #SBATCH --open-mode=append: {refused}: leave it out, or submit to a "
        "cluster that can (slurm_cli: sbatch reads every directive)")
    later = JobSpec(cluster=cluster, script="#!/bin/sh\n#SBATCH --begin=now+1hour\ntrue\n")
    if begin:
        job = bh.submit(later)
        eventually(lambda: bh.get(job.id).native_id, 60, what="Slurm to take the job")
        bh.cancel(job.id)
    else:
        with pytest.raises(InvalidSpec, match=f"script line 2: #SBATCH --begin=now\\+1hour: "
                                              f"{refused}"):
            bh.submit(later)
    assert len(bh.list_jobs(cluster=cluster)[0]) == int(begin)
