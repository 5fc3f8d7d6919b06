"""200 Bridgehead triggers in one event loop, as a triggerer runs them, never block it for
0.2 s: while they look their connection up, make their clients, long-poll 200 real jobs of a
real server and agent and copy every job's log lines into the task log (stdout, captured to a
file), no step of the loop runs longer than that.

Two probes watch the loop. A watchdog task copied from Airflow's triggerer
(``TriggerRunner.block_watchdog``, airflow/jobs/triggerer_job_runner.py in 3.3.2: sleep 0.1
s, measure how late it wakes) gives the lag Airflow would log; on a shared 2-core machine
running these 200 jobs that lag is mostly the OS scheduler's, so it is printed, not
asserted. The loop itself (a ``SelectorEventLoop`` whose ``_run_once`` is timed) gives the CPU
each of its steps took in this thread: what the watchdog's lag would be on an idle machine.
Less the garbage collector's share (a full collection of Airflow's heap, ~0.1 s, comes
whichever code allocates), that is asserted. Before the fix the first step ran 200
triggers' client set-ups (a CA bundle loaded per client, the settings files read) for 3.8 s
of CPU, and 200 jobs ending together gave a 0.7 s step of log writing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.requirements import AIRFLOW_2, require_airflow

require_airflow()

from bridgehead.airflow.triggers.bridgehead import BridgeheadJobTrigger  # noqa: E402
from bridgehead.client import Client  # noqa: E402
from bridgehead.domain.jobs import JobSpec  # noqa: E402
from tests.procs import stack  # noqa: E402

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
N = 200
LINES = 300
WATCHDOG_S = 0.1
"""Airflow's watchdog period; it warns when a period overruns its threshold."""


class TimedLoop(asyncio.SelectorEventLoop):
    """Records the CPU time (of this thread: not the time the OS gave other processes) of
    every step of the loop, and how much of it went to Python's garbage collector: a full
    collection of a triggerer's heap (Airflow imported: 200,000 objects) takes ~0.1 s
    whichever trigger's allocation sets it off."""

    steps: list[tuple[float, float]]
    _gc_s = 0.0
    _gc_start = 0.0

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            self._gc_s += time.thread_time() - self._gc_start

    def _run_once(self) -> None:
        start, self._gc_s = time.thread_time(), 0.0
        super()._run_once()  # type: ignore[misc]
        self.steps.append((time.thread_time() - start, self._gc_s))


@contextmanager
def _trigger_log_on_stdout() -> Iterator[None]:
    """Airflow 3's structlog writes trigger records to stdout outside a triggerer; 2.10's
    stdlib logging hands them to pytest's capture instead. There, one stream handler on
    stdout stands for the triggerer's task-log handler, so both count the same lines."""
    if not AIRFLOW_2:
        yield
        return
    logger = logging.getLogger(f"{BridgeheadJobTrigger.__module__}.BridgeheadJobTrigger")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


async def _watchdog(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        last = time.monotonic()
        await asyncio.sleep(WATCHDOG_S)
        lags.append(time.monotonic() - last - WATCHDOG_S)


async def _run_all(job_ids: list[str], lags: list[float]) -> list[Any]:
    stop = asyncio.Event()
    watchdog = asyncio.create_task(_watchdog(stop, lags))
    await asyncio.sleep(WATCHDOG_S * 3)  # the watchdog runs before the first trigger starts
    triggers = [BridgeheadJobTrigger(job_id, wait_s=10.0) for job_id in job_ids]
    events = await asyncio.gather(*(anext(t.run()) for t in triggers))
    stop.set()
    await watchdog
    return events


def test_200_triggers_never_block_the_event_loop(
        tmp_path: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Trigger log records go where Airflow's structlog set-up sends them outside a
    triggerer, stdout: captured to a file, written in the loop as a triggerer's are."""
    with stack(tmp_path, slots=N, poll=0.5) as bh:
        monkeypatch.setenv("AIRFLOW_CONN_BRIDGEHEAD_DEFAULT", json.dumps({
            "conn_type": "bridgehead", "host": bh.server.url, "password": bh.admin}))
        body = f"sleep 5; seq 1 {LINES}; echo done >&2"
        with Client(bh.server.url, bh.admin) as client:
            jobs = client.submit_many([JobSpec(cluster="local", command=("sh", "-c", body))
                                       for _ in range(N)])
        lags: list[float] = []
        steps: list[tuple[float, float]] = []

        def loop() -> TimedLoop:
            timed = TimedLoop()
            timed.steps = steps
            gc.callbacks.append(timed._on_gc)
            return timed

        try:
            with _trigger_log_on_stdout(), asyncio.Runner(loop_factory=loop) as runner:
                events = runner.run(_run_all([j.id for j in jobs], lags))
        finally:
            gc.callbacks[:] = [c for c in gc.callbacks if not isinstance(
                getattr(c, "__self__", None), TimedLoop)]
    assert {e.payload["state"] for e in events} == {"succeeded"}, [e.payload for e in events][:3]
    assert all({str(LINES), "[stderr] done"} & set(e.payload["tail"]) for e in events)
    written = capfd.readouterr().out.count("BridgeheadJobTrigger]")
    assert written >= N * (LINES + 1), written  # every line reached the task log
    ours = max(cpu - collecting for cpu, collecting in steps)
    with capfd.disabled():
        print(f"\n{N} triggers, {len(steps)} loop steps: the longest took {ours:.3f} s of CPU "
              f"besides garbage collection ({max(c for c, _ in steps):.3f} s with it; the "
              f"longest collection {max(g for _, g in steps):.3f} s); Airflow's watchdog: "
              f"worst lag {max(lags):.3f} s over {len(lags)} periods (wall clock, load "
              f"average {os.getloadavg()[0]:.1f})")
    assert ours < 0.2, f"a step of the event loop took {ours:.2f} s"
