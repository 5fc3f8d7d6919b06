"""What migration 0011's count triggers cost the broker's writes on PostgreSQL: the same store
workload (jobs submitted in batches of 50, claimed, reported submitting, submitted, running,
succeeded in batches of 50: five writes a job) with the count triggers enabled and disabled,
alternated on one database so the machine's load drifts over both alike.

    python bench/count_triggers.py [--jobs N] [--rounds R] [--pg-dsn DSN] [--output FILE]

Prints each round's jobs/s and a table of the medians (on/off ratio); writes
bench/results/count_triggers.json. Each round checks that the mechanism is what it says:
with the triggers on, the round appended rows to ``job_count_deltas``; off, none (else
BenchError: a figure from triggers that did not fire, or fired when off, is false).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from broker import DEFAULT_PG_DSN, pg_database
from common import BenchError, publish
from rich.table import Table

from bridgehead.domain.jobs import Job, JobSpec, JobState, Transition
from bridgehead.store import JobStore, create_store

TRIGGERS = ("jobs_count_insert", "jobs_count_update", "jobs_count_delete")
BATCH = 50
RESULTS = Path(__file__).resolve().parent / "results" / "count_triggers.json"
DELTAS = "SELECT COUNT(*) FROM job_count_deltas"


async def workload(store: JobStore, n: int) -> float:
    """Seconds for ``n`` jobs through submit, claim and four reports."""
    started = time.perf_counter()
    for _ in range(n // BATCH):
        await store.submit([JobSpec(cluster="c1", command=("true",), tenant="t")
                            for _ in range(BATCH)])
    claimed: list[Job] = []
    while got := await store.claim("c1", "a", limit=BATCH, lease_s=60):
        claimed += got
    for state in (JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING,
                  JobState.SUCCEEDED):
        for i in range(0, len(claimed), BATCH):
            await store.transition([Transition(job_id=j.id, state=state, exit_code=0)
                                    for j in claimed[i:i + BATCH]], agent_id="a")
    return time.perf_counter() - started


async def run(jobs: int, rounds: int, admin_dsn: str) -> dict[str, list[float]]:
    """Each mode's jobs/s per round."""
    async with pg_database(admin_dsn, f"bh_bench_{secrets.token_hex(4)}") as dsn:
        store = create_store(dsn)
        await store.open()
        conn = await asyncpg.connect(dsn)
        rates: dict[str, list[float]] = {"on": [], "off": []}
        try:
            await workload(store, BATCH * 4)  # warm-up
            for r in range(rounds):
                for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                    verb = "ENABLE" if mode == "on" else "DISABLE"
                    for trigger in TRIGGERS:
                        await conn.execute(f"ALTER TABLE jobs {verb} TRIGGER {trigger}")
                    before = await conn.fetchval(DELTAS)  # nothing folds them: no server
                    rates[mode].append(jobs / await workload(store, jobs))
                    added = await conn.fetchval(DELTAS) - before
                    if (added > 0) != (mode == "on"):
                        raise BenchError(f"triggers {mode}, yet the round appended {added} "
                                         "rows to job_count_deltas")
                    print(f"triggers {mode}: {rates[mode][-1]:.0f} jobs/s "
                          f"({added} delta rows)", flush=True)
        finally:
            await conn.close()
            await store.close()
    return rates


def table(rates: dict[str, list[float]]) -> Table:
    on, off = (statistics.median(rates[m]) for m in ("on", "off"))
    t = Table(title="Store writes with migration 0011's count triggers (PostgreSQL)")
    for column in ("Measurement", "Triggers on", "Triggers off", "Ratio"):
        t.add_column(column, justify="left" if column == "Measurement" else "right")
    t.add_row("jobs/s through 5 writes a job, median", f"{on:.0f}", f"{off:.0f}",
              f"{on / off:.2f}x")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pg-dsn", default=os.environ.get("BRIDGEHEAD_TEST_PG_DSN",
                                                           DEFAULT_PG_DSN))
    parser.add_argument("--output", type=Path, default=RESULTS)
    a = parser.parse_args(argv)
    if a.jobs < BATCH or a.rounds < 1:
        parser.error(f"--jobs must be >= {BATCH} and --rounds >= 1")
    started = time.monotonic()
    try:
        rates = asyncio.run(run(a.jobs, a.rounds, a.pg_dsn))
    except BenchError as exc:
        print(f"count_triggers: {exc}", file=sys.stderr)
        return 1
    on, off = (statistics.median(rates[m]) for m in ("on", "off"))
    results = {"jobs_per_s": {"on": on, "off": off}, "ratio": on / off, "rounds": rates,
               "jobs": a.jobs, "load": os.getloadavg()[0],
               "run": {"duration_s": round(time.monotonic() - started, 1)}}
    publish(results, a.output, table(rates), width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
