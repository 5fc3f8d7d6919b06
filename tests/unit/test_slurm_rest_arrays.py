"""Job arrays through slurmrestd without a daemon: the submit body carries the array, and
answers name each element ``JOBID_INDEX`` on every version, the array's record of its pending
elements standing for each of them. Records are trimmed answers of the lab's Slurm 22.05.8
(v0.0.38) and 24.11.5 (v0.0.40, v0.0.42) for an array ``--array=0-5%2`` while elements 0 and
1 ran and 2-5 waited, and accounting's record of a held ``--array=1,3-4%2`` cancelled while
pending (its indices a hex bit mask)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends import slurm
from bridgehead.backends import slurm_rest_api as api
from bridgehead.domain.jobs import JobSpec, JobState

V38, V40, V42 = (api.VERSIONS[v] for v in ("v0.0.38", "v0.0.40", "v0.0.42"))
SCRIPT = "#!/bin/sh\necho $SLURM_ARRAY_TASK_ID\n"


def wrapped(n: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": n}


UNSET = {"set": False, "infinite": False, "number": 0}

# GET /slurm/v0.0.38/jobs (22.05): the split-off elements 0 and 1, the array's record of the
# pending 2-5 (no task id, the throttle in its task string), and a job of no array
LIVE_38: list[dict[str, Any]] = [
    {"job_id": 100041, "array_job_id": 100040, "array_task_id": 0, "array_max_tasks": 2,
     "array_task_string": "", "job_state": "RUNNING", "comment": "p1", "nodes": "beta1"},
    {"job_id": 100042, "array_job_id": 100040, "array_task_id": 1, "array_max_tasks": 2,
     "array_task_string": "", "job_state": "RUNNING", "comment": "p1", "nodes": "beta1"},
    {"job_id": 100040, "array_job_id": 100040, "array_task_id": None, "array_max_tasks": 2,
     "array_task_string": "2-5%2", "job_state": "PENDING", "comment": "p1", "nodes": ""},
    {"job_id": 100043, "array_job_id": 0, "array_task_id": None, "array_max_tasks": 0,
     "array_task_string": "", "job_state": "PENDING", "comment": "other", "nodes": ""},
]
# GET /slurm/v0.0.42/jobs (24.11): the same, with wrapped numbers and state lists
LIVE_42: list[dict[str, Any]] = [
    {"job_id": 300041, "array_job_id": wrapped(300040), "array_task_id": wrapped(0),
     "array_max_tasks": wrapped(2), "array_task_string": "", "job_state": ["RUNNING"],
     "comment": "p1", "nodes": "gamma1"},
    {"job_id": 300040, "array_job_id": wrapped(300040), "array_task_id": UNSET,
     "array_max_tasks": wrapped(2), "array_task_string": "2-5%2", "job_state": ["PENDING"],
     "comment": "p1", "nodes": ""},
    {"job_id": 300043, "array_job_id": wrapped(0), "array_task_id": UNSET,
     "array_max_tasks": wrapped(0), "array_task_string": "", "job_state": ["PENDING"],
     "comment": "other", "nodes": ""},
]


def ids(records: list[api.JobRecord]) -> list[str]:
    return [r.native_id for one in records for r in api.element_records(one)]


@pytest.mark.parametrize("version", [V38, V40, V42], ids=lambda v: v.name)
def test_the_submit_carries_the_array_with_its_throttle(version: api.ApiVersion,
                                                        tmp_path: Path) -> None:
    files = slurm.JobFiles(tmp_path, ())
    request = files.request("p1", JobSpec(cluster="c", script=SCRIPT, array="0-99%10"),
                            caps=slurm.Caps(), base_env={"PATH": "/bin"})
    job = api.submit_body(request, version)["job"]
    assert job["array"] == "0-99%10"  # sbatch's text: ONE submission for all elements
    logs = tmp_path / "logs"  # each element's own files, named by its JOBID_INDEX
    assert (job["standard_output"], job["standard_error"]) == (
        f"{logs}/%A_%a.out", f"{logs}/%A_%a.err")
    plain = files.request("p2", JobSpec(cluster="c", script=SCRIPT), caps=slurm.Caps(),
                          base_env={"PATH": "/bin"})
    assert "array" not in api.submit_body(plain, version)["job"]


@pytest.mark.parametrize("version", [V38, V40, V42], ids=lambda v: v.name)
def test_an_array_directive_is_carried_not_refused(version: api.ApiVersion,
                                                   tmp_path: Path) -> None:
    script = "#!/bin/sh\n#SBATCH --array=1-3\n#SBATCH -o out_%A_%a.log\necho hi\n"
    request = slurm.JobFiles(tmp_path, ()).request(
        "p1", JobSpec(cluster="c", script=script, array="1-3"), caps=slurm.Caps(),
        base_env={"PATH": "/bin"})
    job = api.submit_body(request, version)["job"]
    assert job["array"] == "1-3" and job["standard_output"] == "out_%A_%a.log"


def test_v38_records_name_each_element() -> None:
    records = [V38.live(job) for job in LIVE_38]
    assert ids(records) == ["100040_0", "100040_1", "100040_2", "100040_3", "100040_4",
                            "100040_5", "100043"]
    pending = api.element_records(records[2])
    assert {api.status_of(r).state for r in pending} == {JobState.SUBMITTED}
    assert {r.comment for r in pending} == {"p1"}  # the tag that finds the array


@pytest.mark.parametrize("version", [V40, V42], ids=lambda v: v.name)
def test_v40_records_read_wrapped_ids_and_an_unset_task(version: api.ApiVersion) -> None:
    records = [version.live(job) for job in LIVE_42]
    assert ids(records) == ["300040_0", "300040_2", "300040_3", "300040_4", "300040_5",
                            "300043"]
    assert api.status_of(records[0]).state is JobState.RUNNING


def test_an_element_ended_in_slurmctld_has_its_own_exit() -> None:
    v38 = {**LIVE_38[0], "job_state": "FAILED", "exit_code": 768, "start_time": 10,
           "end_time": 12, "cpus": 1, "node_count": 1}
    v42 = {**LIVE_42[0], "job_state": ["FAILED"], "start_time": wrapped(10),
           "end_time": wrapped(12), "cpus": wrapped(1), "node_count": wrapped(1),
           "exit_code": {"status": ["ERROR"], "return_code": wrapped(3),
                         "signal": {"id": UNSET, "name": ""}}}
    for version, job, native_id in ((V38, v38, "100040_0"), (V42, v42, "300040_0")):
        record = version.live(job)
        status = api.status_of(record)
        assert record.native_id == native_id
        assert (status.state, status.exit_code) == (JobState.FAILED, 3)
        assert status.usage is not None and status.usage.core_seconds == 2


def test_accounting_names_elements_and_decodes_a_hex_task_mask() -> None:
    # GET /slurmdb/v0.0.38/jobs: an element's record; the array's record of the elements
    # 1, 3 and 4 cancelled while held (no task id; the indices as a hex bit mask, 0x1A)
    element = {"job_id": 100391, "state": {"current": "COMPLETED", "reason": "None"},
               "array": {"job_id": 100390, "limits": {"max": {"running": {"tasks": 0}}},
                         "task": None, "task_id": 0},
               "comment": {"administrator": None, "job": "p1", "system": None},
               "exit_code": {"status": "SUCCESS", "return_code": 0}}
    pending = {"job_id": 100396, "state": {"current": "CANCELLED", "reason": "JobHeldUser"},
               "array": {"job_id": 100396, "limits": {"max": {"running": {"tasks": 2}}},
                         "task": "0x1A", "task_id": None},
               "comment": {"administrator": None, "job": "p2", "system": None}}
    plain = {"job_id": 100043, "state": {"current": "COMPLETED"},
             "array": {"job_id": 0, "task": None, "task_id": None},
             "comment": {"job": "other"}}
    records = [V38.accounted(j) for j in (element, pending, plain)]
    assert ids(records) == ["100390_0", "100396_1", "100396_3", "100396_4", "100043"]
    assert api.status_of(records[1]).state is JobState.CANCELLED
    # /slurmdb/v0.0.40 and v0.0.42: wrapped task ids, the same mask
    element40 = {**element, "job_id": 300394, "state": {"current": ["COMPLETED"]},
                 "exit_code": {"status": ["SUCCESS"], "return_code": wrapped(0),
                               "signal": {"id": UNSET, "name": ""}},
                 "array": {"job_id": 300393, "limits": {"max": {"running": {"tasks": 0}}},
                           "task_id": wrapped(0), "task": ""}}
    pending40 = {**pending, "job_id": 300399, "state": {"current": ["CANCELLED"]},
                 "array": {"job_id": 300399, "limits": {"max": {"running": {"tasks": 2}}},
                           "task_id": UNSET, "task": "0x1A"}}
    for version in (V40, V42):
        assert ids([version.accounted(j) for j in (element40, pending40)]) == [
            "300393_0", "300399_1", "300399_3", "300399_4"]


@pytest.mark.parametrize(("array_job_id", "task_id", "tasks", "native_id"), [
    (0, None, None, "7"),
    (5, 0, None, "5_0"),  # index 0 is an index, not 'unset'
    (wrapped(5), wrapped(0), "", "5_0"),
    (5, None, "1,3-4", "5_[1,3-4]"),
    (5, None, "0x1", "5_[0]"),
    (5, None, "0x0", "5"),
    (5, 4294967294, "", "5"),  # NO_VAL, as a plain number
    ({"set": True, "infinite": True, "number": 0}, None, None, "7"),
])
def test_record_ids(array_job_id: Any, task_id: Any, tasks: Any, native_id: str) -> None:
    assert api.record_id(7, array_job_id, task_id, tasks) == native_id


def test_a_truncated_task_string_is_kept_whole_never_guessed() -> None:
    # slurmctld's task strings are cut at 64 characters (SLURM_BITSTR_LEN) with '...'
    record = api.JobRecord(native_id="5_[1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,...]",
                           state="PENDING")
    assert api.element_records(record) == [record]
