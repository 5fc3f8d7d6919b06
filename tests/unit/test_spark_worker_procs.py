"""How the ``spark_standalone`` provider finds its workers again, with real processes (no
Spark): by its key's ``--properties-file`` in a process's argv, else by the pid it noted at
start only while that process keeps the start time noted (never a reused pid)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.pools.providers import spark_procs as procs

SLEEP = "import time; time.sleep(60)"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
        child.wait()


def test_a_worker_is_found_by_its_properties_file(tmp_path: Path,
                                                  children: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "sw"
    (root / "k1").mkdir(parents=True)
    conf = root / "k1" / procs.CONF
    worker = subprocess.Popen([sys.executable, "-c", SLEEP, "--properties-file", str(conf)])
    children.append(worker)
    other = subprocess.Popen([sys.executable, "-c", SLEEP, "--properties-file",
                              str(tmp_path / "elsewhere" / "k2" / procs.CONF)])
    children.append(other)
    assert procs.running(root) == {"k1": worker.pid}
    worker.kill()
    worker.wait()
    assert procs.running(root) == {}


def test_the_noted_pid_counts_only_with_its_start_time(
        tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    """A worker whose argv reads empty (mid-exec) is found by the pid noted at its start; the
    same pid with another start time (reused by another process) is not."""
    home = tmp_path / "sw" / "k1"
    home.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", SLEEP])
    children.append(child)
    procs.record(home, child.pid)
    assert procs.running(tmp_path / "sw") == {"k1": child.pid}
    pid, started = (home / procs.PID).read_text().split()
    (home / procs.PID).write_text(f"{pid} {int(started) - 1}\n")
    assert procs.running(tmp_path / "sw") == {}
    procs.record(home, child.pid)
    child.kill()
    child.wait()
    assert procs.running(tmp_path / "sw") == {}
