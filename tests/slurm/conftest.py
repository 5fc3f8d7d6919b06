"""The real Slurm clusters of ``scripts/slurm-lab``: alpha and beta on Slurm 22.05, gamma on
Slurm 24.11 in a Debian 13 chroot (each with slurmdbd and slurmrestd). If the lab is down, the
session starts it and stops, at the end, only what it started (in one process; in pytest-xdist
workers it is left up, as other workers may use it); if it cannot start, or a cluster
a test needs is missing from ``lab.json``, the test is skipped locally with the reason and
fails under ``CI=true``.

gamma's CLI is the 24.11 one inside its chroot: the lab's wrappers in its ``bin_dir`` (22.05
clients cannot talk to a 24.11 controller), and its jobs see only the files under its
``job_root``, which has the same path inside the chroot and out. :meth:`Lab.settings`,
:meth:`Lab.run` and :meth:`Lab.job_root` take care of both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
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
class Target:
    """One backend on one cluster, with settings of its own (e.g. a forced REST version):
    a parameter of the backend contract suite."""

    kind: str
    cluster: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return "-".join([self.kind, self.cluster, *map(str, self.options.values())])


CONTRACT = [Target("slurm_cli", "alpha"), Target("slurm_rest", "beta"),
            Target("slurm_cli", "gamma")]
"""What the backend contract suite (test_backends.py) runs on: each CLI on 22.05 and 24.11."""

CLUSTER_OF: dict[Backend, str] = {}
"""The cluster each backend made by :meth:`Lab.backend` talks to."""


def missing(what: str) -> None:
    """Skip the test for a missing part of the lab; in CI, fail it."""
    if IN_CI:
        pytest.fail(f"the Slurm lab is required in CI: {what}")
    pytest.skip(what)


@dataclass(frozen=True)
class Lab:
    info: dict[str, Any]
    made: list[Path] = field(default_factory=list)
    """Job roots made under clusters' shared ``job_root``: removed at the session's end."""

    def cluster(self, name: str) -> dict[str, Any]:
        """``lab.json``'s entry for cluster ``name`` (skip, or fail in CI, if it is absent)."""
        clusters = self.info["clusters"]
        if name not in clusters:
            if why := self.info.get("skipped", {}).get(name):
                # The lab left it out by design (this host has no packages of its Slurm
                # release): a fact of the host, said in lab.json, not a service that is down.
                pytest.skip(f"cluster {name} of the Slurm lab: {why}")
            missing(f"cluster {name} of the Slurm lab: not up (see scripts/slurm-lab status)")
        return dict(clusters[name])

    def bin_dir(self, name: str) -> Path | None:
        """Where cluster ``name``'s Slurm tools are (None: the host's, on PATH)."""
        value = self.cluster(name).get("bin_dir")
        return Path(value) if value else None

    def env(self, name: str) -> dict[str, str]:
        """The environment a Slurm client command of cluster ``name`` needs."""
        env = {**os.environ, "SLURM_CONF": self.cluster(name)["slurm_conf"]}
        if (bin_dir := self.bin_dir(name)) is not None:
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    def run(self, name: str, *argv: str) -> str:
        """A Slurm client command on cluster ``name`` (for the tests' own checks)."""
        bin_dir = self.bin_dir(name)
        program = str(bin_dir / argv[0]) if bin_dir else argv[0]
        out = subprocess.run([program, *argv[1:]], env=self.env(name), capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise AssertionError(f"{argv[0]} on {name} exited {out.returncode}: {out.stderr}")
        return out.stdout

    def job_root(self, name: str, tmp_path: Path) -> Path:
        """A fresh directory for cluster ``name``'s job files: ``tmp_path`` where jobs see the
        host's files, else one under the cluster's ``job_root``."""
        shared = self.cluster(name).get("job_root")
        if not shared:
            return tmp_path
        self.made.append(Path(tempfile.mkdtemp(prefix=f"{tmp_path.name}-", dir=shared)))
        return self.made[-1]

    def settings(self, name: str, job_root: Path, **kw: Any) -> SlurmSettings:
        c = self.cluster(name)
        return SlurmSettings(conf=Path(c["slurm_conf"]), rest_url=c["rest_url"],
                             job_root=job_root, bin_dir=self.bin_dir(name), **kw)

    def agent_env(self, name: str, job_root: Path) -> dict[str, str]:
        """The ``BRIDGEHEAD_SLURM__*`` variables of an agent of cluster ``name``."""
        c = self.cluster(name)
        env = {"BRIDGEHEAD_SLURM__CONF": c["slurm_conf"],
               "BRIDGEHEAD_SLURM__JOB_ROOT": str(job_root)}
        if c["rest_url"]:  # delta has no slurmrestd
            env["BRIDGEHEAD_SLURM__REST_URL"] = c["rest_url"]
        if (bin_dir := self.bin_dir(name)) is not None:
            env["BRIDGEHEAD_SLURM__BIN_DIR"] = str(bin_dir)
        return env

    def backend(self, kind: str, name: str, job_root: Path, **kw: Any) -> Backend:
        settings = self.settings(name, job_root, **kw)
        backend: Backend
        if kind == "slurm_cli":
            backend = SlurmCliBackend(settings, SlurmCliConfig(state_dir=job_root))
        else:
            from bridgehead.backends.slurm_rest import SlurmRestBackend

            backend = SlurmRestBackend(settings, state_dir=job_root, allowed_roots=())
        CLUSTER_OF[backend] = name
        return backend

    def lab_cmd(self, *args: str) -> None:
        done = subprocess.run([*LAB, *args], timeout=300, capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"slurm-lab {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


def lab_status() -> tuple[bool, bool]:
    """(alpha and beta up, gamma up): from ``slurm-lab status``, one line per daemon."""
    done = subprocess.run([*LAB, "status"], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    down = ("stopped", "no answer", "no chroot")
    ok_22 = not any(w in line for line in lines if not line.startswith("gamma") for w in down)
    ok_gamma = any(line.startswith("gamma-") for line in lines) and not any(
        w in line for line in lines if line.startswith("gamma") for w in down)
    return ok_22, ok_gamma


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    was_up = lab_status()
    if not all(was_up):
        started = subprocess.run([*LAB, "up"], capture_output=True, text=True, timeout=900)
        if started.returncode != 0:
            reason = ("scripts/slurm-lab up failed:\n"
                      f"{started.stdout[-2000:]}{started.stderr[-2000:]}")
            if IN_CI:
                pytest.fail(f"the Slurm lab is required in CI: {reason}")
            if not any(lab_status()):
                pytest.skip(reason)
    the_lab = Lab(json.loads((LAB_DIR / "lab.json").read_text()))
    yield the_lab
    for path in the_lab.made:
        shutil.rmtree(path, ignore_errors=True)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # other workers may still use it: scripts/test stops what it started
    if not any(was_up):
        subprocess.run([*LAB, "down"], capture_output=True, timeout=300)
    elif not was_up[1]:
        subprocess.run([*LAB, "down", "gamma"], capture_output=True, timeout=300)

