"""The promises ``chaos.py`` checks at the end of a run, each against a witness the faults
cannot have touched: the ledger the job bodies append to, Slurm's accounting, the event log
read straight from PostgreSQL.

- lost / run twice / true state: every job against the ledger and sacct;
- workflow and rule: each task's job ran once, the rule fired once per trigger job;
- event order: each job's events never go back in the lifecycle;
- cursors gapless: the log read through the API from cursor 0 in pages, and the long-poll
  follower that rode through every fault, each saw exactly the seqs the ``events`` table
  holds, once each, in order (a seq a rolled-back transaction took is a hole in the table
  too, counted apart as ``seq_holes``: a hole in the table is not a gap in a cursor);
- outbox flushed in order: within each attempt of each job, the states its reports made
  arrive strictly forward (a report the outbox sent out of order, or twice, would show a
  state after a later one); whether the outbox was used at all is counted from the agents'
  "reports kept in the outbox" warnings;
- long partition: the jobs running when the server was held away from the agents for
  longer than a lease ran through it: attempt 1, once in the ledger, their true end (Armada
  #315: an outage expired leases and killed days-long jobs).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BenchError

from bridgehead.domain.jobs import Job, JobSpec, JobState

LEGAL_ORDER = ["queued", "claimed", "submitting", "submitted", "running"]
ENDS = ["succeeded", "failed", "cancelled", "timed_out", "lost"]
SLURM_AGENTS = {"alpha": "slurm_cli", "beta": "slurm_rest"}
"""The Slurm lab's clusters the load also runs on, and the backend of each one's agent."""
KEPT = re.compile(r"cannot report, (\d+) reports kept in the outbox")


@dataclass(frozen=True)
class Intent:
    spec: JobSpec
    exit_code: int
    cancel_after: float | None


def slurm_jobs(lab: dict[str, Any] | None, since: float) -> Counter[str]:
    """Slurm jobs per Bridgehead job id (by the tag in their comment) on the lab's clusters
    since ``since``, from accounting (sacct)."""
    found: Counter[str] = Counter()
    for cluster in SLURM_AGENTS if lab else ():
        assert lab is not None
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 60))
        done = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,Comment", "-S", start],
                              env={**os.environ,
                                   "SLURM_CONF": lab["clusters"][cluster]["slurm_conf"]},
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise BenchError(f"sacct on {cluster}: {done.stderr}")
        for line in done.stdout.splitlines():
            _, _, comment = line.partition("|")
            if comment:
                found[comment.split(".a")[0]] += 1
    return found


def true_end(job: Job, intent: Intent) -> bool:
    """Whether ``job`` ended as its body meant: exit 0 succeeded, exit 3 failed with 3, or
    cancelled if (and only if) it was to be cancelled."""
    if job.state is JobState.CANCELLED:
        return intent.cancel_after is not None
    want = (JobState.SUCCEEDED, 0) if intent.exit_code == 0 else (JobState.FAILED,
                                                                  intent.exit_code)
    return (job.state, job.exit_code) == want


def check(ledger: Path, intents: list[Intent], result: dict[str, Any],
          lab: dict[str, Any] | None) -> dict[str, Any]:
    ran = Counter(line.split(".a")[0] for line in ledger.read_text().split())
    in_slurm = slurm_jobs(lab, result["began"])
    wrong: list[tuple[Any, ...]] = []
    duplicated: list[tuple[Any, ...]] = []
    lost: list[str] = []
    for job, intent in zip(result["jobs"], intents, strict=True):
        runs = ran[job.id]
        if job.cluster in SLURM_AGENTS and in_slurm[job.id] > job.attempt:
            duplicated.append((job.id, f"{in_slurm[job.id]} Slurm jobs"))
        if not job.terminal or job.state is JobState.LOST:
            lost.append(job.id)
        elif not true_end(job, intent):
            wrong.append((job.id, job.state.value, job.exit_code))
        if runs > job.attempt:
            duplicated.append((job.id, runs))
        if job.state in (JobState.SUCCEEDED, JobState.FAILED) and runs == 0:
            lost.append(job.id)  # it "ran" but its body never did
    run_ok = result["run"]["state"] == "succeeded"
    for job in result["run_jobs"]:
        if ran[job.id] > job.attempt:
            duplicated.append((job.id, ran[job.id]))
    triggers = {j.id for j, x in zip(result["jobs"], intents, strict=True)
                if x.spec.labels.get("chaos") == "trigger" and j.state is JobState.SUCCEEDED}
    fired = Counter(f.spec.labels.get("after") for f in result["follow_ups"])
    rules_missed = sorted(t for t in triggers if fired[t] != 1)
    extra = sorted(a for a in fired if a not in triggers)
    bad_order = _bad_orders(result["events"])
    out_of_order = outbox_out_of_order(result["events"])
    on_slurm = sum(1 for j in result["jobs"] if j.cluster in SLURM_AGENTS)
    return {"lost": len(lost), "duplicated": len(duplicated), "wrong_state": len(wrong),
            "slurm_jobs": on_slurm,
            "rules_missed": len(rules_missed) + len(extra), "run_ok": run_ok,
            "bad_event_order": len(bad_order), "outbox_out_of_order": len(out_of_order),
            **cursors(result["db_seqs"], [e["seq"] for e in result["events"]],
                      result["followed"]),
            "partition_jobs": partition_jobs(result, intents, ran),
            "examples": {"lost": lost[:5], "duplicated": duplicated[:5], "wrong": wrong[:5],
                         "rules_missed": rules_missed[:5], "bad_order": bad_order[:5],
                         "outbox_out_of_order": out_of_order[:5]}}


def _bad_orders(events: list[dict[str, Any]]) -> list[str]:
    """Jobs whose events go back in the lifecycle (a new attempt's ``queued`` may restart
    it): each job's states, in log order, must never step back except to ``queued``."""
    last: dict[str, int] = {}
    bad = []
    for job, _attempt, rank, state in _job_states(events):
        if job in last and rank < last[job] and state != "queued":
            bad.append(job)
        last[job] = rank
    return bad


def _job_states(events: list[dict[str, Any]]) -> list[tuple[str, int, int, str]]:
    """(job, attempt, rank in the lifecycle, state) of each ``bridgehead.job.*`` event, in
    log order (a workflow task's events name its job and state too: not the job's own)."""
    out = []
    for e in events:
        if not str(e.get("type", "")).startswith("bridgehead.job."):
            continue
        data = e.get("data") or {}
        job, state = data.get("job_id"), data.get("state")
        if not isinstance(job, str) or state not in [*LEGAL_ORDER, *ENDS]:
            continue
        rank = LEGAL_ORDER.index(state) if state in LEGAL_ORDER else len(LEGAL_ORDER)
        out.append((job, int(data.get("attempt") or 0), rank, state))
    return out


def outbox_out_of_order(events: list[dict[str, Any]]) -> list[str]:
    """Jobs with an attempt whose states did not arrive strictly forward, each with its
    states: each report is a compare-and-set from the state before it, so reports flushed in
    the order they were made give each state once, in lifecycle order; one sent late, early
    or twice shows as a state at or below the one before it. Allowed again within one
    attempt: ``queued`` after ``claimed`` (a claim released) and ``claimed`` after either (a
    lease that expired before ``submitting``, claimed anew)."""
    last: dict[tuple[str, int], tuple[int, str]] = {}
    seen: dict[tuple[str, int], list[str]] = {}
    bad: list[tuple[str, int]] = []
    for job, attempt, rank, state in _job_states(events):
        key = (job, attempt)
        seen.setdefault(key, []).append(state)
        before = last.get(key)
        again = before is not None and before[1] in ("queued", "claimed") and state in (
            "queued", "claimed")
        if before is not None and rank <= before[0] and not again and key not in bad:
            bad.append(key)
        last[key] = (rank, state)
    return [f"{job} attempt {attempt}: {' > '.join(seen[(job, attempt)])}"
            for job, attempt in bad]


def cursors(db: list[int], paged: list[int], followed: list[int]) -> dict[str, Any]:
    """Gaps, repeats and disorder of the paged read and of the follower against the seqs
    the ``events`` table held when it was read, first (seqs beyond its last are not counted:
    logged after; an event not yet committed then has a seq above every committed one, the
    store's event lock sees to it)."""
    last = db[-1] if db else 0
    seen = [s for s in followed if s <= last]
    return {"cursor_gaps": _misses(db, [s for s in paged if s <= last]),
            "follower_gaps": _misses(db, seen),
            "events_logged": len(db), "events_followed": len(seen),
            "seq_holes": (last - db[0] + 1 - len(db)) if db else 0}


def _misses(truth: list[int], read: list[int]) -> int:
    """How far ``read`` is from ``truth``: seqs missing, seqs repeated, seqs out of order."""
    counts = Counter(read)
    missing = len(set(truth) - set(counts))
    repeated = sum(n - 1 for n in counts.values())
    disorder = sum(1 for a, b in itertools.pairwise(read) if b <= a)
    extra = len(set(counts) - set(truth))
    return missing + repeated + disorder + extra


def partition_jobs(result: dict[str, Any], intents: list[Intent],
                   ran: Counter[str]) -> dict[str, Any]:
    """The jobs running when a partition longer than a lease began: how many, and how many of
    them were re-run (a second attempt or ledger line) or did not end as meant."""
    by_id = {j.id: (j, x) for j, x in zip(result["jobs"], intents, strict=True)}
    held = {i for i in result.get("partitioned", ()) if i in by_id}
    rerun = [i for i in held if by_id[i][0].attempt > 1 or ran[i] > 1]
    wrong = [i for i in held if not true_end(*by_id[i])]
    return {"running_at_start": len(held), "rerun": len(rerun), "wrong_or_lost": len(wrong),
            "longest_s": round(max(result.get("long_partitions", ()), default=0.0), 1)}


def outbox_kept(logs: list[Path]) -> int:
    """The most reports any agent said it kept in its outbox while the server was away."""
    most = 0
    for log in logs:
        for match in KEPT.finditer(log.read_text(errors="replace")):
            most = max(most, int(match.group(1)))
    return most
