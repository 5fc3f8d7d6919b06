"""The lab under several users at once (pytest-xdist workers, benchmarks): a controller a test
holds down with ``slurm-lab stop-ctld`` is not a broken lab. An ``up`` meanwhile (another
worker's session starting) waits for ``start-ctld`` and restarts nothing: restarting the
cluster under the test killed its jobs (a CI run lost gamma that way)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.slurm.conftest import LAB, LAB_DIR, Lab

pytestmark = pytest.mark.slurm


def pids(cluster: str) -> dict[str, str]:
    run = LAB_DIR / "run"
    return {d: (run / f"{cluster}-{d}.pid").read_text().strip()
            for d in ("slurmd", "slurmrestd")}


@pytest.mark.parametrize("cluster", ["alpha", "gamma"])
def test_up_waits_for_a_held_controller_and_restarts_nothing(lab: Lab, cluster: str) -> None:
    lab.cluster(cluster)
    before = pids(cluster)
    lab.lab_cmd("stop-ctld", cluster)
    try:
        status = subprocess.run([*LAB, "status"], capture_output=True, text=True, timeout=120)
        assert f"{cluster}-slurmctld" in status.stdout
        assert "stopped (held by stop-ctld)" in status.stdout, status.stdout
        up = subprocess.Popen([*LAB, "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        time.sleep(5)
        assert up.poll() is None, f"up did not wait for the held controller:\n{up.stdout}"
    finally:
        lab.lab_cmd("start-ctld", cluster)
    out, _ = up.communicate(timeout=300)
    assert up.returncode == 0, out
    assert "held down by stop-ctld" in out
    assert "restarting" not in out, out
    assert pids(cluster) == before  # slurmd and slurmrestd were never restarted


def test_a_hold_left_by_a_killed_test_expires(lab: Lab) -> None:
    """A hold older than 10 minutes (its test was killed before start-ctld) is dropped by
    ``up``, which goes on at once (alpha's controller is running: nothing to repair)."""
    lab.cluster("alpha")
    held = LAB_DIR / "run" / "alpha-slurmctld.held"
    held.write_text(f"{int(time.time()) - 601}\n")
    try:
        up = subprocess.run([*LAB, "up"], capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "dropping a hold older than 600s" in up.stdout + up.stderr
        assert not held.exists()
    finally:
        held.unlink(missing_ok=True)
