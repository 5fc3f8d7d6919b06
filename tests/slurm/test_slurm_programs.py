"""Bridgehead's Slurm power-saving programs as slurmctld runs them: a hostlist expanded by
Slurm's own ``scontrol show hostnames``, one argv per node (never a shell), and a clean signal
mask for what ``start`` runs even when the caller blocks SIGTERM (slurmctld's power-save thread
does: a slurmd started from there would ignore the SIGTERM that stops it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from tests.procs import eventually
from tests.slurm.conftest import Lab

pytestmark = pytest.mark.slurm
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def program(lab: Lab, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "SLURM_CONF": lab.cluster("delta")["slurm_conf"]}
    return subprocess.run(
        [sys.executable, "-m", "bridgehead.pools.slurm_programs", "--config", str(config),
         *args], env=env, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))


def test_resume_runs_start_per_node_with_sigterm_unblocked(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "power.toml"
    config.write_text(
        f'start = ["sh", "-c", "grep SigBlk /proc/self/status > {tmp_path}/$0", "{{node}}"]\n'
        f'stop = ["touch", "{tmp_path}/stopped-{{node}}"]\n'
        f'log_dir = "{tmp_path}/log"\n')
    done = program(lab, config, "resume", "n[1-2],x7")
    assert done.returncode == 0, done.stderr
    def started(node: str) -> str:
        path = tmp_path / node
        return path.read_text() if path.exists() else ""

    for node in ("n1", "n2", "x7"):
        out = eventually(partial(started, node), 30, what=f"{node} started")
        assert not int(out.split()[1], 16) & SIGTERM_BIT, out  # not inherited blocked
    assert "resume n[1-2],x7" in (tmp_path / "log" / "power.log").read_text()


def test_a_hostlist_that_is_not_node_names_is_refused(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "power.toml"
    config.write_text(f'start = ["touch", "{tmp_path}/started-{{node}}"]\nstop = ["true"]\n')
    for bad in ("-n1", "n1;touch x", "../n1", "n1,$(id)"):
        done = program(lab, config, "resume", bad)
        assert done.returncode == 2, (bad, done)
    assert not list(tmp_path.glob("started-*"))


def test_a_bad_config_is_refused_naming_the_field(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "power.toml"
    for text, field in (('stop = ["true"]\n', "start"),
                        ('start = "boot {node}"\nstop = ["true"]\n', "start"),
                        ('start = ["a"]\nstop = ["b"]\nshell = true\n', "shell")):
        config.write_text(text)
        done = program(lab, config, "suspend", "n1")
        assert done.returncode == 2 and field in done.stderr, (text, done.stderr)
