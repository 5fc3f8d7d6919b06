"""The two real Slurm clusters of ``scripts/slurm-lab`` (alpha and beta, with slurmdbd and
slurmrestd). If the lab is down, the session starts it and stops it at the end; if it cannot
start, the tests are skipped locally with the reason and fail under ``CI=true``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends.base import Backend
from bridgehead.backends.slurm_cli import SlurmCliBackend, SlurmCliConfig
from bridgehead.config import SlurmSettings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
LAB = ["bash", str(ROOT / "scripts" / "slurm-lab")]
LAB_DIR = Path(os.environ.get("SLURM_LAB_DIR", "/tmp/bh-slurm-lab"))

pytestmark = pytest.mark.slurm


@dataclass(frozen=True)
class Lab:
    info: dict[str, Any]

    def cluster(self, name: str) -> dict[str, Any]:
        return dict(self.info["clusters"][name])

    def env(self, name: str) -> dict[str, str]:
        """The environment a Slurm client command of cluster ``name`` needs."""
        return {**os.environ, "SLURM_CONF": self.cluster(name)["slurm_conf"]}

    def run(self, name: str, *argv: str) -> str:
        """A Slurm client command on cluster ``name`` (for the tests' own checks)."""
        out = subprocess.run(argv, env=self.env(name), capture_output=True, text=True,
                             timeout=60, check=True)
        return out.stdout

    def settings(self, name: str, job_root: Path, **kw: Any) -> SlurmSettings:
        c = self.cluster(name)
        return SlurmSettings(conf=Path(c["slurm_conf"]), rest_url=c["rest_url"],
                             job_root=job_root, **kw)

    def backend(self, kind: str, name: str, job_root: Path, **kw: Any) -> Backend:
        settings = self.settings(name, job_root, **kw)
        if kind == "slurm_cli":
            return SlurmCliBackend(settings, SlurmCliConfig(state_dir=job_root))
        from bridgehead.backends.slurm_rest import SlurmRestBackend

        return SlurmRestBackend(settings, state_dir=job_root, allowed_roots=())

    def lab_cmd(self, *args: str) -> None:
        done = subprocess.run([*LAB, *args], timeout=300, capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"slurm-lab {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    was_up = subprocess.run([*LAB, "status"], capture_output=True).returncode == 0
    if not was_up:
        started = subprocess.run([*LAB, "up"], capture_output=True, text=True, timeout=900)
        if started.returncode != 0:
            reason = ("scripts/slurm-lab up failed:\n"
                      f"{started.stdout[-2000:]}{started.stderr[-2000:]}")
            if IN_CI:
                pytest.fail(f"the Slurm lab is required in CI: {reason}")
            pytest.skip(reason)
    yield Lab(json.loads((LAB_DIR / "lab.json").read_text()))
    if not was_up:
        subprocess.run([*LAB, "down"], capture_output=True, timeout=300)
