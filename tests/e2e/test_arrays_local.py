"""Job arrays on the local backend: one process per element with BRIDGEHEAD_ARRAY_INDEX,
each element a job with its own state, exit code and log, the parent ending with the last;
a cancel of the whole array; a % throttle refused naming the array."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from tests.procs import stack

S = JobState
SCRIPT = """#!/bin/sh
echo "element $BRIDGEHEAD_ARRAY_INDEX of $BRIDGEHEAD_JOB_ID"
exit $((BRIDGEHEAD_ARRAY_INDEX % 3))
"""


def test_the_local_backend_runs_each_element_as_a_job(tmp_path: Path) -> None:
    with stack(tmp_path) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        parent = bh.submit(JobSpec(cluster="local", script=SCRIPT, array="1-6"))
        done = bh.wait(parent.id, until="terminal", timeout=120)
        members, _ = bh.list_jobs(parent=parent.id)
        assert sorted((m.array_index, m.state, m.exit_code) for m in members) == [
            (i, S.SUCCEEDED if i % 3 == 0 else S.FAILED, i % 3) for i in range(1, 7)]
        for m in members:
            assert m.native_id == f"{parent.id}_{m.array_index}"
            out, _, _ = bh.read_logs(m.id)
            assert out.decode() == f"element {m.array_index} of {m.id}\n"
        assert (done.state, done.exit_code) == (S.FAILED, 1)
        assert "4 of 6 array elements did not succeed" in (done.reason or "")


def test_a_local_array_is_cancelled_whole_and_a_throttle_is_refused(tmp_path: Path) -> None:
    with stack(tmp_path) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        parent = bh.submit(JobSpec(cluster="local", script="#!/bin/sh\nsleep 60\n",
                                   array="0-5"))
        bh.wait(f"{parent.id}_0", until="change", timeout=60)
        bh.cancel(parent.id)
        assert bh.wait(parent.id, until="terminal", timeout=60).state is S.CANCELLED
        members, _ = bh.list_jobs(parent=parent.id)
        assert Counter(m.state for m in members) == Counter({S.CANCELLED: 6})
        throttled = bh.submit(JobSpec(cluster="local", script=SCRIPT, array="0-3%2"))
        done = bh.wait(throttled.id, until="terminal", timeout=60)
        assert done.state is S.FAILED and "%N throttle" in (done.reason or "")
        assert "0-3%2" in (done.reason or "")
