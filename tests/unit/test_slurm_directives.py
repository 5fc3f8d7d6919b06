"""The agent's sbatch command line for a script with its own #SBATCH directives: Bridgehead
passes no option that the script already gives (sbatch's command line would beat it), and
passes one only where the job's request differs (explicit or capped), so that it wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridgehead.backends import slurm
from bridgehead.domain import sbatch
from bridgehead.domain.jobs import JobSpec, Resources
from bridgehead.errors import InvalidSpec, SubmitRejected

HEAD = "#!/bin/sh\n"


NO_CAPS = slurm.Caps()


def request(script: str, caps: slurm.Caps = NO_CAPS, given: tuple[str, ...] = (),
            **kw: object) -> slurm.SlurmRequest:
    spec = sbatch.apply(JobSpec(cluster="alpha", script=script, **kw),  # type: ignore[arg-type]
                        given)
    return slurm.build_request("job1", spec, caps=caps, working_dir="/w", stdout="/l/%j.out",
                               stderr="/l/%j.err", base_env={})


def flags(r: slurm.SlurmRequest) -> set[str]:
    return {o.partition("=")[0] for o in r.sbatch_options()}


def test_what_the_script_says_is_not_repeated() -> None:
    r = request(HEAD + "#SBATCH -n 2 -c 4 -N 1-2 --mem=1G -t 1:30 -p debug -A lab -G 1\n"
                "#SBATCH -J mine -o out-%j.txt\n")
    assert (r.ntasks, r.cpus_per_task, r.nodes, r.memory_mb, r.time_minutes, r.name) == (
        2, 4, "1-2", 1024, 2, "mine")  # the request itself is whole (slurmrestd reads it)
    assert flags(r) == {"--comment", "--chdir", "--export", "--no-requeue"}


def test_a_script_without_directives_gets_every_option() -> None:
    assert {"--ntasks", "--cpus-per-task", "--nodes", "--job-name", "--output",
            "--error"} <= flags(request(HEAD + "echo hi\n"))


def test_an_explicit_value_is_passed_and_wins() -> None:
    r = request(HEAD + "#SBATCH -c 8 -t 10 -J dir\n", given=("cores", "walltime_s", "name"),
                name="mine", resources=Resources(cores=4, walltime_s=120))
    opts = r.sbatch_options()
    assert {"--ntasks=1", "--cpus-per-task=4", "--time=2", "--job-name=mine"} <= set(opts)


@pytest.mark.parametrize(("directives", "caps", "expected"), [
    ("-c 8", slurm.Caps(max_cores=4), {"--ntasks=1", "--cpus-per-task=4"}),
    ("-n 6", slurm.Caps(max_cores=2), {"--ntasks=2", "--cpus-per-task=1"}),
    ("-N 4", slurm.Caps(max_nodes=2), {"--nodes=2"}),
])
def test_caps_clamp_directives_on_the_command_line(directives: str, caps: slurm.Caps,
                                                   expected: set[str]) -> None:
    assert expected <= set(request(f"{HEAD}#SBATCH {directives}\n", caps).sbatch_options())


def test_the_jobs_own_cap_clamps_a_directive() -> None:
    r = request(HEAD + "#SBATCH -c 8\n", resources=Resources(max_cores=2))
    assert {"--ntasks=1", "--cpus-per-task=2"} <= set(r.sbatch_options())


def test_output_without_error_takes_both_streams() -> None:
    r = request(HEAD + "#SBATCH -o run.log\n")
    assert "--error" not in flags(r) and r.stderr == r.stdout == "run.log"
    r = request(HEAD + "#SBATCH -e err.log\n")
    assert "--output=/l/%j.out" in r.sbatch_options() and "--error" not in flags(r)


def test_a_refused_directive_fails_the_submit_at_the_agent(tmp_path: Path) -> None:
    spec = JobSpec(cluster="alpha", script=HEAD + "#SBATCH --export=NONE\n")
    with pytest.raises(SubmitRejected, match="script line 2"):
        slurm.JobFiles(tmp_path, ()).request("job1", spec, caps=slurm.Caps(), base_env={})
    with pytest.raises(InvalidSpec):
        request(HEAD + "#SBATCH --export=NONE\n")


def test_logs_are_linked_to_the_users_paths(tmp_path: Path) -> None:
    files = slurm.JobFiles(tmp_path, ())
    spec = JobSpec(cluster="alpha", script=HEAD + "#SBATCH -J n -o %x-%j.out -e /e/%u.%j\n")
    r = files.request("job1", spec, caps=slurm.Caps(), base_env={})
    files.link_logs(r, "42")
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert os.readlink(tmp_path / "logs" / "42.out") == f"{r.working_dir}/n-42.out"
    assert os.readlink(tmp_path / "logs" / "42.err") == f"/e/{user}.42"


def test_args_are_the_scripts_arguments() -> None:
    r = request(HEAD + "echo $1\n", args=("a", "b c"))
    assert r.args == ("a", "b c") and r.argv == ()
