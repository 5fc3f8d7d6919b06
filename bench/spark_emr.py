"""Spark and EMR: remote calls per poll cycle, automatic recovery of a dead EMR cluster, and
Spark applications through Bridgehead against a direct REST loop.

1. Calls per poll cycle with ``--inflight`` (500) jobs in flight:
   - Livy (the contract fake, batches held in ``starting`` so nothing reaches Spark): the
     ``livy`` backend's poll vs per-batch state polling (``GET /batches/{id}/state`` for each,
     what Airflow's LivyHook does). Aim: 1.
   - EMR (moto + the simulator; steps really run, under StepConcurrencyLevel): the ``emr``
     backend's poll vs ``DescribeStep`` per step (Airflow's EmrStepSensor). Aim:
     <= 1 + ceil(active/50) per cluster + ceil(k/10) (k: steps that left the active set).
2. Recovery: a real server and ``emr`` agent; 8 running steps, their cluster killed with
   INSTANCE_FAILURE. The figure is the time from the death being visible to Bridgehead (the
   agent's poll saw the cluster TERMINATED_WITH_ERRORS, started a replacement and reported
   the steps lost; the server queued them again) to every lost step running again on the
   replacement, minus the simulated boot time. Aim: under one poll cycle. The time from the
   kill itself (which adds up to one poll to notice) is reported beside it.
3. ``--apps`` (50) trivial PySpark apps on the Spark lab through Bridgehead vs a direct REST
   submit-and-poll loop (bench/spark_standalone.py's two ways), wall-time ratio. Aim <= 1.2.

    .venv/bin/python bench/spark_emr.py --quick   # under a minute once the Spark lab is up
    .venv/bin/python bench/spark_emr.py           # 500 in flight, 50 apps: a few minutes

Needs ``scripts/spark-lab up`` (started here if down, and stopped again) and the ``emr``
extra. Writes bench/results/spark_emr.json: calls_per_cycle {livy, livy_per_batch_baseline,
emr, emr_describe_step_baseline, emr_bound}, recovery_added_s, spark_wall_s,
spark_direct_wall_s, spark_ratio, and how each figure was made.
"""

from __future__ import annotations

import argparse
import asyncio
import math
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
from spark_standalone import APP, LAB, direct, lab_info, through_bridgehead

from bridgehead.backends.emr import EmrBackend
from bridgehead.backends.livy import LivyBackend
from bridgehead.client import AsyncClient
from bridgehead.config import EmrSettings, LivySettings
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.spark import SparkApp
from bridgehead.testing._http import JsonServer
from bridgehead.testing.emr_sim import EmrSimulator
from bridgehead.testing.livy_fake import LivyFake
from bridgehead.testing.yarn_fake import SparkBehind, YarnCluster

ROOT = Path(__file__).resolve().parents[1]
ACTIVE = ("PENDING", "RUNNING", "CANCEL_PENDING")
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
             "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
"""Everything here talks to moto in this process: never to AWS, whatever the environment."""


async def livy_calls(lab: dict[str, Any], n: int, work: Path) -> dict[str, int]:
    """One poll of ``n`` batches in flight: the backend's requests, and per-batch polling's."""
    spark = SparkBehind(lab["rest_url"], lab["json_url"], work_dir=Path(lab["work_dir"]))
    cluster = YarnCluster(spark, tick_s=0.5).start()
    livy = LivyFake(cluster, master_url=lab["master_url"], python=lab["python"],
                    submit_s=3600.0, max_creation=n + 1)  # held in ``starting``: no Spark
    http_server = JsonServer(livy.handle).start()
    backend = LivyBackend(LivySettings(url=http_server.url))
    app = work / "held.py"
    app.write_text("print('never run')\n")
    spec = JobSpec(cluster="livy", spark=SparkApp(application=str(app)))
    try:
        natives = [await backend.submit(f"bench-livy-{i}", spec) for i in range(n)]
        before = sum(livy.requests.values())
        statuses = await backend.poll(natives)
        ours = sum(livy.requests.values()) - before
        if len(statuses) != n or {s.state for s in statuses.values()} != {JobState.SUBMITTED}:
            raise BenchError(f"the livy poll saw {len(statuses)} of {n} batches starting")
        before = sum(livy.requests.values())
        async with httpx.AsyncClient(base_url=http_server.url, timeout=30) as http:
            states = [(await http.get(f"/batches/{b.id}/state")).json()["state"]
                      for b in list(livy.batches.values())]
        baseline = sum(livy.requests.values()) - before
        if states.count("starting") != n:
            raise BenchError(f"per-batch polling saw {states.count('starting')} of {n}")
        await backend.cancel(natives)
    finally:
        await backend.close()
        http_server.stop()
        cluster.stop()
    return {"livy": ours, "livy_per_batch_baseline": baseline}


async def emr_calls(n: int, work: Path) -> dict[str, int]:
    """One steady poll of ``n`` steps running on EMR, and DescribeStep for each."""
    with EmrSimulator(boot_s=0.3, work_dir=work / "emr-calls") as sim:
        # every step on EMR at once, as when each Airflow task adds its own: 128 running per
        # cluster (StepConcurrencyLevel; EMR allows 256 active), clusters as many as it takes
        settings = EmrSettings(pool="bench", endpoint_url=sim.endpoint_url,
                               step_concurrency=128, min_clusters=0,
                               max_clusters=math.ceil(n / 128), idle_timeout_s=600.0)
        backend = EmrBackend(settings, state_dir=work / "emr-state")
        spec = JobSpec(cluster="emr", command=("sleep", "600"))
        tags = [f"bench-emr-{i}" for i in range(n)]
        try:
            for tag in tags:
                await backend.submit(tag, spec)
            deadline = time.monotonic() + 120
            while sim.active_steps() < n:  # placed on EMR (booted, added)
                if time.monotonic() > deadline:
                    raise BenchError(f"only {sim.active_steps()} of {n} steps reached EMR")
                await backend.poll(tags)
                await asyncio.sleep(0.2)
            await backend.poll(tags)
            before = sum(sim.calls.values())
            statuses = await backend.poll(tags)
            ours = backend.cycle_calls
            if sum(sim.calls.values()) - before != ours or sim.calls["DescribeStep"]:
                raise BenchError("the emr backend's call count does not match EMR's")
            if len(statuses) != n:
                raise BenchError(f"the emr poll answered for {len(statuses)} of {n} steps")
            active = [sum(1 for s in c.steps if s.state in ACTIVE)
                      for c in sim.clusters("RUNNING", "WAITING")]
            bound = 1 + sum(math.ceil(a / 50) for a in active)
            client = sim.client()
            before = sum(sim.calls.values())
            for c in sim.clusters("RUNNING", "WAITING"):
                for step in c.steps:
                    client.describe_step(ClusterId=c.id, StepId=step.id)
            baseline = sum(sim.calls.values()) - before
            await backend.cancel(tags)
        finally:
            await backend.close()
    return {"emr": ours, "emr_describe_step_baseline": baseline, "emr_bound": bound,
            "emr_clusters": len(active)}


async def recovery(work: Path, poll: float, boot_s: float) -> dict[str, Any]:
    """Seconds from a cluster's death to its lost steps running on a replacement, through a
    real server and agent, minus the simulated boot."""
    dsn = f"sqlite:///{work / 'bh.db'}"
    tokens = await make_tokens(dsn, ["emr"])
    with EmrSimulator(boot_s=boot_s, work_dir=work / "emr-sim") as sim:
        async with server(dsn, work, "emr") as url, AsyncClient(url, tokens.admin) as bh:
            env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
            env.update({"BRIDGEHEAD_HOME": str(work / "home"),
                        "BRIDGEHEAD_TOKEN": tokens.agents["emr"],
                        "BRIDGEHEAD_EMR__ENDPOINT_URL": sim.endpoint_url,
                        "BRIDGEHEAD_EMR__STEP_CONCURRENCY": "8",
                        "BRIDGEHEAD_EMR__MAX_CLUSTERS": "1", **DUMMY_AWS})
            argv = [sys.executable, "-m", "bridgehead.cli.main", "agent", "--cluster", "emr",
                    "--server", url, "--state-dir", str(work / "agent"), "--backend", "emr",
                    "--poll-interval", str(poll)]
            log = work / "emr-agent.log"
            async with process(argv, env, log) as proc:
                await until_online(bh, "emr", proc, log)
                jobs = await bh.submit_many(
                    [JobSpec(cluster="emr", command=("sleep", "120"))] * 8)
                await _until(bh, jobs, lambda j: j.state is JobState.RUNNING, 120)
                [cluster] = sim.clusters("RUNNING")
                died = time.monotonic()
                sim.kill(cluster.id, "INSTANCE_FAILURE")
                await _until(bh, jobs, lambda j: j.attempt == 2, 60, every=0.02, any_=True)
                seen = time.monotonic()  # the agent reported the death: the server requeued
                done = await _until(bh, jobs, lambda j: j.attempt == 2
                                    and j.state is JobState.RUNNING, 120)
                back = time.monotonic()
                for job in done:
                    await bh.cancel(job.id)
            if sim.calls["RunJobFlow"] != 2 or sim.calls["DescribeStep"]:
                raise BenchError(f"recovery used {sim.calls['RunJobFlow']} RunJobFlow, "
                                 f"{sim.calls['DescribeStep']} DescribeStep (want 2, 0)")
    return {"recovery_added_s": round(back - seen - boot_s, 2),
            "recovery_total_s": round(back - seen, 2),
            "recovery_from_kill_s": round(back - died, 2), "boot_s": boot_s, "poll_s": poll,
            "steps": len(jobs)}


async def _until(bh: AsyncClient, jobs: list[Any], ok: Any, timeout: float, *,
                 every: float = 0.05, any_: bool = False) -> list[Any]:
    """The jobs once ``ok`` holds for all of them (or for one, ``any_``)."""
    deadline = time.monotonic() + timeout
    while True:
        now = [await bh.get(j.id) for j in jobs]
        if (any if any_ else all)(ok(j) for j in now):
            return now
        if time.monotonic() > deadline:
            raise BenchError(f"timed out; jobs are {[(j.state, j.attempt) for j in now]}")
        await asyncio.sleep(every)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--inflight", type=int, default=None)
    parser.add_argument("--apps", type=int, default=None)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/spark_emr.json")
    args = parser.parse_args()
    os.environ.update(DUMMY_AWS)
    inflight = args.inflight or (100 if args.quick else 500)
    apps = args.apps or (6 if args.quick else 50)
    began = time.monotonic()
    lab, started = await asyncio.to_thread(lab_info)
    try:
        with tempfile.TemporaryDirectory(prefix="bh-bench-spark-emr-") as tmp:
            work = Path(tmp)
            calls = {**await livy_calls(lab, inflight, work), **await emr_calls(inflight, work)}
            recovered = await recovery(work, args.poll, boot_s=2.0)
            app = work / "trivial.py"
            app.write_text(APP)
            direct_wall, direct_requests = await direct(lab, app, apps, args.poll)
            bh_wall, bh_polls = await through_bridgehead(lab, app, apps, args.poll, work)
    finally:
        if started:
            await asyncio.to_thread(subprocess.run, [*LAB, "down"], check=False)
    ratio = bh_wall / direct_wall
    results = {
        "calls_per_cycle": calls, "inflight": inflight, **recovered,
        "spark_wall_s": round(bh_wall, 2), "spark_direct_wall_s": round(direct_wall, 2),
        "spark_ratio": round(ratio, 3), "apps": apps,
        "spark_requests": {"direct": direct_requests, "bridgehead_json_gets": bh_polls},
        "aims": {"livy == 1": calls["livy"] == 1,
                 "emr <= bound": calls["emr"] <= calls["emr_bound"],
                 "recovery_added_s < poll": recovered["recovery_added_s"] < args.poll,
                 "spark ratio <= 1.2": ratio <= 1.2},
        "run": {"quick": args.quick, "duration_s": round(time.monotonic() - began, 1),
                "nproc": os.cpu_count(),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    table = Table(title=f"Spark and EMR ({inflight} in flight, {apps} apps)")
    for column in ("figure", "Bridgehead", "baseline", "aim"):
        table.add_column(column)
    table.add_row("Livy calls per poll", str(calls["livy"]),
                  f"{calls['livy_per_batch_baseline']} (GET /batches/{{id}}/state each)", "1")
    table.add_row("EMR calls per poll", str(calls["emr"]),
                  f"{calls['emr_describe_step_baseline']} (DescribeStep each)",
                  f"<= {calls['emr_bound']} ({calls['emr_clusters']} clusters)")
    table.add_row("recovery added s", f"{recovered['recovery_added_s']:.2f}",
                  f"total {recovered['recovery_total_s']:.2f} - boot {recovered['boot_s']}",
                  f"< {args.poll} (one poll)")
    table.add_row("Spark apps wall s", f"{bh_wall:.1f}", f"{direct_wall:.1f} (direct REST)",
                  f"ratio {ratio:.2f} <= 1.2")
    publish(results, args.output, table, width=110)


if __name__ == "__main__":
    asyncio.run(main())
