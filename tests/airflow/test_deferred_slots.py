"""With ``airflow standalone`` at parallelism 4, 50 tasks wait on 50 running Bridgehead jobs
at once: all 50 are deferred and the default pool shows no running slot, so none holds a
worker slot. Released, they all succeed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobState
from tests.airflow.conftest import AirflowLab
from tests.airflow.requirements import AIRFLOW_2, STANDALONE_IS_AIRFLOW_3
from tests.procs import eventually

pytestmark = [pytest.mark.airflow, pytest.mark.slow,
              pytest.mark.skipif(AIRFLOW_2, reason=STANDALONE_IS_AIRFLOW_3)]
N = 50


def _tis(lab: AirflowLab, run_id: str) -> list[dict[str, Any]]:
    r = lab.airflow.api("GET", f"/api/v2/dags/bh_fifty_deferred/dagRuns/{run_id}/taskInstances",
                        params={"limit": 100})
    r.raise_for_status()
    return [ti for ti in r.json()["task_instances"] if ti["task_id"] == "wait"]


def test_fifty_waiting_tasks_hold_no_worker_slot(airflow_lab: AirflowLab,
                                                 tmp_path: Path) -> None:
    af, release = airflow_lab.airflow, tmp_path / "release"
    af.wait_dag("bh_fifty_deferred")
    af.api("PATCH", "/api/v2/dags/bh_fifty_deferred", params={"update_mask": "is_paused"},
           json={"is_paused": False}).raise_for_status()
    r = af.api("POST", "/api/v2/dags/bh_fifty_deferred/dagRuns",
               json={"logical_date": None, "conf": {"release": str(release)}})
    r.raise_for_status()
    run_id = r.json()["dag_run_id"]

    def all_deferred() -> bool:
        tis = _tis(airflow_lab, run_id)
        return len(tis) == N and all(ti["state"] == "deferred" for ti in tis)

    eventually(all_deferred, timeout=240, interval=1, what=f"{N} deferred tasks")
    with Client(airflow_lab.bridgehead.server.url, airflow_lab.bridgehead.admin) as bh:
        jobs, _ = bh.list_jobs(labels={"airflow.run_id": run_id}, limit=200)
        assert len(jobs) == N
        eventually(lambda: all(bh.get(j.id).state is JobState.RUNNING for j in jobs),
                   timeout=60, interval=0.5, what=f"{N} running jobs")
    pool = af.api("GET", "/api/v2/pools/default_pool").json()
    assert pool["running_slots"] == 0 and pool["deferred_slots"] == N, pool
    assert all_deferred()  # still: nothing resumed while the jobs run

    release.touch()

    def run_state() -> str | None:
        state = af.api("GET", f"/api/v2/dags/bh_fifty_deferred/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    assert eventually(run_state, timeout=300, interval=1, what="the run's end") == "success"
    assert {ti["state"] for ti in _tis(airflow_lab, run_id)} == {"success"}
