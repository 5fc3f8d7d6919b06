"""``dag.test()`` (Airflow 3.3 and 2.10) runs a DAG made from workflow YAML through a real
Bridgehead server and local agent: a chain, a fan-out whose width comes from the run's conf,
a failing branch. The jobs really run on the agent, their logs appear in the task logs, the
failing job fails its task with its exit code and its dependents are not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.requirements import require_airflow
from tests.procs import Stack, stack

require_airflow()

from bridgehead.client import Client  # noqa: E402
from bridgehead.domain.jobs import JobState  # noqa: E402

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="module")
def bh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("bh"), slots=8, poll=0.2) as running:
        yield running


@pytest.fixture(scope="module")
def airflow_env(bh: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "BRIDGEHEAD_"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "AIRFLOW_CONN_BRIDGEHEAD_DEFAULT": json.dumps(
            {"conn_type": "bridgehead", "host": bh.server.url, "password": bh.admin}),
    })
    out = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return env


def test_yaml_dag_chain_fanout_and_failure(bh: Stack, airflow_env: dict[str, str],
                                           tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    conf = {"bins": 3, "sample": "lysozyme"}
    out = subprocess.run(
        [sys.executable, str(DAGS / "bh_yaml_dags.py"), "bh_pipeline", json.dumps(conf),
         str(result)], env=airflow_env, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert result.exists(), log[-5000:]
    run = json.loads(result.read_text())
    assert run["state"] == "failed", run  # the broken branch fails the run ...
    assert run["tasks"] == {
        "prepare": "success", "index__items": "success", "index[0]": "success",
        "index[1]": "success", "index[2]": "success", "merge": "success",
        "broken": "failed", "after_broken": "upstream_failed"}, run
    # ... every other task's job really ran on the agent, once, and its log reached the task log
    with Client(bh.server.url, bh.admin) as client:
        jobs, _ = client.list_jobs(labels={"airflow.dag_id": "bh_pipeline",
                                           "airflow.run_id": run["run_id"]})
    by_task = {(j.spec.labels["airflow.task_id"], j.spec.labels["airflow.map_index"]): j
               for j in jobs}
    assert len(jobs) == len(by_task) == 6
    assert all(j.agent_id and j.native_id for j in jobs)
    broken = by_task[("broken", "-1")]
    assert (broken.state, broken.exit_code) == (JobState.FAILED, 3)
    assert all(j.state is JobState.SUCCEEDED for k, j in by_task.items() if k[0] != "broken")
    assert {by_task[("index", str(i))].spec.resources.cores for i in range(3)} == {1}  # capped
    for line in ("prepare lysozyme", "indexed bin 0", "indexed bin 2", "merged 3 bins",
                 "broken step says hi"):
        assert line in log, line
    assert f"Bridgehead job {broken.id} failed with exit code 3" in log
