"""``bridgehead airflow run|follow`` against a real Airflow and a real Bridgehead: the single
stream (stdout) holds every job's lines before its task's end, exit codes follow the run,
``--log-file`` has one header per run, ``--detach`` hands the follow to a Bridgehead job."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from bridgehead.client import Client
from tests.airflow.conftest import AirflowLab
from tests.airflow.requirements import AIRFLOW_2, STANDALONE_IS_AIRFLOW_3

pytestmark = [pytest.mark.airflow, pytest.mark.slow,
              pytest.mark.skipif(AIRFLOW_2, reason=STANDALONE_IS_AIRFLOW_3)]

OK_LINES = ["[prep] LAUNCH-prep x={x}", "[fan[0]] LAUNCH-fan-0", "[fan[1]] LAUNCH-fan-1",
            "[fan[2]] LAUNCH-fan-2", "[join] LAUNCH-join", "[join] (stderr) LAUNCH-join-err"]
RUN_ID = re.compile(r"run (bh-launch-\S+)")


@pytest.fixture(scope="module")
def lab(airflow_lab: AirflowLab) -> AirflowLab:
    for dag_id in ("bh_launch_ok", "bh_launch_fail"):
        airflow_lab.airflow.wait_dag(dag_id)
    return airflow_lab


def expected(x: str) -> list[str]:
    return [line.format(x=x) for line in OK_LINES]


def test_run_streams_every_job_with_conf(lab: AirflowLab, tmp_path: Path) -> None:
    log = tmp_path / "stream.log"
    out = lab.cli("airflow", "run", "bh_launch_ok", "--conf", "x=CONF-42", "--conf", "n=4",
                  "--log-file", str(log), home=tmp_path)
    assert out.returncode == 0, out
    stdout, logged = out.stdout.splitlines(), log.read_text().splitlines()
    for line in expected("CONF-42"):  # each job's lines, then its task's end
        assert line in stdout, (line, out.stdout, out.stderr)
        assert line in logged, (line, logged)
        ended = [i for i, s in enumerate(stdout)
                 if s.startswith(f"-- {line.split()[0]} ") and s.endswith("success")]
        assert ended and stdout.index(line) < ended[0], (line, out.stdout)
    assert "bh_launch_ok run bh-launch-" in logged[-1] and logged[-1].endswith("success")

    match = RUN_ID.search(out.stdout)
    assert match, out.stdout
    assert logged[0].startswith(f"=== bh_launch_ok run {match[1]} (bridgehead airflow run, ")
    again = lab.cli("airflow", "follow", "bh_launch_ok", match[1], "--json", "--log-file",
                    str(log), home=tmp_path)
    assert again.returncode == 0, again
    summary = json.loads(again.stdout)
    assert summary["state"] == "success" and summary["run_id"] == match[1]
    tasks = {(t["task_id"], t["map_index"]): t for t in summary["tasks"]}
    assert set(tasks) == {("prep", -1), ("fan", 0), ("fan", 1), ("fan", 2), ("join", -1)}
    for task in tasks.values():
        assert task["state"] == "success"
        assert [j["state"] for j in task["jobs"]] == ["succeeded"], task
    for line in expected("CONF-42"):  # the stream of a finished run, now on stderr
        assert line in again.stderr.splitlines()
    headers = [s for s in log.read_text().splitlines() if s.startswith("=== ")]
    assert len(headers) == 2 and headers[1].startswith(
        f"=== bh_launch_ok run {match[1]} (bridgehead airflow follow, "), headers


def test_failed_run_exits_1_and_names_the_task(lab: AirflowLab, tmp_path: Path) -> None:
    out = lab.cli("airflow", "run", "bh_launch_fail", "--json", home=tmp_path)
    assert out.returncode == 1, out
    summary = json.loads(out.stdout)
    assert summary["state"] == "failed"
    tasks = {t["task_id"]: t for t in summary["tasks"]}
    assert tasks["ok"]["state"] == "success" and tasks["boom"]["state"] == "failed"
    assert tasks["boom"]["jobs"][0]["exit_code"] == 3
    assert "[ok] LAUNCH-ok" in out.stderr and "[boom] boom" in out.stderr
    assert re.search(r"\[boom\] failed: job \S+ failed \(exit 3\)", out.stderr), out.stderr
    assert "[boom]   boom" in out.stderr  # its last lines


def test_unknown_dag_exits_2_with_one_line(lab: AirflowLab, tmp_path: Path) -> None:
    out = lab.cli("airflow", "run", "no_such_dag", home=tmp_path, timeout=60)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no DAG 'no_such_dag'" in lines[0], out.stderr


def test_bad_password_exits_2_without_echoing_it(lab: AirflowLab, tmp_path: Path) -> None:
    out = lab.cli("airflow", "run", "bh_launch_ok", "--password", "not-the-password",
                  home=tmp_path, timeout=60)
    assert out.returncode == 2, out
    assert "refused user 'admin'" in out.stderr and "not-the-password" not in out.stderr


def test_detach_hands_the_follow_to_a_job(lab: AirflowLab, tmp_path: Path) -> None:
    lab.write_config(tmp_path)
    log = tmp_path / "detached.log"
    started = time.monotonic()
    out = lab.cli("airflow", "run", "bh_launch_ok", "--detach", "--conf", "x=DETACHED",
                  "--log-file", str(log), home=tmp_path, timeout=60)
    assert out.returncode == 0, out
    assert time.monotonic() - started < 15
    run_id, job_id = out.stdout.split()
    with Client(lab.bridgehead.server.url, lab.client_token) as bh:
        follower = bh.wait(job_id, timeout=240)
        assert follower.state.value == "succeeded", (follower, bh.read_logs(job_id))
    env = follower.spec.env
    assert lab.client_token not in env.values() and lab.airflow.password not in env.values()
    assert follower.spec.labels["bridgehead.follow.run_id"] == run_id
    logged = log.read_text().splitlines()
    for line in expected("DETACHED"):
        assert line in logged, (line, logged)
    assert logged[-1].endswith("success")


def test_new_dag_files_are_seen_within_seconds(lab: AirflowLab, tmp_path: Path) -> None:
    good, bad = tmp_path / "bh_launch_new.py", tmp_path / "bh_launch_broken.py"
    good.write_text("from airflow.sdk import DAG\n\n"
                    "with DAG('bh_launch_new', schedule=None):\n    pass\n")
    bad.write_text("from airflow.sdk import DAG  # safe mode parses files naming airflow and dag\n"
                   "import no_such_module_anywhere\n")
    started = time.monotonic()
    lab.airflow.add_dag_file(good)
    assert lab.airflow.wait_dag("bh_launch_new", timeout=30)["is_paused"] is True
    assert time.monotonic() - started < 15
    lab.airflow.add_dag_file(bad)
    with pytest.raises(AssertionError, match="no_such_module_anywhere"):
        lab.airflow.wait_dag("bh_launch_broken", timeout=30, file=bad.name)
