"""slurm_rest's v0.0.40/v0.0.41/v0.0.42 entries without a daemon: the job description, the
option table, negotiation, and how answers read (records are trimmed answers of Slurm 24.11.5,
v0.0.42), and the token taken from a file."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends import slurm
from bridgehead.backends import slurm_rest as rest
from bridgehead.backends import slurm_rest_api as api
from bridgehead.config import SlurmSettings
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.errors import BackendUnavailable, SubmitRejected

V40, V41, V42 = (api.VERSIONS[v] for v in ("v0.0.40", "v0.0.41", "v0.0.42"))


def wrapped(n: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": n}


UNSET = {"set": False, "infinite": False, "number": 0}


def exit_object(status: str, code: int | None = None, signum: int | None = None
                ) -> dict[str, Any]:
    return {"status": [status], "return_code": UNSET if code is None else wrapped(code),
            "signal": {"id": UNSET if signum is None else wrapped(signum), "name": ""}}


def live(job_id: int, state: list[str], exit_code: dict[str, Any], nodes: str = "gamma1",
         cpus: int = 1) -> dict[str, Any]:
    return {"job_id": job_id, "job_state": state, "exit_code": exit_code,
            "comment": f"t-{job_id}", "nodes": nodes, "start_time": wrapped(1796445987),
            "end_time": wrapped(1796445989), "cpus": wrapped(cpus), "node_count": wrapped(1),
            "submit_time": wrapped(1796445986)}


def accounted(job_id: int, state: str, exit_code: dict[str, Any],
              steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job_id": job_id, "state": {"current": [state], "reason": "None"},
            "exit_code": exit_code, "comment": {"administrator": "", "job": f"t-{job_id}",
                                                "system": ""},
            "time": {"elapsed": 2, "submission": 1796445986, "start": 1796445987,
                     "end": 1796445989},
            "tres": {"allocated": [{"type": "cpu", "count": 1}, {"type": "energy", "count": -2},
                                   {"type": "node", "count": 1}] if steps else []},
            "steps": steps}


def batch_step(job_id: int, exit_code: dict[str, Any], rss: int = 3358720) -> dict[str, Any]:
    return {"step": {"id": f"{job_id}.batch", "name": "batch"}, "exit_code": exit_code,
            "state": ["CANCELLED"], "tres": {"requested": {"max": [
                {"type": "cpu", "count": 0}, {"type": "mem", "count": rss}]}}}


def request(**kw: Any) -> slurm.SlurmRequest:
    spec = JobSpec(**{"cluster": "gamma", "command": ("true",), **kw})
    return slurm.build_request("job1", spec, caps=slurm.Caps(), working_dir="/w",
                               stdout="/l/%j.out", stderr="/l/%j.err", base_env={"PATH": "/bin"})


def test_the_job_description_is_typed_with_the_script_inside() -> None:
    body = api.submit_body(request(
        name="hello", env={"X": "a b"}, command=(), script="#!/bin/sh\ntrue\n",
        resources=Resources(cores=4, nodes=2, memory_mb=512, gpus=1, walltime_s=61,
                            partition="debug", account="proj")), V42)
    assert body == {"job": {
        "script": "#!/bin/sh\ntrue\n", "name": "hello", "comment": "job1",
        "current_working_directory": "/w", "standard_output": "/l/%j.out",
        "standard_error": "/l/%j.err",
        "environment": ["PATH=/bin", "X=a b", "BRIDGEHEAD_JOB_ID=job1"],
        "tasks": 4, "cpus_per_task": 1, "nodes": "2", "memory_per_node": wrapped(512),
        "time_limit": wrapped(2), "partition": "debug", "account": "proj",
        "tres_per_job": "gres/gpu:1", "requeue": False}}


def test_a_command_and_script_arguments_go_in_argv_behind_a_dropped_element_0(
        tmp_path: Path) -> None:
    canary = tmp_path / "PWNED"
    hostile = f"a;b|c && touch {canary} $(touch {canary}) 'q\" \\n\nline2"
    body = api.submit_body(request(command=("printf", "%s|", hostile, "")), V40)
    job = body["job"]
    assert job["argv"] == ["bridgehead", "printf", "%s|", hostile, ""]
    assert hostile not in job["script"] and "BRIDGEHEAD_ARGC=" not in str(job["environment"])
    script = tmp_path / "script"
    script.write_text(job["script"])  # slurmd runs it with argv[1:] (element 0 is dropped)
    out = subprocess.run(["/bin/sh", str(script), *job["argv"][1:]], capture_output=True,
                         text=True, check=True)
    assert out.stdout == f"{hostile}||" and not canary.exists()
    with_args = slurm.SlurmRequest(**{**_fields(request(command=(), script="#!/bin/sh\n")),
                                      "args": ("a", "b c")})
    assert api.submit_body(with_args, V42)["job"]["argv"] == ["bridgehead", "a", "b c"]
    refused = re.escape("script arguments cannot pass through slurmrestd v0.0.38")
    with pytest.raises(SubmitRejected, match=refused):
        api.submit_body(with_args, api.VERSIONS["v0.0.38"])


def _fields(r: slurm.SlurmRequest) -> dict[str, Any]:
    return {name: getattr(r, name) for name in r.__dataclass_fields__}


@pytest.mark.parametrize("version, option, fields", [
    (V40, "--exclusive", {"exclusive": ["true"]}),
    (V41, "--exclusive=user", {"exclusive": ["user"]}),
    (V42, "--exclusive", {"shared": ["none"]}),  # v0.0.42 ignores `exclusive`
    (V42, "--exclusive=user", {"shared": ["user"]}),
    (V42, "--nice", {"nice": 100}),
    (V42, "--nice=-5", {"nice": -5}),
    (V42, "--mem-per-cpu=2G", {"memory_per_cpu": wrapped(2048)}),
    (V42, "--mem-per-cpu=100", {"memory_per_cpu": wrapped(100)}),
    (V42, "--tmp=1536K", {"temporary_disk_per_node": 2}),
    (V42, "--time-min=1-02:03", {"time_minimum": wrapped(26 * 60 + 3)}),
    (V42, "--time-min=90:30", {"time_minimum": wrapped(91)}),
    (V42, "--time-min=1:00:01", {"time_minimum": wrapped(61)}),
    (V42, "--priority=7", {"priority": wrapped(7)}),
    (V42, "--mail-type=end,FAIL,TIME_LIMIT_90", {"mail_type": ["END", "FAIL", "TIME=90%"]}),
    (V42, "--nodelist=n[1-3],m1", {"required_nodes": ["n[1-3],m1"]}),
    (V42, "--exclude=n2", {"excluded_nodes": ["n2"]}),
    (V42, "--gres=gpu:2,tmpfs:1", {"tres_per_node": "gres/gpu:2,gres/tmpfs:1"}),
    (V42, "--no-requeue", {"requeue": False}),
    (V42, "--hold", {"hold": True}),
    (V42, "--ntasks-per-node=2", {"tasks_per_node": 2}),
])
def test_options_become_typed_fields(version: api.ApiVersion, option: str,
                                     fields: dict[str, Any]) -> None:
    assert api.option_fields([option], version) == fields


def test_flag_options_add_up() -> None:
    fields = api.option_fields(["--spread-job", "--kill-on-invalid-dep=yes"], V42)
    assert fields == {"flags": ["SPREAD_JOB", "KILL_INVALID_DEPENDENCY"]}


@pytest.mark.parametrize("option, message", [
    ("--mem-per-cpu=lots", "'--mem-per-cpu=lots': expected a size"),
    ("--time-min=soon", "'--time-min=soon': expected minutes"),
    ("--nice=x", "'--nice=x'"),
    ("--kill-on-invalid-dep=maybe", "expected yes or no"),
    ("--begin=now+1hour", "--begin is not supported through slurmrestd v0.0.42"),
])
def test_values_the_table_cannot_type_are_refused(option: str, message: str) -> None:
    with pytest.raises(SubmitRejected, match=re.escape(message)):
        api.submit_body(request(scheduler_options=(option,)), V42)


SLURM_PATHS: list[tuple[str, dict[str, Any]]] = [
    ("job/submit", {"post": {}}), ("jobs/", {"get": {}, "delete": {}}),
    ("jobs/state/", {"get": {}}), ("job/{job_id}", {"get": {}, "delete": {}})]
SERVED_2411 = {  # /openapi/v3 of 24.11.5 (an excerpt): list paths end in '/'
    f"/slurm/{v}/{p}": methods for v in ("v0.0.40", "v0.0.41", "v0.0.42")
    for p, methods in SLURM_PATHS
} | {f"/slurmdb/{v}/jobs/": {"get": {}} for v in ("v0.0.40", "v0.0.41", "v0.0.42")}


def test_negotiation_takes_the_newest_and_what_it_serves() -> None:
    chosen = api.choose_version(SERVED_2411)
    assert (chosen.name, chosen.state_poll, chosen.batch_cancel, chosen.argv) == (
        "v0.0.42", True, True, True)
    assert api.choose_version(SERVED_2411, "v0.0.40").name == "v0.0.40"
    older = {p: m for p, m in SERVED_2411.items() if "state" not in p} | {
        "/slurm/v0.0.42/jobs/": {"get": {}}}
    chosen = api.choose_version(older)
    assert (chosen.state_poll, chosen.batch_cancel) == (False, False)
    with pytest.raises(BackendUnavailable, match=re.escape("was told to speak v0.0.38")):
        api.choose_version(SERVED_2411, "v0.0.38")


@pytest.mark.parametrize("record, state, exit_code, reason, cores", [
    (live(1, ["COMPLETED"], exit_object("SUCCESS", 0), cpus=2), JobState.SUCCEEDED, 0, None, 2),
    (live(2, ["FAILED"], exit_object("ERROR", 3)), JobState.FAILED, 3, "exit code 3", 1),
    (live(3, ["FAILED"], exit_object("SIGNALED", signum=9)), JobState.FAILED, 137,
     "killed by signal 9", 1),
    (live(4, ["CANCELLED"], exit_object("SIGNALED", signum=15)), JobState.CANCELLED, 143,
     "cancelled", 1),
    (live(5, ["TIMEOUT"], exit_object("SIGNALED", signum=15)), JobState.TIMED_OUT, 143,
     "walltime exceeded", 1),
    (live(6, ["CANCELLED"], exit_object("SUCCESS", 0), nodes=""), JobState.CANCELLED, None,
     "cancelled", 0),  # held, then cancelled: it never ran
])
def test_slurmctld_records_read_state_exit_and_usage(record: dict[str, Any], state: JobState,
                                                     exit_code: int | None, reason: str | None,
                                                     cores: int) -> None:
    status = api.status_of(V42.live(record))
    assert (status.state, status.exit_code, status.reason) == (state, exit_code, reason)
    assert status.usage is not None and status.usage.cores == cores
    assert V42.live(record).comment == f"t-{record['job_id']}"


@pytest.mark.parametrize("flags, state, settling", [
    (["PENDING"], JobState.SUBMITTED, False),
    (["RUNNING", "CONFIGURING"], JobState.RUNNING, True),
    (["CANCELLED", "COMPLETING"], JobState.RUNNING, True),  # squeue shows COMPLETING
    (["PENDING", "REQUEUED"], JobState.SUBMITTED, False),
    (["PENDING", "POWER_UP_NODE"], JobState.SUBMITTED, False),
])
def test_state_lists_read_as_squeue_shows_them(flags: list[str], state: JobState,
                                               settling: bool) -> None:
    status = api.status_of(api.JobRecord(native_id="1", state=api.state_name(flags)))
    assert (status.state, status.settling) == (state, settling)


def test_accounting_takes_a_cancelled_jobs_exit_from_its_batch_step() -> None:
    cancelled = accounted(4, "CANCELLED", exit_object("SUCCESS", 0),
                          [batch_step(4, exit_object("SIGNALED", signum=15))])
    status = api.status_of(V42.accounted(cancelled))
    assert (status.state, status.exit_code) == (JobState.CANCELLED, 143)
    assert status.usage is not None and status.usage.max_rss_mb == pytest.approx(3358720 / 2**20)
    held = accounted(5, "CANCELLED", exit_object("SUCCESS", 0), [])
    assert api.status_of(V42.accounted(held)).exit_code is None  # never ran
    exit3 = accounted(2, "FAILED", exit_object("ERROR", 3), [batch_step(2, exit_object(
        "ERROR", 3))])
    assert (api.status_of(V42.accounted(exit3)).exit_code, V42.accounted(exit3).comment) == (
        3, "t-2")
    ok = api.status_of(V42.accounted(accounted(1, "COMPLETED", exit_object("SUCCESS", 0), [])))
    assert (ok.state, ok.exit_code) == (JobState.SUCCEEDED, 0)


def test_accounting_lists_repeat_the_key() -> None:
    assert V41.ids_query(["1", "2"]) == [("step", "1"), ("step", "2")]
    assert api.VERSIONS["v0.0.38"].ids_query(["1", "2"]) == [("step", "1,2")]


@pytest.mark.parametrize("status, body, later", [
    (511, {"errors": [{"error_number": 1007, "error": "Protocol authentication error"}]}, True),
    (502, {"errors": [{"error_number": 7000, "error": "Unable to connect to database"}]}, True),
    (502, {"errors": [{"error_number": 1800, "error": "Unable to contact slurm controller"}]},
     True),
    (404, {"errors": [{"error_number": 2017, "error": "Invalid job id specified"}]}, False),
])
def test_2411_answers_that_mean_retry_later(status: int, body: dict[str, Any],
                                            later: bool) -> None:
    assert api.retry_later(status, api.errors_of(body)) is later


def test_a_batch_cancel_reports_failures_but_jobs_already_gone() -> None:
    body = {"status": [
        {"error": {"code": 2017, "message": "Invalid job id specified"}, "step_id": "999999",
         "job_id": UNSET},
        {"error": {"code": 2021, "message": "Job/step already completing or completed"},
         "step_id": "300042", "job_id": wrapped(300042)}]}
    assert api.cancel_failures(body) == ["300042: Job/step already completing or completed"]


# -- a token from a file -----------------------------------------------------------------------
def jwt(user: str, n: int) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256'})}.{part({'sun': user, 'iat': n})}.sig{n}"


def write_token(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)  # as renewal tools do: a new inode


async def test_a_token_file_is_read_again_when_it_changes_and_never_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "jwt"
    write_token(path, f"SLURM_JWT={jwt('alice', 1)}\n")  # scontrol token's output, as saved
    backend = rest.SlurmRestBackend(SlurmSettings(rest_url="http://h:6820",
                                                  rest_token_file=path), state_dir=tmp_path)
    assert backend._token is not None
    token = backend._token
    assert await token.headers() == {"X-SLURM-USER-NAME": "alice",
                                     "X-SLURM-USER-TOKEN": jwt("alice", 1)}
    assert await token.renew(suspect=True) is False  # unchanged: nothing new to try
    write_token(path, jwt("alice", 2))
    assert (await token.headers())["X-SLURM-USER-TOKEN"] == jwt("alice", 2)
    write_token(path, jwt("alice", 3), mode=0o644)  # others may read it: refused, old kept
    assert (await token.headers())["X-SLURM-USER-TOKEN"] == jwt("alice", 2)
    assert "accessible by group or others" in caplog.text
    path.unlink()  # mid-rotation
    assert (await token.headers())["X-SLURM-USER-TOKEN"] == jwt("alice", 2)
    write_token(path, jwt("alice", 4))
    assert await token.renew(suspect=True) is True
    assert (await token.headers())["X-SLURM-USER-TOKEN"] == jwt("alice", 4)
    assert not any(f"sig{n}" in caplog.text for n in range(1, 5))
    assert backend.calls["scontrol_token"] == 0
    await backend.close()


async def test_rest_user_wins_over_the_tokens_claim(tmp_path: Path) -> None:
    path = tmp_path / "jwt"
    write_token(path, jwt("alice", 1))
    backend = rest.SlurmRestBackend(SlurmSettings(
        rest_url="http://h:6820", rest_token_file=path, rest_user="bob"), state_dir=tmp_path)
    assert backend._token is not None
    assert (await backend._token.headers())["X-SLURM-USER-NAME"] == "bob"
    await backend.close()
