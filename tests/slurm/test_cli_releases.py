"""slurm_cli across Slurm releases: a 22.05 client cannot talk to a 24.11 controller, so an
agent of gamma must run gamma's own tools (``bin_dir``); one that does not is told so, and no
job is failed for it. With ``bin_dir``, a job's end on 24.11 is read as on 22.05 (the contract
suite in test_backends.py runs on both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.backends.slurm_cli import SlurmCliBackend, SlurmCliConfig
from bridgehead.config import SlurmSettings
from bridgehead.domain.jobs import JobSpec
from bridgehead.errors import BackendUnavailable
from tests.slurm.conftest import Lab

pytestmark = pytest.mark.slurm


def host_tools_on_gamma(lab: Lab, tmp_path: Path) -> SlurmCliBackend:
    """The host's Slurm 22.05 tools pointed at gamma: a copy of gamma's slurm.conf naming the
    chroot's munge socket, so that the only thing wrong is the release."""
    gamma = lab.cluster("gamma")
    conf = tmp_path / "slurm.conf"
    socket = f"{gamma['chroot']}/run/munge/munge.socket.2"
    conf.write_text(Path(gamma["slurm_conf"]).read_text() + f"AuthInfo=socket={socket}\n")
    return SlurmCliBackend(SlurmSettings(conf=conf, job_root=tmp_path, command_timeout_s=60),
                           SlurmCliConfig(state_dir=tmp_path))


async def test_another_releases_tools_are_refused_naming_bin_dir(lab: Lab,
                                                                 tmp_path: Path) -> None:
    backend = host_tools_on_gamma(lab, tmp_path)
    with pytest.raises(BackendUnavailable, match=r"sbatch is not of the cluster's Slurm "
                       r"release .* set \[agent.slurm\] bin_dir .*\(now: PATH\)"):
        await backend.submit("bh-release", JobSpec(cluster="gamma", command=("true",)))
    with pytest.raises(BackendUnavailable, match="squeue is not of the cluster's Slurm release"):
        await backend.poll(["300000"])
