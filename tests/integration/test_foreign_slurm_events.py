"""Events of Slurm jobs Bridgehead did not submit are useful: the Slurm hook (``bridgehead
slurm-event --server``) posts a foreign job's end like any other, and a rule reacting to it
runs a job. A real server (its rule engine), a real local agent, the real hook."""

from __future__ import annotations

from pathlib import Path

from bridgehead.client import Client
from tests.integration.test_slurm_hook import EPILOG, hook, token_file
from tests.procs import eventually, make_token, stack

FOREIGN = {k: v for k, v in EPILOG.items() if k != "SLURM_JOB_COMMENT"}
"""slurmctld's epilog of a job a user submitted with sbatch: no Bridgehead tag in its comment."""
FOREIGN = {**FOREIGN, "SLURM_JOB_EXIT_CODE2": "0:0"}


def test_a_rule_runs_a_job_when_a_foreign_slurm_job_ends(tmp_path: Path) -> None:
    rule = {"name": "after-wrf",
            "match": {"type": "slurm.job.finished", "source": "slurm/alpha",
                      "data": {"name": "wrf", "exit_code": 0}},
            "actions": [{"submit_job": {"cluster": "local", "command": [
                "echo", "post-process {{ event.subject }} of {{ data.user }}"]}}]}
    with stack(tmp_path) as s, Client(s.server.url, s.admin) as bh:
        bh.put_rules([rule])
        secret = token_file(tmp_path, make_token(s.dsn, "agent", "alpha"))
        for _ in range(2):  # slurmctld may run its epilog again: one event, one job
            done = hook(FOREIGN, "--server", s.server.url, "--token-file", str(secret),
                        "--spool-dir", str(tmp_path / "spool"))
            assert (done.returncode, done.stderr) == (0, "")
        [event] = [e for e in bh.events(after=0, limit=1000)["events"]
                   if e["type"] == "slurm.job.finished"]
        assert "comment" not in event["data"]  # not a Bridgehead job
        [job] = eventually(lambda: [j for j in bh.list_jobs(labels={"rule": "after-wrf"})[0]
                                    if j.terminal], 60, what="the rule's job to end")
        assert job.state.value == "succeeded"
        assert bh.read_logs(job.id)[0] == b"post-process 4242 of ana\n"
        assert len(bh.list_jobs(labels={"rule": "after-wrf"})[0]) == 1
