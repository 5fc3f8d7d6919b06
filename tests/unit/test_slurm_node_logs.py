"""``%N`` in a script's ``-o``/``-e``: the node the batch script runs on, known only once the
job has started. Both Slurm backends link the log when their poll first shows the job's node
(slurm_cli: squeue's batch host, sacct's NodeList; slurm_rest: the record's ``batch_host`` or
``nodes``), so the agent reads it from the path sbatch wrote. Fake Slurm tools and a fake
slurmrestd stand in for the cluster; the lab's own run is tests/slurm/test_directives_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bridgehead.backends.slurm_cli import TOOLS, SlurmCliBackend, SlurmCliConfig
from bridgehead.backends.slurm_rest import SlurmRestBackend
from bridgehead.config import SlurmSettings
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.testing._http import JsonServer, Reply, Request

HEAD = "#!/bin/sh\n"


def spec(work: Path, directives: str) -> JobSpec:
    return JobSpec(cluster="alpha", script=f"{HEAD}{directives}echo hi\n",
                   working_dir=str(work))


class FakeTools:
    """sbatch answering the next id of ``ids``; squeue and sacct printing ``squeue``/``sacct``."""

    def __init__(self, root: Path, ids: list[int]) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        (root / "ids").write_text("".join(f"{i}\n" for i in ids))
        answers = {
            "sbatch": f"cat >/dev/null\nhead -n1 {root}/ids\nsed -i 1d {root}/ids\n",
            "squeue": f"cat {root}/squeue 2>/dev/null\n",
            "sacct": f"cat {root}/sacct 2>/dev/null\n", "scancel": ""}
        for tool in TOOLS:
            (self.bin / tool).write_text(f"#!/bin/sh\n{answers[tool]}")
            (self.bin / tool).chmod(0o755)
        self.root = root

    def show(self, squeue: str = "", sacct: str = "") -> None:
        (self.root / "squeue").write_text(squeue)
        (self.root / "sacct").write_text(sacct)

    def backend(self) -> SlurmCliBackend:
        return SlurmCliBackend(SlurmSettings(bin_dir=self.bin, job_root=self.root / "jobs"),
                               SlurmCliConfig(state_dir=self.root,
                                              allowed_roots=(self.root / "work",)))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


async def test_cli_links_a_node_named_log_once_squeue_shows_the_batch_host(
        tmp_path: Path, work: Path) -> None:
    tools = FakeTools(tmp_path, [42])
    backend = tools.backend()
    native = await backend.submit("j1", spec(work, "#SBATCH -o out-%N-%j.log\n"))
    tools.show(squeue="42|PENDING|n/a\n")
    assert (await backend.poll([native]))[native].state is JobState.SUBMITTED
    assert await backend.read_log(native, "stdout", 0, 100) == b""
    (work / "out-node01-42.log").write_text("hello\n")
    tools.show(squeue="42|RUNNING|node01\n")
    assert (await backend.poll([native]))[native].state is JobState.RUNNING
    assert await backend.read_log(native, "stdout", 0, 100) == b"hello\n"


SACCT_ENDED = ("43|COMPLETED|0:0|2|4|2|0|2026-12-05T10:00:00|node[03-04]\n"
               "43.batch|COMPLETED|0:0|2|2|1|1M|2026-12-05T10:00:00|node03\n"
               "44|CANCELLED by 0|0:0|0|0|0||None|None assigned\n")


async def test_cli_links_from_sacct_after_a_restart_and_drops_a_job_that_never_ran(
        tmp_path: Path, work: Path) -> None:
    tools = FakeTools(tmp_path, [43, 44])
    first = tools.backend()
    ended = await first.submit("j2", spec(work, "#SBATCH -o %x-%N.out\n#SBATCH -J run\n"
                                                f"#SBATCH --error={work}/%N.err\n"))
    never = await first.submit("j3", spec(work, "#SBATCH -o never-%N.out\n"))
    (work / "run-node03.out").write_text("out\n")
    (work / "node03.err").write_text("err\n")
    tools.show(sacct=SACCT_ENDED)
    again = tools.backend()  # a new agent: it finds what the first one left waiting
    statuses = await again.poll([ended, never])
    assert statuses[ended].state is JobState.SUCCEEDED
    assert statuses[never].state is JobState.CANCELLED
    assert await again.read_log(ended, "stdout", 0, 100) == b"out\n"
    assert await again.read_log(ended, "stderr", 0, 100) == b"err\n"
    assert sorted(p.name for p in (tmp_path / "jobs" / "logs").iterdir()) == [
        "43.err", "43.out"]  # nothing kept for the job that never had a node


async def test_cli_takes_the_hosts_own_name_once_a_job_ends_where_it_is_not_the_nodes(
        tmp_path: Path, work: Path) -> None:
    """slurmstepd writes %N as its host's short name: a node named otherwise in slurm.conf
    (NodeHostname, several slurmd on one host) leaves the file under the host's name."""
    tools = FakeTools(tmp_path, [46])
    backend = tools.backend()
    native = await backend.submit("j5", spec(work, "#SBATCH -o out-%N-%j.txt\n"))
    (work / "out-vm-46.txt").write_text("from vm\n")
    tools.show(squeue="46|RUNNING|node7\n")
    await backend.poll([native])
    assert await backend.read_log(native, "stdout", 0, 100) == b""  # node7's file: not yet
    tools.show(sacct="46|COMPLETED|0:0|1|1|1|0|2026-12-05T10:00:00|node7\n")
    assert (await backend.poll([native]))[native].state is JobState.SUCCEEDED
    assert await backend.read_log(native, "stdout", 0, 100) == b"from vm\n"


def rest_job(state: list[str], batch_host: str, nodes: str) -> dict[str, Any]:
    unset = {"set": False, "infinite": False, "number": 0}
    return {"job_id": 45, "job_state": state, "comment": "j4", "batch_host": batch_host,
            "nodes": nodes, "exit_code": {"status": ["SUCCESS"], "return_code": unset,
                                          "signal": {"id": unset, "name": ""}},
            "start_time": {"set": True, "infinite": False, "number": 1796445987},
            "cpus": {"set": True, "infinite": False, "number": 2}}


async def test_rest_reads_the_batch_host_of_a_running_job_once_for_its_log(
        tmp_path: Path, work: Path) -> None:
    record: dict[str, Any] = {"job": rest_job(["PENDING"], "", "")}
    asked: list[str] = []

    def slurmrestd(request: Request) -> Reply:
        asked.append(request.path)
        job = record["job"]
        if request.path == "/slurm/v0.0.40/job/submit":
            return Reply(status=200, body={"job_id": 45})
        if request.path == "/slurm/v0.0.40/jobs/state":
            return Reply(status=200, body={"jobs": [{"job_id": 45,
                                                     "state": job["job_state"]}]})
        if request.path == "/slurm/v0.0.40/job/45":
            return Reply(status=200, body={"jobs": [job]})
        return Reply(status=404, body={})

    server = JsonServer(slurmrestd).start()
    backend = SlurmRestBackend(SlurmSettings(
        rest_url=server.url, rest_version="v0.0.40", rest_token=SecretStr("t"),
        rest_user="alice", job_root=tmp_path / "jobs"), state_dir=tmp_path,
        allowed_roots=(work,))
    try:
        native = await backend.submit("j4", spec(work, "#SBATCH --output=%N.log\n"))
        assert (await backend.poll([native]))[native].state is JobState.SUBMITTED
        record["job"] = rest_job(["RUNNING"], "gamma2", "gamma[2-3]")
        assert (await backend.poll([native]))[native].state is JobState.RUNNING
        assert await backend.read_log(native, "stdout", 0, 100) == b""  # not opened yet
        (work / "gamma2.log").write_text("on gamma2\n")
        for _ in range(2):
            assert (await backend.poll([native]))[native].state is JobState.RUNNING
        assert await backend.read_log(native, "stdout", 0, 100) == b"on gamma2\n"
        assert asked.count("/slurm/v0.0.40/job/45") == 1  # once, to learn its node
    finally:
        await backend.close()
        server.stop()
