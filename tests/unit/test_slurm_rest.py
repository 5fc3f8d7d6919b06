"""slurm_rest without a daemon: the job description it writes, its version and option tables,
and how it reads slurmrestd's answers (records below are trimmed answers of Slurm 22.05.8)."""

from __future__ import annotations

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
from bridgehead.errors import BackendUnavailable, ConfigError, SubmitRejected

API = api.VERSIONS["v0.0.38"]

# GET /slurm/v0.0.38/jobs: exit 0 on 2 CPUs; `exit 3` (wait status 768); cancelled while pending
LIVE: dict[str, dict[str, Any]] = {
    "ok": {"job_id": 137, "job_state": "COMPLETED", "exit_code": 0, "comment": "bh-ok",
           "nodes": "localhost", "start_time": 1795310193, "end_time": 1795310195, "cpus": 2,
           "node_count": 1, "submit_time": 1795310193},
    "exit3": {"job_id": 138, "job_state": "FAILED", "exit_code": 768, "comment": "bh-e3",
              "nodes": "localhost", "start_time": 1795310196, "end_time": 1795310196,
              "cpus": 1, "node_count": 1, "submit_time": 1795310193},
    "never_ran": {"job_id": 139, "job_state": "CANCELLED", "exit_code": 0, "comment": "bh-sg",
                  "nodes": "", "start_time": 1795310194, "end_time": 1795310194, "cpus": 1,
                  "node_count": 1, "submit_time": 1795310193},
}
# GET /slurmdb/v0.0.38/jobs?step=137,138: the same jobs from accounting (exit 3 reads SUCCESS/0)
ACCOUNTED: dict[str, dict[str, Any]] = {
    "ok": {"job_id": 137, "state": {"current": "COMPLETED", "reason": "None"},
           "exit_code": {"status": "SUCCESS", "return_code": 0},
           "comment": {"administrator": None, "job": "bh-ok", "system": None},
           "time": {"elapsed": 2, "start": 1795310193, "end": 1795310195,
                    "submission": 1795310193},
           "tres": {"allocated": [{"type": "cpu", "count": 2}, {"type": "mem", "count": 512},
                                  {"type": "energy", "count": None},
                                  {"type": "node", "count": 1}]},
           "steps": [{"step": {"id": "batch"}, "tres": {"requested": {"max": [
               {"type": "cpu", "count": 0}, {"type": "mem", "count": 3039232}]}}}]},
    "exit3": {"job_id": 138, "state": {"current": "FAILED", "reason": "None"},
              "exit_code": {"status": "SUCCESS", "return_code": 0},
              "comment": {"administrator": None, "job": "bh-e3", "system": None},
              "time": {"elapsed": 0, "submission": 1795310193},
              "tres": {"allocated": [{"type": "cpu", "count": 1}, {"type": "node", "count": 1}]},
              "steps": [{"step": {"id": "batch"}, "tres": {"requested": {"max": []}}}]},
}


def request(**kw: Any) -> slurm.SlurmRequest:
    spec = JobSpec(**{"cluster": "beta", "command": ("true",), **kw})
    return slurm.build_request("job1", spec, caps=slurm.Caps(), working_dir="/w",
                               stdout="/l/%j.out", stderr="/l/%j.err", base_env={"PATH": "/bin"})


def test_the_job_description_carries_resources_tag_files_and_env() -> None:
    body = api.submit_body(request(
        name="hello", env={"X": "1"}, command=(), script="#!/bin/sh\ntrue\n", resources=Resources(
            cores=4, nodes=2, memory_mb=512, gpus=1, walltime_s=61, partition="debug",
            account="proj")), API)
    assert body["job"] == {
        "name": "hello", "comment": "job1", "current_working_directory": "/w",
        "standard_output": "/l/%j.out", "standard_error": "/l/%j.err",
        "environment": {"PATH": "/bin", "X": "1", "BRIDGEHEAD_JOB_ID": "job1"},
        "tasks": 4, "cpus_per_task": 1, "nodes": "2", "memory_per_node": 512,
        "time_limit": 2, "partition": "debug", "account": "proj", "gpus": "1",
        "no_requeue": True}


def test_a_command_travels_in_the_environment_never_in_the_argv_field(tmp_path: Path) -> None:
    canary = tmp_path / "PWNED"
    hostile = f"a;b|c && touch {canary} $(touch {canary}) `touch {canary}` 'q\" \\n\nline2"
    argv = ("printf", "%s|", hostile, "$HOME", "", '"$@"', "${BRIDGEHEAD_ARGC}")
    body = api.submit_body(request(command=argv), API)
    assert "argv" not in body["job"]  # it crashes slurmrestd 22.05.8
    assert hostile not in body["script"]  # the script is fixed text: no word of the job in it
    script = tmp_path / "script"
    script.write_text(body["script"])
    out = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, check=True,
                         env=body["job"]["environment"])
    assert out.stdout == f'{hostile}|$HOME||"$@"|${{BRIDGEHEAD_ARGC}}|'
    assert not canary.exists()


def test_a_script_job_is_sent_as_written() -> None:
    body = api.submit_body(request(command=(), script="#!/bin/bash\necho hi\n"), API)
    assert body["script"] == "#!/bin/bash\necho hi\n"


@pytest.mark.parametrize("option, fields", [
    ("--qos=high", {"qos": "high"}),
    ("--nice=5", {"nice": "5"}),
    ("--nice", {"nice": "100"}),
    ("--exclusive", {"exclusive": "exclusive"}),
    ("--exclusive=user", {"exclusive": "user"}),
    ("--hold", {"hold": True}),
    ("--requeue", {"requeue": True}),
    ("--no-requeue", {"no_requeue": True}),
    ("--constraint=a&b|c", {"constraints": "a&b|c"}),
    ("--exclude=n[1-3]", {"exclude_nodes": "n[1-3]"}),
    ("--ntasks-per-node=2", {"tasks_per_node": "2"}),
    ("--mem-per-cpu=1G", {"memory_per_cpu": "1G"}),
    ("--kill-on-invalid-dep=yes", {"kill_on_invalid_dependency": "yes"}),
    ("--job-name=renamed", {"name": "renamed"}),
])
def test_pass_through_options_map_through_the_version_table(option: str,
                                                            fields: dict[str, Any]) -> None:
    assert api.option_fields([option], API) == fields


def test_a_pass_through_option_wins_over_the_resources_as_on_sbatch() -> None:
    body = api.submit_body(request(resources=Resources(partition="debug"),
                                    scheduler_options=("--partition=long",)), API)
    assert body["job"]["partition"] == "long"


@pytest.mark.parametrize("option, message", [
    ("--frobnicate=1", "--frobnicate is not supported through slurmrestd v0.0.38; use the "
                       "slurm_cli backend"),
    ("--hold=yes", "--hold takes no value"),
    ("--qos", "--qos needs a value"),
])
def test_options_the_table_cannot_send_are_refused(option: str, message: str) -> None:
    with pytest.raises(SubmitRejected, match=message):
        api.submit_body(request(scheduler_options=(option,)), API)


def test_the_newest_known_version_the_daemon_offers_is_chosen() -> None:
    paths: dict[str, dict[str, Any]] = {p: {"get": {}} for p in [
        "/slurm/v0.0.36/job/submit", "/slurm/v0.0.37/job/submit", "/slurm/v0.0.38/job/submit",
        "/slurm/v0.0.38/jobs", "/slurmdb/v0.0.38/jobs", "/openapi/v3"]}
    assert api.choose_version(paths).name == "v0.0.38"
    assert api.choose_version(dict(list(paths.items())[:2])).name == "v0.0.37"
    with pytest.raises(BackendUnavailable, match=re.escape("offers v0.0.36, v0.0.44; this")):
        api.choose_version({"/slurm/v0.0.36/job/submit": {}, "/slurm/v0.0.44/job/submit": {}})


def test_v0_0_37_reads_and_writes_like_v0_0_38() -> None:
    v37 = api.VERSIONS["v0.0.37"]
    assert v37.path("jobs") == "/slurm/v0.0.37/jobs"
    assert v37.path("accounting") == "/slurmdb/v0.0.37/jobs"
    assert api.submit_body(request(), v37)["job"] == api.submit_body(request(), API)["job"]


def test_jobs_in_slurmctld_read_state_wait_status_and_usage() -> None:
    ok, exit3, never_ran = (api.status_of(API.live(LIVE[k])) for k in LIVE)
    assert (ok.state, ok.exit_code, ok.reason) == (JobState.SUCCEEDED, 0, None)
    assert ok.usage is not None
    assert (ok.usage.elapsed_s, ok.usage.cores, ok.usage.nodes) == (2.0, 2, 1)
    assert (exit3.state, exit3.exit_code, exit3.reason) == (JobState.FAILED, 3, "exit code 3")
    assert never_ran.state is JobState.CANCELLED and never_ran.reason == "cancelled"
    assert never_ran.usage is not None and never_ran.usage.core_seconds == 0
    assert API.live(LIVE["ok"]).comment == "bh-ok"


@pytest.mark.parametrize("job_state, raw, state, settling, exit_code, reason", [
    ("PENDING", 0, JobState.SUBMITTED, False, None, None),
    ("RUNNING", 0, JobState.RUNNING, False, None, None),
    ("COMPLETING", 0, JobState.RUNNING, True, None, None),
    ("TIMEOUT", 15, JobState.TIMED_OUT, False, 143, "walltime exceeded"),
    ("FAILED", 9, JobState.FAILED, False, 137, "killed by signal 9"),
    ("OUT_OF_MEMORY", 0, JobState.FAILED, False, 0, "out of memory: the job used more than "
                                                    "its memory limit"),
])
def test_states_and_wait_statuses_translate(job_state: str, raw: int, state: JobState,
                                            settling: bool, exit_code: int | None,
                                            reason: str | None) -> None:
    status = api.status_of(API.live({**LIVE["ok"], "job_state": job_state, "exit_code": raw}))
    assert (status.state, status.settling, status.exit_code, status.reason) == (
        state, settling, exit_code, reason)


def test_accounting_gives_usage_with_max_rss_but_no_exit_code_for_a_failure() -> None:
    ok = api.status_of(API.accounted(ACCOUNTED["ok"]))
    assert (ok.state, ok.exit_code) == (JobState.SUCCEEDED, 0)
    assert ok.usage is not None and (ok.usage.cores, ok.usage.nodes, ok.usage.elapsed_s) == (
        2, 1, 2.0)
    assert ok.usage.max_rss_mb == pytest.approx(3039232 / 2**20)
    failed = api.status_of(API.accounted(ACCOUNTED["exit3"]))
    assert (failed.state, failed.exit_code, failed.reason) == (JobState.FAILED, None, "failed")
    assert API.accounted(ACCOUNTED["exit3"]).comment == "bh-e3"


def test_a_signal_in_accounting_is_believed() -> None:
    record = {**ACCOUNTED["exit3"], "exit_code": {
        "status": "SIGNALED", "signal": {"signal_id": 9, "name": "Killed"}}}
    status = api.status_of(API.accounted(record))
    assert (status.exit_code, status.reason) == (137, "killed by signal 9")


@pytest.mark.parametrize("status, body, later", [
    (500, {"errors": [{"error_code": 1800,
                       "error": "Unable to contact slurm controller (connect failure)"}]}, True),
    (500, {"errors": [{"description": "Failed while looking for jobs", "error_number": -1,
                       "error": "Unspecified error", "source": "slurm_load_jobs"}]}, True),
    (500, {"errors": [{"error_code": 5005,
                       "error": "Zero Bytes were transmitted or received"}]}, True),
    (200, {"errors": [{"description": "Failed connecting to slurmdbd", "error_number": 7000,
                       "error": "Unable to connect to database"}], "jobs": []}, True),
    (502, {}, True),
    (500, {"errors": [{"error_code": 2000, "error": "Invalid partition name specified"}]}, False),
    (400, {"errors": [{"error": "Invalid no kill specification", "error_code": -1},
                      {"error_code": 9001, "error": "Failure during parsing"}]}, False),
    (500, {"errors": [{"description": "Unable to find JobId=99999", "error_number": 2017,
                       "error": "Invalid job id specified"}]}, False),
])
def test_answers_that_mean_retry_later(status: int, body: dict[str, Any], later: bool) -> None:
    assert api.retry_later(status, api.errors_of(body)) is later


def test_error_texts_keep_description_and_error() -> None:
    body = {"errors": [{"description": 'Unknown key "frobnicate"', "source": "hsearch_r"},
                       {"error_code": 9001, "error": "Failure during parsing"}]}
    assert api.errors_of(body) == [(None, 'Unknown key "frobnicate"'),
                                    (9001, "Failure during parsing")]


@pytest.mark.parametrize("settings, message", [
    ({}, "needs agent.slurm.rest_url"),
    ({"rest_url": "127.0.0.1:6820"}, "needs agent.slurm.rest_url"),
    ({"rest_url": "http://h:6820", "rest_version": "v0.0.39"}, "rest_version 'v0.0.39'"),
    ({"rest_url": "http://h:6820", "rest_token": "a.b.c", "rest_token_file": "/t"},
     "rest_token and rest_token_file are both set"),
    ({"rest_url": "http://h:6820", "rest_token_file": "/no/such/file"},
     "rest_token_file: cannot read token file /no/such/file"),
])
def test_bad_settings_fail_at_construction(settings: dict[str, Any], message: str,
                                           tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        rest.SlurmRestBackend(SlurmSettings(**settings), state_dir=tmp_path)


async def test_unix_socket_and_tcp_urls_are_accepted(tmp_path: Path) -> None:
    for url in ("unix:///run/slurmrestd.sock", "http://127.0.0.1:6820"):
        backend = rest.SlurmRestBackend(SlurmSettings(rest_url=url), state_dir=tmp_path)
        assert backend.kind == "slurm_rest" and backend.free_slots() is None
        await backend.close()
