"""A user's own #SBATCH script through a real server and agent on the real alpha cluster
(Slurm 22.05, sbatch): it runs with exactly the resources, name and log path its directives
ask (Slurm's own accounting says so), explicit submit values win, caps clamp directives, a
refused directive names its line, and the script gets its arguments. A log path naming the
node (%N) is collected from the file Slurm wrote, on alpha (slurm_cli) and beta (slurm_rest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from tests.procs import Stack, eventually, stack
from tests.slurm.conftest import Lab
from tests.slurm.test_agent_e2e import start_slurm_agent

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPORT = 'echo "cpus=$SLURM_CPUS_PER_TASK tasks=$SLURM_NTASKS name=$SLURM_JOB_NAME"\n' \
         'printf "%s|" "$@"; echo\n'


@pytest.fixture
def alpha(tmp_path: Path, lab: Lab) -> Iterator[tuple[Stack, Client, Path]]:
    logs = tmp_path / "userlogs"
    logs.mkdir()
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        start_slurm_agent(s, lab, "alpha")
        yield s, bh, logs


def script(logs: Path) -> str:
    return ("#!/bin/sh\n# a user's script, unchanged\n"
            f"#SBATCH --cpus-per-task=2 --job-name=dir-name   # two threads\n"
            f"#SBATCH -o {logs}/out-%x-%j.txt\n#SBATCH -t 0-0:05 --mem=300M\n"
            "#SBATCH --qos=normal\n" + REPORT)


def accounted(lab: Lab, native_id: str, tag: str) -> dict[str, str]:
    """sacct's record of the job (tagged with its Bridgehead id: the lab reuses job ids)."""
    fields = "AllocCPUS,JobName,Timelimit,ReqMem,Comment"

    def row() -> dict[str, str] | None:
        out = lab.run("alpha", "sacct", "-X", "-n", "-P", "-j", native_id, f"--format={fields}",
                      "--starttime=now-1days")
        rows = [dict(zip(fields.split(","), line.split("|"), strict=True))
                for line in out.splitlines() if line.count("|") == 4]
        # slurmdbd may first hold a partial record of the job (seen in CI: JobName
        # 'allocation', no time limit, ReqMem '16?'): wait for the complete one.
        return next((r for r in rows if r["Comment"] == tag and r["Timelimit"]
                     and r["JobName"] != "allocation"), None)
    return eventually(row, 60, what="sacct to list the job's complete record")


def test_directives_give_resources_name_and_log_path(alpha: tuple[Stack, Client, Path],
                                                     lab: Lab) -> None:
    _, bh, logs = alpha
    job = bh.submit(JobSpec(cluster="alpha", script=script(logs), args=("a", "b c")))
    done = bh.wait(job.id, until="terminal", timeout=120)
    assert done.state is JobState.SUCCEEDED, done
    assert done.spec.name == "dir-name" and done.spec.resources.cores == 2
    row = accounted(lab, done.native_id or "", done.id)
    assert (row["AllocCPUS"], row["JobName"], row["Timelimit"], row["ReqMem"]) == (
        "2", "dir-name", "00:05:00", "300M")
    user_log = logs / f"out-dir-name-{done.native_id}.txt"
    expected = "cpus=2 tasks=1 name=dir-name\na|b c|\n"
    assert user_log.read_text() == expected  # where the user asked
    assert eventually(lambda: bh.read_logs(job.id)[0].decode() == expected, 30,
                      what="the log shipped from the user's path")


def test_explicit_values_win_and_caps_clamp(alpha: tuple[Stack, Client, Path],
                                            lab: Lab) -> None:
    _, bh, logs = alpha
    mine = bh.submit(JobSpec(cluster="alpha", script=script(logs), name="mine",
                             resources=Resources(walltime_s=120)))
    capped = bh.submit(JobSpec(cluster="alpha", script=script(logs),
                               resources=Resources(max_cores=1)))
    mine, capped = (bh.wait(j.id, until="terminal", timeout=120) for j in (mine, capped))
    assert (mine.state, capped.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
    row = accounted(lab, mine.native_id or "", mine.id)
    assert (row["AllocCPUS"], row["JobName"], row["Timelimit"]) == ("2", "mine", "00:02:00")
    assert (logs / f"out-mine-{mine.native_id}.txt").read_text().startswith(
        "cpus=2 tasks=1 name=mine\n")  # %x is the name the job got
    row = accounted(lab, capped.native_id or "", capped.id)
    assert (row["AllocCPUS"], row["JobName"]) == ("1", "dir-name")
    assert capped.spec.resources.cores == 2 and capped.spec.resources.max_cores == 1
    assert bh.read_logs(capped.id)[0].decode().startswith("cpus=1 tasks=1 name=dir-name\n")


def test_a_refused_directive_names_its_line(alpha: tuple[Stack, Client, Path]) -> None:
    _, bh, _ = alpha
    with pytest.raises(Exception, match="script line 3: #SBATCH --comment=x: not allowed"):
        bh.submit(JobSpec(cluster="alpha",
                          script="#!/bin/sh\n#SBATCH -n 1\n#SBATCH --comment=x\ntrue\n"))


@pytest.mark.parametrize("cluster", ["alpha", "beta"])  # slurm_cli, slurm_rest
def test_a_log_path_naming_the_node_is_collected_from_where_slurm_wrote_it(
        cluster: str, tmp_path: Path, lab: Lab) -> None:
    """slurmstepd writes %N as its host's short name; the lab's nodes are named otherwise in
    slurm.conf (alpha's localhost, beta's beta1, both on this host)."""
    logs = tmp_path / "userlogs"
    logs.mkdir()
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        start_slurm_agent(s, lab, cluster)
        job = bh.submit(JobSpec(cluster=cluster, script=(
            f"#!/bin/sh\n#SBATCH -o {logs}/out-%N-%j.txt -e {logs}/err-%N-%j.txt\n"
            "echo to-out; echo to-err >&2\n")))
        done = bh.wait(job.id, until="terminal", timeout=120)
        assert done.state is JobState.SUCCEEDED, done
        [out] = logs.glob(f"out-*-{done.native_id}.txt")
        [err] = logs.glob(f"err-*-{done.native_id}.txt")
        assert (out.read_text(), err.read_text()) == ("to-out\n", "to-err\n")
        assert eventually(lambda: (bh.read_logs(job.id)[0], bh.read_logs(
            job.id, stream="stderr")[0]) == (b"to-out\n", b"to-err\n"), 30,
            what="both logs shipped from the node-named paths")
