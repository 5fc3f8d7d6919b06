"""What a JobSpec asks of Slurm: resources, caps, pass-through and reserved options, states."""

from __future__ import annotations

import pytest

from bridgehead.backends import slurm
from bridgehead.backends.slurm_event import message, sockets
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.errors import InvalidSpec

NO_CAPS = slurm.Caps()


def request(caps: slurm.Caps = NO_CAPS, **kw: object) -> slurm.SlurmRequest:
    spec = JobSpec(**{"cluster": "alpha", "command": ("true",), **kw})  # type: ignore[arg-type]
    return slurm.build_request("job1", spec, caps=caps, working_dir="/w", stdout="/l/%j.out",
                               stderr="/l/%j.err", base_env={"PATH": "/bin"})


def test_resources_become_sbatch_options() -> None:
    r = request(resources=Resources(cores=4, nodes=2, memory_mb=512, gpus=1, walltime_s=61,
                                    partition="debug", account="proj"))
    opts = r.sbatch_options()
    for expected in ("--ntasks=4", "--cpus-per-task=1", "--nodes=2", "--mem=512M",
                     "--gpus=1", "--time=2", "--partition=debug", "--account=proj",
                     "--comment=job1", "--chdir=/w", "--output=/l/%j.out", "--export=ALL"):
        assert expected in opts
    assert r.env == {"PATH": "/bin", "BRIDGEHEAD_JOB_ID": "job1"}


def test_pass_through_options_are_kept_verbatim_and_in_order() -> None:
    r = request(scheduler_options=("--qos=high", "--exclusive", "--constraint=a&b|c"))
    assert r.sbatch_options()[-3:] == ["--qos=high", "--exclusive", "--constraint=a&b|c"]


@pytest.mark.parametrize("option", ["--comment=x", "--output=/etc/passwd", "--array=1-10",
                                    "--wrap=rm -rf /", "--uid=0", "--chdir=/", "--export=ALL",
                                    "--clusters=beta", "--time=5"])
def test_options_bridgehead_owns_are_refused_with_the_reason(option: str) -> None:
    with pytest.raises(InvalidSpec, match=f"scheduler option {option.split('=')[0]} is not"):
        request(scheduler_options=(option,))


@pytest.mark.parametrize("option", ["--ntasks=0", "--ntasks=x", "--nodes=2-", "--nodes=;id"])
def test_malformed_sizes_are_refused(option: str) -> None:
    with pytest.raises(InvalidSpec, match="scheduler option"):
        request(scheduler_options=(option,))


def test_env_that_sbatch_would_read_as_options_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="SBATCH_ARRAY_INX"):
        request(env={"SBATCH_ARRAY_INX": "1-1000"})


def test_job_caps_clamp_what_the_dag_default_asks() -> None:
    """LCLS: a DAG-wide default raises everyone's cores; the single-threaded step is capped."""
    r = request(resources=Resources(cores=64, nodes=4, max_cores=1, max_nodes=1))
    assert (r.ntasks, r.cpus_per_task, r.nodes) == (1, 1, "1")


def test_caps_also_clamp_pass_through_sizes_and_the_tighter_cap_wins() -> None:
    r = request(slurm.Caps(max_cores=8, max_nodes=3),
                resources=Resources(max_cores=16),
                scheduler_options=("--ntasks=32", "--cpus-per-task=2", "--nodes=2-6"))
    assert (r.ntasks, r.cpus_per_task, r.nodes) == (4, 2, "2-3")
    assert not any(o.startswith(("--ntasks=32", "--nodes=2-6")) for o in r.sbatch_options())


def test_a_cap_below_cpus_per_task_leaves_one_task() -> None:
    assert slurm.clamp(4, 16, "1", slurm.Caps(max_cores=8)) == (1, 8, "1")


def test_nodes_never_exceed_tasks() -> None:
    assert slurm.clamp(2, 1, "4", slurm.Caps()) == (2, 1, "2")


def test_argv_goes_to_a_wrapper_script_never_a_shell_string() -> None:
    r = request(command=("echo", "a;b", "$(id)"))
    assert r.argv == ("echo", "a;b", "$(id)")
    assert r.script.startswith("#!/bin/sh") and 'exec "$@"' in r.script
    assert "a;b" not in r.script


def test_every_documented_slurm_state_is_mapped() -> None:
    for name in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED", "FAILED", "CANCELLED",
                 "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
                 "DEADLINE", "REQUEUED", "SUSPENDED", "CONFIGURING", "REVOKED",
                 "SPECIAL_EXIT", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT",
                 "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"):
        assert name in slurm.STATES
    assert slurm.to_state("CANCELLED by 0") is JobState.CANCELLED
    assert slurm.to_state("TIMEOUT") is JobState.TIMED_OUT
    with pytest.raises(ValueError, match="unknown Slurm job state"):
        slurm.to_state("WEIRD")


def test_exit_codes_and_signals() -> None:
    assert slurm.exit_status("3:0") == (3, None)
    assert slurm.exit_status("0:15") == (143, 15)
    assert slurm.exit_status("") == (None, None)
    assert slurm.exit_from_wait_status(768) == (3, None)
    assert slurm.exit_from_wait_status(15) == (143, 15)
    assert slurm.reason_for("FAILED", 3, None) == "exit code 3"
    assert "memory" in (slurm.reason_for("OUT_OF_MEMORY", 0, None) or "")


def test_max_rss_units() -> None:
    assert slurm.parse_memory_mb("2048K") == 2.0
    assert slurm.parse_memory_mb("1.5G") == 1536.0
    assert slurm.parse_memory_mb("") is None


def test_hook_message_and_socket_discovery(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.sock").touch()
    (tmp_path / "b.sock").touch()
    (tmp_path / "notes.txt").touch()
    monkeypatch.chdir(tmp_path)
    assert sockets(["--wake-dir"], {}) == []  # no value: nothing, not the working dir
    found = sockets(["--wake-dir", str(tmp_path), "--wake=/x.sock"], {})
    assert found == ["/x.sock", str(tmp_path / "a.sock"), str(tmp_path / "b.sock")]
    text = message({"SLURM_JOB_ID": "7", "SLURM_SCRIPT_CONTEXT": "epilog_slurmctld",
                    "SLURM_JOB_EXIT_CODE2": "3:0", "SECRET": "x"})
    assert '"job_id":"7"' in text and "SECRET" not in text


def test_routing_by_labels_prefers_online_then_least_busy() -> None:
    from bridgehead.domain.clusters import Cluster, route

    now = 1000.0
    a = Cluster(name="alpha", labels={"site": "onprem", "gpu": "yes"}, last_heartbeat=now)
    b = Cluster(name="beta", labels={"site": "onprem"}, last_heartbeat=now)
    c = Cluster(name="cloud", labels={"site": "cloud"}, last_heartbeat=now - 999)
    known = [(a, {"queued": 5, "succeeded": 100}), (b, {"running": 2}), (c, {})]
    assert route({"site": "onprem"}, known, now=now, ttl_s=30) == "beta"
    assert route({"gpu": "yes"}, known, now=now, ttl_s=30) == "alpha"
    assert route({"site": "cloud"}, known, now=now, ttl_s=30) == "cloud"  # offline: it waits
    with pytest.raises(InvalidSpec, match="no cluster has the labels site=mars"):
        route({"site": "mars"}, known, now=now, ttl_s=30)


def test_a_job_needs_a_cluster_or_labels_to_route_by() -> None:
    with pytest.raises(InvalidSpec, match="give a cluster, or cluster_labels"):
        JobSpec(command=("true",))
    assert JobSpec(cluster_labels={"site": "x"}, command=("true",)).cluster == ""


def test_tagged_maps_every_asked_tag_to_its_jobs_oldest_first() -> None:
    rows = [("12", "a"), ("9", "a"), ("13", "b"), ("14", "(null)"), ("x", "a"), ("9", "a")]
    assert slurm.tagged(["a", "c"], rows) == {"a": ["9", "12"], "c": []}


def test_jobs_are_submitted_with_no_requeue_unless_they_say_themselves() -> None:
    # Bridgehead re-runs a job its node lost: Slurm must not run the same attempt again
    assert "--no-requeue" in request().sbatch_options()
    # the job's own word stands, never overridden (Slurm then owns that job's re-run)
    for kw in ({"scheduler_options": ("--requeue",)},
               {"scheduler_options": ("--no-requeue",)},
               {"command": (), "script": "#!/bin/sh\n#SBATCH --requeue\ntrue\n"}):
        options = request(**kw).sbatch_options()
        assert options.count("--no-requeue") == kw.get("scheduler_options", ()).count(
            "--no-requeue"), (kw, options)


def test_an_attempt_lost_to_its_node_is_lost_to_the_infrastructure() -> None:
    for name in ("NODE_FAIL", "BOOT_FAIL"):
        assert slurm.to_state(name) is JobState.LOST
        assert name in slurm.INFRASTRUCTURE
    assert slurm.to_state("FAILED") is JobState.FAILED
    assert "FAILED" not in slurm.INFRASTRUCTURE
