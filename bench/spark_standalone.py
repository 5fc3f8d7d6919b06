"""Trivial PySpark apps on the real Spark lab: through Bridgehead (a real server and a
``spark_standalone`` agent) against a direct loop over the master's REST API that submits
them all and polls each driver's status (what a script or Airflow's SparkSubmitOperator in
cluster mode does). Both poll every ``--poll`` seconds; the figure is the wall time from the
first submit to the last end seen, and the requests each side sent to Spark.

    .venv/bin/python bench/spark_standalone.py            # 50 apps each way: ~5 min
    .venv/bin/python bench/spark_standalone.py --quick    # 12 apps each way: under a minute

Needs ``scripts/spark-lab up`` (started here if it is down, and stopped again). Writes
bench/results/spark_standalone.json: spark_wall_s, spark_direct_wall_s, ratio, apps,
requests (bridgehead_json_gets: the agent's GET /json/, one per poll cycle and one per
submit for its fence, besides its n creates; direct: creates + one status call per driver per
cycle), aims, machine, run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import BenchError, make_tokens, process, publish, server, until_online
from rich.table import Table

from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.spark import SparkApp

ROOT = Path(__file__).resolve().parents[1]
LAB = ["bash", str(ROOT / "scripts" / "spark-lab")]
LAB_DIR = Path(os.environ.get("SPARK_LAB_DIR", "/tmp/bh-spark-lab"))
APP = "import sys\nprint('ok', sys.argv[1:])\n"
ENDED = {"FINISHED", "FAILED", "KILLED", "ERROR"}


def lab_info() -> tuple[dict[str, Any], bool]:
    """lab.json, and whether this run started the lab."""
    if subprocess.run([*LAB, "status"], capture_output=True).returncode == 0:
        return json.loads((LAB_DIR / "lab.json").read_text()), False
    subprocess.run([*LAB, "up"], check=True)
    return json.loads((LAB_DIR / "lab.json").read_text()), True


async def direct(lab: dict[str, Any], app: Path, n: int, poll: float) -> tuple[float, int]:
    """Submit ``n`` drivers through the REST API, then poll each one's status until all end."""
    props = {"spark.master": lab["master_url"], "spark.submit.deployMode": "cluster",
             "spark.driver.supervise": "false", "spark.pyspark.python": lab["python"],
             "spark.driver.memory": "512m", "spark.app.name": "bench-direct"}
    requests = 0
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=lab["rest_url"], timeout=30) as http:
        ids = []
        for i in range(n):
            body = {"action": "CreateSubmissionRequest", "appResource": f"file:{app}",
                    "mainClass": "org.apache.spark.deploy.PythonRunner",
                    "appArgs": [str(app), "", str(i)], "clientSparkVersion": "4.0.0",
                    "environmentVariables": {}, "sparkProperties": props}
            answer = (await http.post("/v1/submissions/create", json=body)).json()
            requests += 1
            if not answer.get("success"):
                raise BenchError(f"direct submit refused: {answer}")
            ids.append(answer["submissionId"])
        left = set(ids)
        while left:
            await asyncio.sleep(poll)
            for nid in sorted(left):
                state = (await http.get(f"/v1/submissions/status/{nid}")).json()
                requests += 1
                if state.get("driverState") in ENDED:
                    if state["driverState"] != "FINISHED":
                        raise BenchError(f"direct driver {nid} ended {state}")
                    left.discard(nid)
    return time.monotonic() - start, requests


async def through_bridgehead(lab: dict[str, Any], app: Path, n: int, poll: float,
                             work: Path) -> tuple[float, int]:
    dsn = f"sqlite:///{work / 'bh.db'}"
    tokens = await make_tokens(dsn, ["spark"])
    async with server(dsn, work, "spark") as url, AsyncClient(url, tokens.admin) as bh:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
        env.update({"BRIDGEHEAD_HOME": str(work / "home"), "BRIDGEHEAD_TOKEN":
                    tokens.agents["spark"], "BRIDGEHEAD_LOG_LEVEL": "DEBUG",
                    "BRIDGEHEAD_SPARK__MASTER_URL": lab["master_url"],
                    "BRIDGEHEAD_SPARK__REST_URL": lab["rest_url"],
                    "BRIDGEHEAD_SPARK__JSON_URL": lab["json_url"],
                    "BRIDGEHEAD_SPARK__WORK_DIR": lab["work_dir"],
                    "BRIDGEHEAD_SPARK__PYTHON": lab["python"]})
        argv = [sys.executable, "-m", "bridgehead.cli.main", "agent", "--cluster", "spark",
                "--server", url, "--state-dir", str(work / "agent"), "--backend",
                "spark_standalone", "--poll-interval", str(poll)]
        log = work / "agent.log"
        async with process(argv, env, log) as proc:
            await until_online(bh, "spark", proc, log)
            specs = [JobSpec(cluster="spark", name="bench", spark=SparkApp(
                application=str(app), arguments=(str(i),), driver_memory_mb=512))
                for i in range(n)]
            start = time.monotonic()
            jobs = await bh.submit_many(specs)
            done = [await bh.wait(j.id, until="terminal", timeout=900) for j in jobs]
            wall = time.monotonic() - start
    bad = [j for j in done if j.state is not JobState.SUCCEEDED]
    if bad:
        raise BenchError(f"{len(bad)} Bridgehead jobs did not succeed: {bad[0]}")
    polls = log.read_text().count("GET " + lab["json_url"]) if log.exists() else 0
    if polls <= 0:  # the agent logs each request at DEBUG: none seen means no figure
        raise BenchError(f"no GET {lab['json_url']} in the agent's log ({log}): the request "
                         "count cannot be told")
    return wall, polls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--apps", type=int, default=None)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--output", type=Path,
                        default=ROOT / "bench/results/spark_standalone.json")
    args = parser.parse_args()
    n = args.apps or (12 if args.quick else 50)
    began = time.monotonic()
    lab, started = await asyncio.to_thread(lab_info)
    try:
        with tempfile.TemporaryDirectory(prefix="bh-bench-spark-") as tmp:
            work = Path(tmp)
            app = work / "trivial.py"
            app.write_text(APP)
            direct_wall, direct_requests = await direct(lab, app, n, args.poll)
            bh_wall, bh_polls = await through_bridgehead(lab, app, n, args.poll, work)
    finally:
        if started:
            await asyncio.to_thread(subprocess.run, [*LAB, "down"], check=False)
    ratio = bh_wall / direct_wall
    results = {"spark_wall_s": round(bh_wall, 2), "spark_direct_wall_s": round(direct_wall, 2),
               "ratio": round(ratio, 3), "apps": n, "poll_s": args.poll,
               "requests": {"direct": direct_requests, "bridgehead_json_gets": bh_polls},
               "aims": {"ratio <= 1.2": ratio <= 1.2},
               "machine": {"nproc": os.cpu_count(), "spark": lab["spark_version"],
                           "worker_cores": lab["worker_cores"]},
               "run": {"quick": args.quick, "duration_s": round(time.monotonic() - began, 1),
                       "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    table = Table(title=f"{n} trivial PySpark apps on the Spark lab")
    for column in ("way", "wall s", "requests to Spark"):
        table.add_column(column)
    table.add_row("direct REST loop", f"{direct_wall:.1f}", str(direct_requests))
    table.add_row("Bridgehead", f"{bh_wall:.1f}", f"{bh_polls} GET /json/ + {n} creates")
    table.add_row("ratio", f"{ratio:.2f} (aim <= 1.2)", "")
    publish(results, args.output, table, width=100)


if __name__ == "__main__":
    asyncio.run(main())
