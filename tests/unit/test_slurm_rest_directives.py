"""slurm_rest without a daemon: a script's #SBATCH directives become job fields through the
version's option table (slurmrestd does not read them itself: tests/slurm/test_rest_directives.py
shows it on 22.05 and 24.11), a value the request already carries is not sent twice, and one
no field can carry is refused naming its line."""

from __future__ import annotations

from typing import Any

import pytest

from bridgehead.backends import slurm
from bridgehead.backends import slurm_rest_api as api
from bridgehead.backends.slurm_rest_options import number
from bridgehead.domain import sbatch
from bridgehead.domain.jobs import JobSpec, Resources
from bridgehead.errors import SubmitRejected

V38, V40, V42 = (api.VERSIONS[v] for v in ("v0.0.38", "v0.0.40", "v0.0.42"))


def body(script: str, version: api.ApiVersion, **kw: Any) -> dict[str, Any]:
    """The submit body of ``script`` as the server makes the job (directives applied)."""
    spec = JobSpec(cluster="c", script="#!/bin/sh\n" + script + "true\n", **kw)
    spec = sbatch.apply(spec, sbatch.given_by_default(spec))
    request = slurm.build_request("job1", spec, caps=slurm.Caps(), working_dir="/w",
                                  stdout="/l/%j.out", stderr="/l/%j.err",
                                  base_env={"PATH": "/bin"})
    job: dict[str, Any] = api.submit_body(request, version)["job"]
    return job


SCRIPT = ("#SBATCH --mail-type=END --mail-user=me@example.org\n#SBATCH --mem-per-cpu=300\n"
          "#SBATCH --ntasks-per-node=1 --qos=normal\n#SBATCH --exclusive\n#SBATCH --nice=7\n"
          "#SBATCH --hold\n#SBATCH --no-requeue\n#SBATCH -w node1\n")


def test_v38_takes_the_directives_as_sbatch_text() -> None:
    job = body(SCRIPT, V38)
    assert {k: job[k] for k in ("mail_type", "mail_user", "memory_per_cpu", "tasks_per_node",
                                "qos", "exclusive", "nice", "hold", "no_requeue",
                                "nodelist")} == {
        "mail_type": "END", "mail_user": "me@example.org", "memory_per_cpu": "300",
        "tasks_per_node": "1", "qos": "normal", "exclusive": "exclusive", "nice": "7",
        "hold": True, "no_requeue": True, "nodelist": "node1"}


def test_v40_on_take_them_typed() -> None:
    job = body(SCRIPT, V40)
    assert (job["mail_type"], job["memory_per_cpu"], job["tasks_per_node"], job["nice"],
            job["exclusive"], job["requeue"], job["required_nodes"]) == (
        ["END"], number(300), 1, 7, ["true"], False, ["node1"])
    assert body(SCRIPT, V42)["shared"] == ["none"]  # v0.0.42's --exclusive


def test_directives_the_request_carries_are_sent_once_beside_the_others() -> None:
    job = body("#SBATCH -n 2 -c 2 -N 1 --mem=1G -t 10 -p debug -A lab -J named\n"
               "#SBATCH -o out-%j.txt -q normal\n", V40)
    assert job["qos"] == "normal"
    assert (job["tasks"], job["cpus_per_task"], job["nodes"], job["memory_per_node"],
            job["time_limit"], job["partition"], job["account"], job["name"],
            job["standard_output"]) == (2, 2, "1", number(1024), number(10), "debug", "lab",
                                        "named", "out-%j.txt")


def test_a_submit_value_beats_a_directive_it_was_not_read_from() -> None:
    # a partition list is no request of Bridgehead's: the directive's words go, unless the
    # submit names one (then the submit wins, as sbatch's command line does)
    assert body("#SBATCH -p short,long\n", V38)["partition"] == "short,long"
    assert body("#SBATCH -p short,long\n", V38,
                resources=Resources(partition="debug"))["partition"] == "debug"


def test_a_typed_gpu_count_stands_as_the_script_wrote_it() -> None:
    v38 = body("#SBATCH --gpus=a100:2\n", V38)
    assert v38["gpus"] == "a100:2"
    v40 = body("#SBATCH --gres=gpu:2\n", V40)
    assert v40["tres_per_node"] == "gres/gpu:2" and "tres_per_job" not in v40
    assert body("#SBATCH --gpus=2\n", V40)["tres_per_job"] == "gres/gpu:2"


def test_flags_of_directives_and_pass_through_options_add_up() -> None:
    job = body("#SBATCH --spread-job\n", V42, scheduler_options=("--kill-on-invalid-dep=yes",))
    assert job["flags"] == ["SPREAD_JOB", "KILL_INVALID_DEPENDENCY"]


@pytest.mark.parametrize("script, version, message", [
    ("#SBATCH -n 1\n#SBATCH --open-mode=append\n", V38,
     "script line 3: #SBATCH --open-mode=append: the slurm_rest backend cannot honour it "
     "(slurmrestd v0.0.38 does not read a script's #SBATCH lines"),
    ("#SBATCH --begin=now+1hour\n", V42, "script line 2: #SBATCH --begin=now+1hour: the "
                                         "slurm_rest backend cannot honour it"),
    ("#SBATCH --mem=0\n", V40, "script line 2: #SBATCH --mem=0: the slurm_rest backend"),
    ("#SBATCH -t UNLIMITED\n", V38, "script line 2: #SBATCH -t UNLIMITED: the slurm_rest"),
    ("#SBATCH --mem-per-cpu=lots\n", V40, "script line 2: #SBATCH --mem-per-cpu=lots: "
                                          "expected a size"),
    ("#SBATCH --hold=yes\n", V40, "script line 2: #SBATCH --hold=yes: --hold takes no value"),
])
def test_a_directive_no_field_can_carry_is_refused_naming_its_line(
        script: str, version: api.ApiVersion, message: str) -> None:
    with pytest.raises(SubmitRejected) as caught:
        body(script, version)
    assert caught.value.message.startswith(message)
