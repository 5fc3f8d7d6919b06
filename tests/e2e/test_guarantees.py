"""The guarantees, with real server and agent processes killed with SIGKILL.

- an agent killed after the scheduler took a job but before it reported: the job is adopted
  on restart, runs once, and ends succeeded;
- a server killed in the middle of a 200-job run: every job ends, none lost, none run twice;
- a server outage: the agent keeps running jobs, and states and logs arrive afterwards, in order;
- two servers on one PostgreSQL: a waiter on one is woken by a report made through the other.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from tests.procs import Server, eventually, make_token, stack

pytestmark = pytest.mark.slow

APPEND_ID = "import os, sys; open(sys.argv[1], 'a').write(os.environ['BRIDGEHEAD_JOB_ID'] + '\\n')"
"""A job that appends its own id to a file: each line is one run."""
ORDERED_OUTPUT = (
    "import sys, time\n"
    "for i in range(20):\n"
    "    print(f'line {i}', flush=True)\n"
    "    time.sleep(float(sys.argv[1]))\n"
)


def runs(counter: Path) -> Counter[str]:
    return Counter(counter.read_text().split()) if counter.exists() else Counter()


def states(bh: Client, ids: list[str]) -> dict[str, JobState]:
    found: dict[str, JobState] = {}
    after = None
    while True:
        jobs, after = bh.list_jobs(limit=1000, after=after)
        found.update({j.id: j.state for j in jobs if j.id in ids})
        if after is None:
            return found


def test_agent_killed_after_submit_is_adopted_and_runs_once(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    slow = "import sys, time; time.sleep(1); open(sys.argv[1], 'a').write('ran\\n')"
    with stack(tmp_path, BRIDGEHEAD_FAILPOINT="after-backend-submit") as s, \
            Client(s.server.url, s.admin) as bh:
        [doomed] = s.agents
        job = bh.submit(JobSpec(cluster="local", command=(sys.executable, "-c", slow,
                                                          str(counter))))
        eventually(lambda: not doomed.alive, 30, what="the agent to kill itself")
        assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
        assert bh.get(job.id).state is JobState.SUBMITTING  # nothing reported the native id
        s.start_agent()
        done = bh.wait(job.id, until="terminal", timeout=60)
    assert done.state is JobState.SUCCEEDED, done
    assert done.native_id == job.id  # adopted: the local tag is the Bridgehead id
    assert counter.read_text() == "ran\n"  # the process ran exactly once


def test_server_killed_mid_run_loses_nothing_and_runs_nothing_twice(
    store_dsn: str, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    spec = JobSpec(cluster="local", command=(sys.executable, "-c", APPEND_ID, str(counter)))
    with stack(tmp_path, store_dsn, slots=8) as s, Client(s.server.url, s.admin, timeout=10) as bh:
        ids = [j.id for j in bh.submit_many([spec] * 200)]
        eventually(lambda: sum(runs(counter).values()) >= 40, 120, what="40 jobs to run")
        s.server.kill(signal.SIGKILL)
        time.sleep(1.0)  # the agent keeps going without it
        s.server.start()
        eventually(lambda: all(st.terminal for st in states(bh, ids).values()), 240,
                   interval=0.5, what="all 200 jobs to end")
        final = states(bh, ids)
        assert s.agents[0].alive
    assert Counter(final.values()) == Counter({JobState.SUCCEEDED: 200})
    assert runs(counter) == Counter({i: 1 for i in ids})  # each ran exactly once


def test_server_outage_buffers_reports_and_delivers_them_in_order(tmp_path: Path) -> None:
    spec = JobSpec(cluster="local", command=(sys.executable, "-c", ORDERED_OUTPUT, "0.1"))
    with stack(tmp_path) as s, Client(s.server.url, s.admin, timeout=10) as bh:
        [agent] = s.agents
        ids = [j.id for j in bh.submit_many([spec] * 3)]
        eventually(lambda: all(st is JobState.RUNNING for st in states(bh, ids).values()),
                   30, what="the jobs to run")
        s.server.kill(signal.SIGKILL)
        results = [agent.state_dir / "local" / "jobs" / i / "result.json" for i in ids]
        eventually(lambda: all(r.exists() for r in results), 30,
                   what="the jobs to finish during the outage")
        assert agent.alive
        s.server.start()
        done = [bh.wait(i, until="terminal", timeout=60) for i in ids]
        assert [j.state for j in done] == [JobState.SUCCEEDED] * 3
        expected = "".join(f"line {i}\n" for i in range(20)).encode()
        for job_id in ids:
            data, _, _ = bh.read_logs(job_id)
            assert data == expected
        page = bh.events(after=0, limit=1000)
        events = [e for e in page["events"] if e["data"].get("job_id") in ids]
    for job_id in ids:
        kinds = [e["type"].rsplit(".", 1)[1] for e in events if e["data"]["job_id"] == job_id]
        assert kinds == ["queued", "claimed", "submitting", "submitted", "started",
                         "finished"], kinds


@pytest.mark.postgres
def test_waiter_on_one_server_is_woken_by_a_report_through_another(
    pg_database: str, tmp_path: Path
) -> None:
    admin = make_token(pg_database, "admin")
    a = Server(pg_database, tmp_path).start()
    b = Server(pg_database, tmp_path).start()
    try:
        with Client(a.url, admin) as via_a, Client(b.url, admin) as via_b:
            job = via_a.submit(JobSpec(cluster="far", command=("true",)))
            woken: list = []
            waiter = threading.Thread(target=lambda: woken.append(
                via_a.wait(job.id, until="change", timeout=25)))
            waiter.start()
            time.sleep(0.5)  # the waiter is parked in a long-poll on server A
            started = time.monotonic()
            claimed, _ = via_b.claim("far", "agent-b", max_jobs=1)
            waiter.join(30)
            elapsed = time.monotonic() - started
        assert [j.id for j in claimed] == [job.id]
        assert woken and woken[0].state is JobState.CLAIMED  # woken by B's change
        assert elapsed < 20, f"the waiter timed out instead of being woken ({elapsed:.1f}s)"
    finally:
        a.kill()
        b.kill()
