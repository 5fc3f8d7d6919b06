"""``[agent.slurm] bin_dir``: where the Slurm tools are (a site's /opt/slurm/bin, or the lab's
wrappers for Slurm 24.11). Refused at load when it is not an absolute directory, and by the CLI
backend when a tool it runs is missing there; each error names the setting and the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.backends.slurm_cli import TOOLS, SlurmCliBackend, SlurmCliConfig
from bridgehead.config import AgentSettings, SlurmSettings
from bridgehead.errors import ConfigError


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bin_dir: str) -> AgentSettings:
    monkeypatch.setenv("BRIDGEHEAD_HOME", str(tmp_path))
    monkeypatch.setenv("BRIDGEHEAD_SLURM__BIN_DIR", bin_dir)
    return AgentSettings.load()


def test_an_absolute_directory_is_taken_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load(monkeypatch, tmp_path, str(tmp_path)).slurm.bin_dir == tmp_path


@pytest.mark.parametrize("value, message", [
    ("opt/slurm/bin", "slurm.bin_dir: .*must be an absolute path, not 'opt/slurm/bin'"),
    ("/no/such/slurm/bin", "slurm.bin_dir: .*'/no/such/slurm/bin' is not a directory"),
])
def test_a_relative_or_missing_directory_is_refused_naming_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(monkeypatch, tmp_path, value)


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "sbatch").write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        SlurmSettings(bin_dir=tmp_path / "sbatch")


def test_the_cli_backend_refuses_a_bin_dir_without_its_tools(tmp_path: Path) -> None:
    for tool in ("sbatch", "squeue"):
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    (tmp_path / "sacct").write_text("#!/bin/sh\n")  # not executable
    with pytest.raises(ConfigError, match=f"bin_dir {tmp_path} has no executable sacct, scancel"):
        SlurmCliBackend(SlurmSettings(bin_dir=tmp_path), SlurmCliConfig(state_dir=tmp_path))
    for tool in TOOLS:
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    assert SlurmCliBackend(SlurmSettings(bin_dir=tmp_path),
                           SlurmCliConfig(state_dir=tmp_path)).settings.bin_dir == tmp_path
