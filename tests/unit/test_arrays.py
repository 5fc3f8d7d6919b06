"""Job arrays, pure parts: Slurm's array-id notation, a parent's end from its elements, and
what an array asks of sbatch."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.backends import slurm
from bridgehead.domain import arrays
from bridgehead.domain.jobs import Job, JobSpec, JobState, Usage
from bridgehead.errors import SubmitRejected

S = JobState
SPEC = JobSpec(cluster="alpha", script="#!/bin/sh\ntrue\n", array="0-2%1")


@pytest.mark.parametrize(("listed", "ids"), [
    ("12", ["12"]), ("12_3", ["12_3"]), ("12_[2-4%2]", ["12_2", "12_3", "12_4"]),
    ("12_[0,5-6]", ["12_0", "12_5", "12_6"]), ("12+0", ["12+0"]),
    ("12_[bad]", ["12_[bad]"]),
])
def test_squeue_and_sacct_array_ids_are_expanded(listed: str, ids: list[str]) -> None:
    assert arrays.expand_native_ids(listed) == ids


def test_array_job_id_of_an_element() -> None:
    assert [arrays.array_job_id(i) for i in ("12_3", "12_[4-9]", "12")] == ["12"] * 3


def element(index: int, state: JobState, exit_code: int | None = None,
            usage: Usage | None = None) -> Job:
    return Job(id=f"p_{index}", spec=arrays.element_spec(SPEC), state=state,
               exit_code=exit_code, usage=usage, parent_id="p", array_index=index)


PARENT = Job(id="p", spec=SPEC, state=S.RUNNING, elements=3)


def test_parent_succeeds_only_if_every_element_did() -> None:
    ok = arrays.outcome(PARENT, [element(i, S.SUCCEEDED, 0) for i in range(3)], at=1.0)
    assert (ok.state, ok.exit_code, ok.reason) == (S.SUCCEEDED, 0, None)
    mixed = [element(0, S.SUCCEEDED, 0), element(1, S.CANCELLED), element(2, S.FAILED, 4)]
    end = arrays.outcome(PARENT, mixed, at=1.0)
    assert (end.state, end.exit_code) == (S.FAILED, 4)
    assert end.reason == ("2 of 3 array elements did not succeed (1 succeeded, 1 failed, "
                          "1 cancelled); first: index 1, cancelled")
    only_cancelled = arrays.outcome(PARENT, [element(0, S.CANCELLED)], at=1.0)
    assert only_cancelled.state is S.CANCELLED


def test_a_user_cancel_of_the_whole_array_makes_it_cancelled() -> None:
    parent = Job(id="p", spec=SPEC, state=S.RUNNING, elements=2, cancel_requested=True)
    end = arrays.outcome(parent, [element(0, S.SUCCEEDED, 0), element(1, S.CANCELLED)], at=1)
    assert end.state is S.CANCELLED


def test_parent_usage_is_the_sum_of_core_seconds() -> None:
    used = [element(0, S.SUCCEEDED, 0, Usage(elapsed_s=10, cores=2, nodes=1, max_rss_mb=5)),
            element(1, S.SUCCEEDED, 0, Usage(elapsed_s=3, cores=4, nodes=2, max_rss_mb=9)),
            element(2, S.SUCCEEDED, 0)]
    total = arrays.total_usage(used)
    assert total is not None
    assert (total.core_seconds, total.cores, total.nodes, total.max_rss_mb) == (32, 4, 2, 9)


def test_element_spec_keeps_where_and_how_big_but_not_what_runs() -> None:
    spec = JobSpec(cluster="alpha", script="#!/bin/sh\n", array="1-2", env={"A": "1"},
                   labels={"run": "r"}, idempotency_key="k", name="n")
    kept = arrays.element_spec(spec)
    assert (kept.cluster, kept.labels, kept.name) == ("alpha", {"run": "r"}, "n")
    assert (kept.script, kept.env, kept.array, kept.idempotency_key) == (None, {}, None, None)
    parent = Job(id="p", spec=spec, state=S.SUBMITTED, elements=2, agent_id="a")
    made = arrays.element_jobs(parent, "42")
    assert [(j.id, j.native_id, j.array_index, j.agent_id) for j in made] == [
        ("p_1", "42_1", 1, "a"), ("p_2", "42_2", 2, "a")]


def test_an_array_is_one_sbatch_with_logs_per_element(tmp_path: Path) -> None:
    files = slurm.JobFiles(tmp_path, ())
    req = files.request("job1", SPEC, caps=slurm.Caps(), base_env={"PATH": "/bin"})
    opts = req.sbatch_options()
    assert "--array=0-2%1" in opts
    assert f"--output={tmp_path}/logs/%A_%a.out" in opts
    assert f"--error={tmp_path}/logs/%A_%a.err" in opts
    assert slurm.native_ids(["7_3", "7", "7_[1-2]", "x"]) == ["7_3", "7"]


def test_an_arrays_own_log_paths_are_linked_per_element(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    files = slurm.JobFiles(tmp_path, ())
    spec = JobSpec(cluster="alpha", working_dir=str(work), array="0-1",
                   script="#!/bin/sh\n#SBATCH -o out_%A_%a.log\ntrue\n")
    req = files.request("job1", spec, caps=slurm.Caps(), base_env={})
    files.link_logs(req, "42")
    for i in (0, 1):
        (work / f"out_42_{i}.log").write_text(f"element {i}\n")
        assert (tmp_path / "logs" / f"42_{i}.out").read_text() == f"element {i}\n"


def test_an_arrays_log_path_with_percent_j_is_refused(tmp_path: Path) -> None:
    spec = JobSpec(cluster="alpha", array="0-1",
                   script="#!/bin/sh\n#SBATCH --error=e_%j.log\ntrue\n")
    with pytest.raises(SubmitRejected, match="%j in a job array's log path"):
        slurm.JobFiles(tmp_path, ()).request("job1", spec, caps=slurm.Caps(), base_env={})
