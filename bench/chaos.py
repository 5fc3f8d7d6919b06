"""Chaos: a mixed load runs while components are killed at random; at the end every promise is
checked against a ledger the jobs write themselves.

    .venv/bin/python bench/chaos.py --quick          # CI-sized: a few minutes
    .venv/bin/python bench/chaos.py --jobs 1000 --faults 30 --seed 7

What runs (seeded): two server replicas on one fresh PostgreSQL database behind Debian's
haproxy (or, without it, clients given both URLs), a ``local`` agent and, when the Slurm lab
is up, agents of its clusters alpha (``slurm_cli``) and beta (``slurm_rest``), and a load of plain
jobs (some failing with exit 3, some cancelled at a random moment, some long), a workflow
with an 8-wide fan-out, and a rule that submits a follow-up job when a job labelled
``chaos=trigger`` succeeds. Every job body first appends its attempt's tag
(``BRIDGEHEAD_JOB_ID``) to a ledger file, then sleeps and exits with its intended code.

Faults, at random moments: SIGKILL of a server replica (restarted after a while), SIGKILL of
the agent (restarted), a partition: the balancer frozen (SIGSTOP) so no client reaches any
server for a while, and a PostgreSQL crash: the run's own PostgreSQL (``initdb`` on a free
port, made for the run, so no one else's database goes down) stopped with ``-m immediate``
and started again, and a Slurm controller outage (``slurm-lab stop-ctld``, then
``start-ctld``). Without PostgreSQL's binaries the run uses the shared server and skips that
fault; without the Slurm lab, the Slurm clusters (it says so). The same load also runs once
without faults first: the throughput ratio is the cost of the faults.

Checked and printed at the end (the run exits 1 if any fails): every job terminal; its state
and exit code the intended ones (succeeded 0, failed 3, or cancelled); run twice: no job's tag
twice in the ledger, and no more Slurm jobs in accounting (sacct, by the tag in their
comment) than the job had attempts; lost: no job ended ``lost`` and no job that ran is
missing from the ledger; every workflow task's job ran once and the run succeeded; the rule
fired exactly once per trigger job; each job's events are in a legal order; no token in any
log.
Writes bench/results/chaos.json: jobs, faults {kind: n}, lost, duplicated, wrong_state,
rules_missed, max_recovery_s, throughput_ratio, seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from chaos_checks import SLURM_AGENTS, Intent, check, outbox_kept
from chaos_world import LAB, World, healthy, own_postgres, slurm_lab, start_world, stop_world
from common import BenchError, publish
from rich.table import Table

from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import JobSpec

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("BRIDGEHEAD_TEST_PG_DSN",
                          "postgresql://postgres@127.0.0.1:5432/postgres")
LONG_HAUL = 3
"""Jobs that run through the long partition (each outlasts it by 30 s)."""


# -- the load ---------------------------------------------------------------------------------
def body(ledger: Path, seconds: float, code: int) -> tuple[str, ...]:
    return ("sh", "-c", f'printf "%s\\n" "$BRIDGEHEAD_JOB_ID" >> {ledger}; '
                        f"sleep {seconds:.2f}; exit {code}")


def plan_load(rng: random.Random, n: int, ledger: Path, clusters: list[str],
              long_s: float = 0.0) -> list[Intent]:
    """``n`` jobs over ``clusters`` (local gets half when there are Slurm clusters too); with
    a long partition (``long_s``), first :data:`LONG_HAUL` local jobs that outlast it."""
    out = [Intent(JobSpec(cluster="local", name=f"long-haul-{i}", labels={"chaos": "long-haul"},
                          command=body(ledger, long_s + 30, 0),
                          idempotency_key=f"long-haul-{i}"), 0, None)
           for i in range(LONG_HAUL if long_s else 0)]
    for i in range(n):
        cluster = clusters[0] if rng.random() < 0.5 else rng.choice(clusters)
        roll = rng.random()
        code = 3 if roll < 0.1 else 0
        seconds = rng.uniform(5, 15) if roll > 0.95 else rng.uniform(0, 2)
        cancel = rng.uniform(0, 5) if 0.1 <= roll < 0.18 else None
        labels = {"chaos": "trigger"} if 0.18 <= roll < 0.24 else {"chaos": "plain"}
        out.append(Intent(JobSpec(cluster=cluster, name=f"chaos-{i}", labels=labels,
                                  command=body(ledger, seconds, code),
                                  idempotency_key=f"chaos-{i}"), code, cancel))
    return out


def workflow(ledger: Path) -> str:
    step = json.dumps(list(body(ledger, 0.5, 0)))
    return ("name: chaos-flow\nparams: {}\ndefaults: {cluster: local}\nsteps:\n"
            f"  - id: fan\n    foreach: [0, 1, 2, 3, 4, 5, 6, 7]\n    command: {step}\n"
            f"  - id: join\n    needs: [fan]\n    command: {step}\n")


def rule(ledger: Path) -> dict[str, Any]:
    return {"name": "chaos-follow-up", "match": {
        "type": "bridgehead.job.finished",
        "data": {"state": "succeeded", "labels": {"chaos": "trigger"}}},
        "actions": [{"submit_job": {"cluster": "local", "name": "follow-up",
                                    "labels": {"chaos": "follow-up",
                                               "after": "{{ data.job_id }}"},
                                    "command": list(body(ledger, 0.2, 0))}}]}


async def run_load(world: World, intents: list[Intent], rng: random.Random, *,
                   chaos: bool, faults: int, timeout: float, long_s: float) -> dict[str, Any]:
    followed: list[int] = []
    follower = asyncio.create_task(_follow(world.url, world.admin, followed))
    async with AsyncClient(world.url, world.admin) as bh:
        await bh.put_rules([rule(world.ledger)])
        start = time.monotonic()
        run = await bh.start_run(workflow(world.ledger), idempotency_key=f"chaos-flow-{chaos}")
        jobs = []
        for i in range(0, len(intents), 50):
            jobs += await bh.submit_many([x.spec for x in intents[i:i + 50]])
        chaos_task = (asyncio.create_task(inject(world, rng, faults, long_s)) if chaos
                      else None)
        cancels = [asyncio.create_task(_cancel_later(bh, j.id, x.cancel_after))
                   for j, x in zip(jobs, intents, strict=True) if x.cancel_after is not None]
        done = await _all_terminal(bh, [j.id for j in jobs], timeout)
        if chaos_task is not None:
            await chaos_task
        await asyncio.gather(*cancels)
        done = await _all_terminal(bh, [j.id for j in jobs], timeout)
        final_run = await bh.wait_run(run["id"], timeout=timeout)
        wall = time.monotonic() - start
        follow_ups, _ = await bh.list_jobs(labels={"chaos": "follow-up"}, limit=1000)
        follow_ups = [await bh.wait(f.id, until="terminal", timeout=timeout) for f in follow_ups]
        run_jobs, _ = await bh.list_jobs(labels={"run": run["id"]}, limit=1000)
        db_seqs = await _db_seqs(world.dsn)  # first: what the pages and the follower must see
        events = await _all_events(bh)
    await _caught_up(followed, db_seqs[-1] if db_seqs else 0, follower)
    return {"jobs": done, "run": final_run, "run_jobs": run_jobs, "follow_ups": follow_ups,
            "events": events, "wall_s": wall, "began": time.time() - wall,
            "db_seqs": db_seqs, "followed": followed, "partitioned": world.partitioned,
            "long_partitions": world.long_partitions}


async def _follow(url: str, token: str, out: list[int]) -> None:
    """A long-poll follower of the event log from cursor 0, riding through every fault: it
    asks again with its cursor whatever fails, and records each seq it is given."""
    after = 0
    async with AsyncClient(url, token) as bh:
        while True:
            try:
                page = await bh.events(after=after, limit=500, wait=5.0)
            except Exception:  # every replica away for a while: ask again, same cursor
                await asyncio.sleep(0.5)
                continue
            out += [e["seq"] for e in page["events"]]
            after = page["next"]


async def _caught_up(followed: list[int], last: int, follower: asyncio.Task[None]) -> None:
    """Let the follower reach ``last`` (90 s at most: a follower stuck short of it shows as
    gaps), then stop it."""
    deadline = time.monotonic() + 90
    while (not followed or followed[-1] < last) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower


async def _db_seqs(dsn: str) -> list[int]:
    """Every seq the event log holds, read from PostgreSQL itself (the witness the cursors
    are checked against)."""
    conn = await asyncpg.connect(dsn)
    try:
        return [r["seq"] for r in await conn.fetch("SELECT seq FROM events ORDER BY seq")]
    finally:
        await conn.close()


async def _cancel_later(bh: AsyncClient, job_id: str, after: float) -> None:
    await asyncio.sleep(after)
    for _ in range(60):
        try:
            await bh.cancel(job_id)
            return
        except Exception:  # a replica down: the cancel is tried again
            await asyncio.sleep(1)


async def _all_terminal(bh: AsyncClient, ids: list[str], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    out = []
    for job_id in ids:
        while True:
            try:
                job = await bh.wait(job_id, until="terminal",
                                    timeout=max(1.0, deadline - time.monotonic()))
            except Exception:  # every replica down for a while
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
                continue
            if job.terminal or time.monotonic() > deadline:
                out.append(job)
                break
    return out


async def _all_events(bh: AsyncClient) -> list[dict[str, Any]]:
    """The whole log from cursor 0, in pages of 100 (many pages: each boundary a cursor)."""
    events, after = [], 0
    while True:
        page = await bh.events(after=after, limit=100)
        events += page["events"]
        if not page["events"]:
            return events
        after = page["next"]


# -- the faults -------------------------------------------------------------------------------
async def inject(world: World, rng: random.Random, count: int, long_s: float) -> None:
    kinds = (["kill_replica", "kill_agent"] + (["partition"] if world.balancer else [])
             + (["restart_postgres"] if world.postgres else [])
             + (["stop_slurmctld"] if len(world.agents) > 1 else []))
    if long_s and world.balancer is not None and count:
        await long_partition(world, long_s)
        count -= 1
    for _ in range(count):
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        kind = rng.choice(kinds)
        world.faults[kind] += 1
        began = time.monotonic()
        if kind == "kill_replica":
            i = rng.randrange(len(world.replicas))
            world.replicas[i].kill()
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            world.replicas[i].start()
            await healthy(f"http://127.0.0.1:{world.ports[i]}")
        elif kind == "kill_agent":
            agent = world.agents[rng.choice(sorted(world.agents))]
            agent.kill()
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            agent.start()
        elif kind == "stop_slurmctld":
            cluster = rng.choice(sorted(SLURM_AGENTS))
            await asyncio.to_thread(_lab, "stop-ctld", cluster)
            await asyncio.sleep(rng.uniform(2.0, 8.0))
            await asyncio.to_thread(_lab, "start-ctld", cluster)
        elif kind == "restart_postgres":
            assert world.postgres is not None
            await asyncio.to_thread(world.postgres.crash)
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            await asyncio.to_thread(world.postgres.start)
        else:
            assert world.balancer is not None and world.balancer.popen is not None
            world.balancer.popen.send_signal(signal.SIGSTOP)  # nobody reaches any server
            await asyncio.sleep(rng.uniform(2.0, 8.0))
            world.balancer.popen.send_signal(signal.SIGCONT)
        world.recoveries.append(time.monotonic() - began)


async def long_partition(world: World, seconds: float) -> None:
    """Hold every client away from the servers (the balancer frozen) for ``seconds``, longer
    than a lease (``--lease``, else 60 s), once the long-haul jobs run; the jobs running then
    are recorded: they must run through it, neither lost nor run again."""
    assert world.balancer is not None and world.balancer.popen is not None
    began = time.monotonic()
    async with AsyncClient(world.url, world.admin) as bh:
        while time.monotonic() < began + 120:
            hauls, _ = await bh.list_jobs(states=["running"], labels={"chaos": "long-haul"})
            if len(hauls) >= LONG_HAUL:
                break
            await asyncio.sleep(0.5)
        running, _ = await bh.list_jobs(states=["running"], limit=1000)
    world.partitioned += [j.id for j in running]
    world.faults["long_partition"] += 1
    world.balancer.popen.send_signal(signal.SIGSTOP)
    await asyncio.sleep(seconds)
    world.balancer.popen.send_signal(signal.SIGCONT)
    world.long_partitions.append(seconds)
    world.recoveries.append(seconds)


def _lab(*args: str) -> None:
    done = subprocess.run(["bash", str(LAB), *args], capture_output=True, text=True,
                          timeout=120)
    if done.returncode:
        raise BenchError(f"slurm-lab {' '.join(args)}: {done.stdout}{done.stderr}")


INVARIANTS = ("lost", "duplicated", "wrong_state", "rules_missed", "bad_event_order",
              "cursor_gaps", "follower_gaps", "outbox_out_of_order")
"""Counts that must be 0 (in the faulty run; the first five in the calm run too)."""


def findings(world: World, intents: list[Intent], result: dict[str, Any],
             lab: dict[str, Any] | None) -> dict[str, Any]:
    tokens = [world.admin, *world.agent_tokens.values()]
    logs = sorted(world.work.glob("*.log"))
    return {**check(world.ledger, intents, result, lab),
            "secrets_in_logs": [p.name for p in logs
                                if any(t in p.read_text(errors="replace") for t in tokens)],
            "outbox_kept_max": outbox_kept([p for p in logs if p.name.startswith("agent-")]),
            "wall_s": result["wall_s"], "faults": dict(world.faults),
            "max_recovery_s": max(world.recoveries, default=0.0)}


async def one_run(args: argparse.Namespace, lab: dict[str, Any] | None, *, chaos: bool,
                  n: int, faults: int, long_s: float) -> dict[str, Any]:
    """The load on a fresh database and fresh processes, with faults or without."""
    rng = random.Random(args.seed)
    name = f"bh_chaos_{secrets.token_hex(4)}"
    postgres = await asyncio.to_thread(own_postgres)
    admin_dsn = postgres.dsn if postgres is not None else PG_ADMIN
    if postgres is None:
        print("chaos: no PostgreSQL binaries of its own: the shared server is used and "
              "not restarted", file=sys.stderr)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    with tempfile.TemporaryDirectory(prefix="bh-chaos-") as tmp:
        world: World | None = None
        try:
            world = await start_world(Path(tmp), dsn, lab, args.lease)
            world.postgres = postgres
            intents = plan_load(rng, n, world.ledger, list(world.agents), long_s)
            result = await run_load(world, intents, rng, chaos=chaos, faults=faults,
                                    timeout=args.timeout, long_s=long_s)
            return findings(world, intents, result, lab)
        finally:
            if world is not None:
                stop_world(world)
            if postgres is not None:
                await asyncio.to_thread(postgres.remove)
            else:
                conn = await asyncpg.connect(PG_ADMIN)
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                await conn.close()


def render(results: dict[str, Any], storm: dict[str, Any]) -> Table:
    table = Table(title=f"chaos: {results['jobs']} jobs, seed {results['seed']} "
                        f"(replay: --seed {results['seed']})")
    table.add_column("invariant / fault")
    table.add_column("value", justify="right")
    for kind, count in sorted(storm["faults"].items()):
        table.add_row(f"fault: {kind}", str(count))
    for key in INVARIANTS:
        table.add_row(key, str(storm[key]))
    table.add_row("events logged / followed through the faults / seq holes (rollbacks)",
                  f"{storm['events_logged']} / {storm['events_followed']} / "
                  f"{storm['seq_holes']}")
    table.add_row("most reports held in an agent's outbox", str(storm["outbox_kept_max"]))
    held = storm["partition_jobs"]
    if held["longest_s"]:
        table.add_row(f"jobs running through a {held['longest_s']:.0f} s partition: "
                      "re-run / wrong or lost",
                      f"{held['running_at_start']}: {held['rerun']} / {held['wrong_or_lost']}")
    table.add_row("jobs on Slurm (alpha slurm_cli, beta slurm_rest; sacct rows checked)",
                  str(storm["slurm_jobs"]))
    table.add_row("workflow run succeeded", str(storm["run_ok"]))
    table.add_row("secrets in logs", str(len(storm["secrets_in_logs"])))
    table.add_row("max recovery s", f"{storm['max_recovery_s']:.1f}")
    table.add_row("throughput with/without faults", f"{results['throughput_ratio']:.2f}")
    return table


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--faults", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--long-partition", type=float, default=None, metavar="S",
                        help="the first fault holds the agents away from the servers for S "
                             "seconds, longer than a lease (full run 150, --quick 0: none)")
    parser.add_argument("--lease", type=float, default=None, metavar="S",
                        help="the servers' lease_s (default theirs, 60 s): a short one lets a "
                             "short partition outlast it")
    parser.add_argument("--no-slurm", action="store_true",
                        help="local jobs only, even when the Slurm lab is up")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/chaos.json")
    args = parser.parse_args()
    n = args.jobs or (60 if args.quick else 1000)
    faults = args.faults if args.faults is not None else (6 if args.quick else 30)
    long_s = (args.long_partition if args.long_partition is not None
              else 0.0 if args.quick else 150.0)
    if args.seed is None:
        args.seed = secrets.randbelow(1 << 30)
    # the harness's own clients retry through every fault by design: no line per retry
    logging.getLogger("bridgehead.client").setLevel(logging.ERROR)
    began = time.monotonic()
    lab = None if args.no_slurm else await asyncio.to_thread(slurm_lab)
    if lab is None:
        print("chaos: the Slurm lab is not up (scripts/slurm-lab up): local jobs only",
              file=sys.stderr)
    calm, storm = [await one_run(args, lab, chaos=chaos, n=n, faults=faults, long_s=long_s)
                   for chaos in (False, True)]
    results = {"jobs": n, "seed": args.seed, "faults": storm["faults"], "lost": storm["lost"],
               "duplicated": storm["duplicated"], "wrong_state": storm["wrong_state"],
               "rules_missed": storm["rules_missed"], "slurm_jobs": storm["slurm_jobs"],
               "max_recovery_s": round(storm["max_recovery_s"], 2),
               "throughput_ratio": round(calm["wall_s"] / storm["wall_s"], 3),
               "wall_s": {"without_faults": round(calm["wall_s"], 1),
                          "with_faults": round(storm["wall_s"], 1)},
               "checks": {k: storm[k] for k in (
                   "run_ok", "bad_event_order", "cursor_gaps", "follower_gaps",
                   "events_logged", "events_followed", "seq_holes", "outbox_out_of_order",
                   "outbox_kept_max", "partition_jobs", "secrets_in_logs", "examples")},
               "calm_run": {k: calm[k] for k in INVARIANTS},
               "run": {"quick": args.quick, "long_partition_s": long_s, "lease_s": args.lease,
                       "duration_s": round(time.monotonic() - began, 1)}}
    publish(results, args.output, render(results, storm), width=100)
    held = storm["partition_jobs"]
    broken = (any(storm[k] for k in INVARIANTS) or not storm["run_ok"]
              or storm["secrets_in_logs"] or held["rerun"] or held["wrong_or_lost"]
              or any(calm[k] for k in INVARIANTS))
    if not sum(storm["faults"].values()):
        raise BenchError("no fault was injected: the figures would be a calm run's")
    if long_s and not held["running_at_start"]:
        raise BenchError("no job was running when the long partition began: it proved nothing")
    if broken:
        print(json.dumps(results["checks"]["examples"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
