"""The Slurm hook's event: type and id from the hook's context, retries deduped, a requeued
or reused job id kept apart, only named fields in the data, nothing outside a hook."""

from __future__ import annotations

from bridgehead.backends.slurm_event import job_event, main, options

PROLOG = {"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_CLUSTER_NAME": "alpha",
          "SLURM_JOB_ID": "17", "SLURM_JOB_COMMENT": "j1", "SLURM_JOB_START_TIME": "1700000000"}


def test_start_and_end_events_of_one_job() -> None:
    start = job_event(PROLOG)
    end = job_event({**PROLOG, "SLURM_SCRIPT_CONTEXT": "epilog_slurmctld",
                     "SLURM_JOB_EXIT_CODE2": "0:15", "PATH": "/bin"})
    assert start is not None and end is not None
    assert (start["type"], end["type"]) == ("slurm.job.started", "slurm.job.finished")
    assert start["source"] == end["source"] == "slurm/alpha" and end["subject"] == "17"
    assert start["id"] == "alpha:17:started:1700000000" != end["id"]
    assert (end["data"]["exit_code"], end["data"]["signal"]) == (0, 15)
    assert "PATH" not in str(end["data"]) and end["data"]["comment"] == "j1"


def test_a_requeued_job_and_another_cluster_name_get_their_own_ids() -> None:
    again = job_event({**PROLOG, "SLURM_JOB_RESTART_COUNT": "1",
                       "SLURM_JOB_START_TIME": "1700000100"})
    assert again is not None and again["id"] == "alpha:17:started:1:1700000100"
    renamed = job_event(PROLOG, cluster="hpc1")
    assert renamed is not None and renamed["source"] == "slurm/hpc1"
    odd = job_event({**PROLOG, "SLURM_JOB_ID": "17 x"})
    assert odd is not None and odd["id"] == "alpha:17_x:started:1700000000"


def test_no_event_outside_a_slurmctld_hook() -> None:
    assert job_event({**PROLOG, "SLURM_SCRIPT_CONTEXT": "prolog_slurmd"}) is None
    assert job_event({"SLURM_SCRIPT_CONTEXT": "epilog_slurmctld"}) is None


def test_options_and_a_hook_without_settings_exits_0() -> None:
    found = options(["--server=http://h", "--cluster", "c", "--unknown", "x", "--spool-dir"])
    assert found == {"--server": ["http://h"], "--cluster": ["c"]}
    assert main(["--server", "http://127.0.0.1:9", "--token-file", "/nonexistent"]) == 0
