"""A workflow fan-out as ONE job array: the planner's choice (pure), and the element script,
run by a real /bin/sh, giving each element its own item in argv and env."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bridgehead.domain import arrays
from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.runs import Plan, Run, TaskState, expand, plan
from bridgehead.workflows import parse_workflow

FANOUT = """\
name: fan
defaults: {cluster: c1}
steps:
  - id: each
    foreach: [a, "b c", "$(touch x)"]
    command: [sh, -c, 'printf "%s|%s\\n" "$1" "$WHO"', sh, "{{ item }}"]
    env: {WHO: "it is {{ item }}", SAME: "1"}
  - {id: after, needs: [each], command: [echo, done]}
"""


def start(text: str, runs_arrays: bool = True) -> Plan:
    spec = parse_workflow(text)
    run = Run(id="r-1", workflow=spec.name, spec_text=text, created_at=1.0)
    tasks = expand(spec, run.id, {})
    return plan(spec, run, tasks, now=2.0, arrays=lambda _cluster: runs_arrays)


def test_a_fanout_on_an_array_cluster_is_one_array_job() -> None:
    out = start(FANOUT)
    [(parent_id, job)] = out.jobs
    assert job.array == "0-2" and job.script == arrays.FANOUT_SCRIPT and job.command == ()
    assert job.idempotency_key == "wf:r-1:each:array:1"
    queued = [t for t in out.tasks if t.state is TaskState.QUEUED]
    assert [t.job_id for t in queued] == [f"{parent_id}_{i}" for i in range(3)]
    assert job.env["SAME"] == "1" and job.labels["run"] == "r-1"


def test_without_arrays_or_when_opted_out_each_item_is_a_job() -> None:
    assert len(start(FANOUT, runs_arrays=False).jobs) == 3
    opted_out = FANOUT.replace("  - id: each\n", "  - id: each\n    array: false\n")
    assert all(job.array is None for _, job in start(opted_out).jobs)
    assert len(start(opted_out).jobs) == 3


def test_items_that_change_more_than_argv_and_env_are_jobs_of_their_own() -> None:
    varied = FANOUT.replace('env: {WHO: "it is {{ item }}", SAME: "1"}',
                            'env: {WHO: "x"}\n    labels: {}\n'
                            '    resources: {cores: 1}')
    assert len(start(varied).jobs) == 1  # only argv differs: still one array
    specs = [JobSpec(cluster="c1", command=("a",), name="x"),
             JobSpec(cluster="c1", command=("a",), name="y")]
    assert arrays.fanout_array(specs, [0, 1]) is None
    scripts = [JobSpec(cluster="c1", script=f"#!/bin/sh\necho {i}\n") for i in range(2)]
    assert arrays.fanout_array(scripts, [0, 1]) is None
    same = [JobSpec(cluster="c1", script="#!/bin/sh\necho $SLURM_ARRAY_TASK_ID\n")] * 2
    joined = arrays.fanout_array(same, [0, 1])
    assert joined is not None and joined.array == "0-1" and joined.script == same[0].script


def test_compress_writes_runs_as_ranges() -> None:
    assert arrays.compress([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert arrays.compress([3]) == "3"


def test_each_element_runs_its_own_item_never_parsed_by_a_shell(tmp_path: Path) -> None:
    [(_, job)] = start(FANOUT).jobs
    script = tmp_path / "fanout.sh"
    script.write_text(job.script or "")
    for index, item in enumerate(["a", "b c", "$(touch x)"]):
        env = {**job.env, "PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": str(index)}
        out = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True,
                             text=True, check=True, cwd=tmp_path)
        assert out.stdout == f"{item}|it is {item}\n"
    assert not list(tmp_path.glob("x"))
    missing = subprocess.run(["/bin/sh", str(script)], env={"PATH": os.environ["PATH"]},
                             capture_output=True, text=True)
    assert missing.returncode == 127 and "not an array element" in missing.stderr
