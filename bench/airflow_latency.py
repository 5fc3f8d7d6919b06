"""Airflow benchmark: how soon a deferred Airflow task resumes after its Bridgehead job ends.

    python bench/airflow_latency.py [--quick] [--tasks N] [--logs DIR]

One real Bridgehead server (SQLite, temporary dir) with one real local agent (poll interval
1 s: the job supervisor's wake socket tells the agent at once), and one real ``airflow
standalone`` on loopback (parallelism 4; LocalExecutor, scheduler, triggerer, API server).

Three DAGs run side by side, each N mapped ``BridgeheadOperator`` tasks:
- ``bh_latency`` (the defaults): the provider's trigger long-polls the Bridgehead server (it
  answers the moment the job's state changes) and, the job having succeeded, ends the task
  in the triggerer (``TaskSuccessEvent``);
- ``bh_latency_worker``: the same long-poll, but the task resumes on a worker to end
  (``end_from_trigger=False``): what Airflow's scheduler and executor add;
- ``bh_latency_poll5``: the baseline, as the reference systems do it: the trigger asks the
  server every 5 s (``poll_interval_s=5``) and the task resumes on a worker.
Every job first waits for a release file, created once all 3N tasks are deferred, then sleeps
``0.8 s x its index`` plus up to 0.5 s at random (so the ends are spread out and fall at any
phase of a 5 s poll), prints ``time.time()`` as its last act and exits 0.

Latency = the task's ``end_date`` (Airflow's REST API: deferred -> resumed -> success) minus
the time the job printed. It includes everything between: the agent noticing the exit, the
server, the trigger, the triggerer, the scheduler queueing the resumed task and the executor
starting it. Results: ``bench/results/airflow_latency.json`` (``bench/README.md``).
``--quick`` (N = 20) needs about 70 s: ~15-30 s of Airflow start-up, ~30 s for 60 tasks to
defer through 4 executor slots, ~16 s of staggered job ends.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import console, latency_figures, publish  # noqa: E402
from rich.table import Table  # noqa: E402
from tests.airflow.standalone import AirflowInstance, airflow_standalone  # noqa: E402
from tests.procs import Stack, eventually, make_token, stack  # noqa: E402

from bridgehead.client import Client  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "airflow_latency.json"
DAGS = {"bh_latency": "resume_latency_ms", "bh_latency_worker": "worker_resume_latency_ms",
        "bh_latency_poll5": "baseline_poll_5s_ms"}
STAGGER_S = 0.8
JOB = ("import os, random, sys, time\n"
       "while not os.path.exists(sys.argv[1]):\n"
       "    time.sleep(0.05)\n"
       "time.sleep(float(sys.argv[2]) + random.random() * 0.5)\n"
       "print(f'EXIT {time.time():.6f}', flush=True)\n")
DAG_FILE = '''
from airflow.sdk import DAG
from bridgehead.airflow.operators.bridgehead import BridgeheadOperator

for dag_id, poll, end in (("bh_latency", None, True), ("bh_latency_worker", None, False),
                          ("bh_latency_poll5", 5.0, False)):
    with DAG(dag_id, schedule=None, params={{"release": "/nonexistent"}},
             max_active_tasks=128, default_args={{"retries": 0}}) as dag:
        BridgeheadOperator.partial(
            task_id="job", cluster="local", poll_interval_s=poll, end_from_trigger=end,
            command=["python3", "-c", {job!r}, "{{{{ params.release }}}}", "{{{{ item }}}}"],
        ).expand(item=[round(i * {stagger}, 3) for i in range({n})])
    globals()[dag_id] = dag
'''


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to."""


@dataclass(frozen=True)
class Config:
    tasks: int
    quick: bool
    logs: Path | None
    output: Path


def parse_args(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20 tasks per DAG")
    p.add_argument("--tasks", type=int, default=None, help="tasks per DAG (default 40)")
    p.add_argument("--logs", type=Path, default=None, help="keep logs in this directory")
    p.add_argument("--output", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    tasks = a.tasks or (20 if a.quick else 40)
    if tasks < 20:
        p.error("--tasks must be >= 20 (p99 needs samples)")
    return Config(tasks=tasks, quick=a.quick, logs=a.logs, output=a.output)


def _tis(af: AirflowInstance, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    r = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
               params={"limit": 1000})
    r.raise_for_status()
    return list(r.json()["task_instances"])


def _trigger(af: AirflowInstance, dag_id: str, release: Path) -> str:
    af.wait_dag(dag_id, timeout=120)
    af.api("PATCH", f"/api/v2/dags/{dag_id}", params={"update_mask": "is_paused"},
           json={"is_paused": False}).raise_for_status()
    r = af.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
               json={"logical_date": None, "conf": {"release": str(release)}})
    r.raise_for_status()
    return str(r.json()["dag_run_id"])


def _exit_times(bh: Stack, run_id: str) -> dict[int, float]:
    """map_index -> the time the job printed just before exiting."""
    out: dict[int, float] = {}
    with Client(bh.server.url, bh.admin) as client:
        jobs, _ = client.list_jobs(labels={"airflow.run_id": run_id}, limit=1000)
        for job in jobs:
            data, _, _ = client.read_logs(job.id)
            stamp = [w for w in data.decode().split() if w != "EXIT"]
            if not stamp:
                raise BenchError(f"job {job.id} printed no exit time: {data!r}")
            out[int(job.spec.labels["airflow.map_index"])] = float(stamp[-1])
    return out


def measure(cfg: Config, work: Path) -> dict[str, Any]:
    dags = work / "dags"
    dags.mkdir()
    (dags / "bh_latency.py").write_text(DAG_FILE.format(job=JOB, stagger=STAGGER_S,
                                                        n=cfg.tasks))
    release = work / "release"
    with stack(work / "bridgehead", slots=2 * cfg.tasks + 4, poll=1.0) as bh:
        conn = json.dumps({"conn_type": "bridgehead", "host": bh.server.url,
                           "password": make_token(bh.dsn, "client")})
        console.log("starting airflow standalone")
        with airflow_standalone(work / "airflow", dags,
                                {"AIRFLOW_CONN_BRIDGEHEAD_DEFAULT": conn}) as af:
            console.log(f"airflow up in {af.startup_s:.1f} s; {cfg.tasks} tasks per DAG")
            runs = {dag_id: _trigger(af, dag_id, release) for dag_id in DAGS}
            _until(af, runs, {"deferred"}, cfg.tasks, "every task deferred")
            console.log("all tasks deferred: releasing the jobs")
            release.touch()
            _until(af, runs, {"success", "failed"}, cfg.tasks, "every task ended")
            results: dict[str, Any] = {"run": {"airflow_startup_s": round(af.startup_s, 1)}}
            for dag_id, key in DAGS.items():
                results[key] = latency_figures(_latencies(af, bh, dag_id, runs[dag_id]))
    return results


def _until(af: AirflowInstance, runs: dict[str, str], states: set[str], n: int,
           what: str) -> None:
    def check() -> bool:
        tis = [ti for dag_id, run in runs.items() for ti in _tis(af, dag_id, run)]
        return len(tis) == n * len(runs) and all(ti["state"] in states for ti in tis)

    eventually(check, timeout=600, interval=0.5, what=what)


def _latencies(af: AirflowInstance, bh: Stack, dag_id: str, run_id: str) -> list[float]:
    exits = _exit_times(bh, run_id)
    samples = []
    for ti in _tis(af, dag_id, run_id):
        if ti["state"] != "success":
            raise BenchError(f"{dag_id} task {ti['map_index']} ended {ti['state']}")
        ended = datetime.fromisoformat(ti["end_date"]).timestamp()
        samples.append((ended - exits[ti["map_index"]]) * 1000)
    return samples


def table(results: dict[str, Any]) -> Table:
    t = Table(title="Job exit -> Airflow task resumed (deferred -> success)")
    for column in ("trigger", "p50 ms", "p99 ms", "mean ms", "max ms", "samples"):
        t.add_column(column, justify="left" if column == "trigger" else "right")
    for label, key in (("Bridgehead (long-poll, ends in triggerer)", "resume_latency_ms"),
                       ("Bridgehead long-poll, resumed on a worker", "worker_resume_latency_ms"),
                       ("baseline: poll every 5 s, worker", "baseline_poll_5s_ms")):
        f = results[key]
        t.add_row(label, *(f"{f[k]:,}" for k in ("p50", "p99", "mean", "max", "samples")))
    ratio = results["ratio_p50"]
    met = "met" if results["resume_latency_ms"]["p50"] < 1000 else "NOT met"
    t.caption = (f"baseline p50 / Bridgehead p50 = {ratio}x; aim p50 < 1,000 ms: {met}; "
                 f"airflow start-up {results['run']['airflow_startup_s']} s")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bh-airflow-bench-") as tmp:
        work = cfg.logs or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            results = measure(cfg, work)
        except (BenchError, AssertionError, OSError) as exc:
            console.print(f"[bold red]benchmark failed:[/] {exc}", soft_wrap=True)
            return 1
    ours, base = results["resume_latency_ms"]["p50"], results["baseline_poll_5s_ms"]["p50"]
    results["ratio_p50"] = round(base / ours, 2) if ours else None
    results["run"].update(quick=cfg.quick, tasks_per_dag=cfg.tasks, stagger_s=STAGGER_S,
                          python=platform.python_version(),
                          duration_s=round(time.monotonic() - started, 1))
    publish(results, cfg.output, table(results), width=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
