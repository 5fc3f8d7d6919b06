"""What the Slurm benchmark's parts share: its settings, the lab's clusters and their Slurm
commands (argv lists, never a shell), and the sweep that cancels a run's leftover jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import BenchError, console

from bridgehead.domain.arrays import array_job_id

ROOT = Path(__file__).resolve().parents[1]
LAB_SCRIPT = ROOT / "scripts" / "slurm-lab"
LAB_DIR = Path(os.environ.get("SLURM_LAB_DIR", "/tmp/bh-slurm-lab"))
ACTIVE_STATES = "PENDING,CONFIGURING,RUNNING,COMPLETING,SUSPENDED,REQUEUED,RESIZING,SIGNALING"
"""squeue --states for "still in flight" (the baseline's loop ends when none of its jobs is)."""
SLURM_COMMAND_TIMEOUT_S = 60.0


class LabDown(RuntimeError):
    """The Slurm lab is down and could not be started."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    jobs: int
    """Throughput jobs, each way."""
    held_jobs: int
    """Jobs in flight for the poll-cycle count."""
    latency_jobs: int
    poll_interval_s: float
    quick: bool
    output: Path
    logs: Path | None
    """Where to copy the server's and agents' logs (else they go with the temporary dir)."""
    start_lab: bool
    array_elements: int = 1000
    """(4): the array's elements, and the baseline's sbatch calls."""
    clusters: tuple[str, ...] = ("alpha",)
    backends: tuple[str, ...] = ("slurm_cli", "slurm_rest")


@dataclass(frozen=True, slots=True, kw_only=True)
class Lab:
    """One cluster of the lab, as ``lab.json`` describes it."""

    name: str
    slurm_conf: str
    wake_dir: str
    hook_dir: str
    """Where the lab's hook.cmd runs executable drop-ins on every job start and end."""
    cpus: int
    rest_url: str
    bin_dir: str | None = None
    """The cluster's own Slurm commands (gamma's 24.11 CLI runs in its chroot)."""
    rest_token_file: str | None = None
    job_root: str | None = None
    """Where job files must be (gamma's jobs see only the lab's dirs); None: anywhere."""

    def env(self) -> dict[str, str]:
        """The environment of a Slurm client command on this cluster."""
        return {**os.environ, "SLURM_CONF": self.slurm_conf}

    def cmd(self, name: str) -> str:
        return str(Path(self.bin_dir) / name) if self.bin_dir else name

    def agent_env(self) -> dict[str, str]:
        """The BRIDGEHEAD_SLURM__* settings of an agent on this cluster."""
        env = {"BRIDGEHEAD_SLURM__CONF": self.slurm_conf,
               "BRIDGEHEAD_SLURM__REST_URL": self.rest_url}
        if self.bin_dir:
            env["BRIDGEHEAD_SLURM__BIN_DIR"] = self.bin_dir
        if self.rest_token_file:
            env["BRIDGEHEAD_SLURM__REST_TOKEN_FILE"] = self.rest_token_file
        return env


@dataclass(frozen=True, slots=True)
class Run:
    """What one benchmark run shares: its lab, scratch dir and the prefix of its job names."""

    lab: Lab
    work: Path
    prefix: str

    @property
    def scratch(self) -> Path:
        """Where this run's job files go (under the cluster's job root when it has one)."""
        path = Path(self.lab.job_root) / self.prefix if self.lab.job_root else self.work
        path.mkdir(parents=True, exist_ok=True)
        return path



# -- the lab and Slurm commands -----------------------------------------------------------------
def load_lab(name: str = "alpha", *, start: bool = True) -> Lab:
    """Cluster ``name`` of the lab; the lab is started (if ``start``) when ``status`` says it
    is down."""
    if _lab("status").returncode != 0:
        if not start:
            raise LabDown("scripts/slurm-lab status says the lab is down (--no-start-lab)")
        console.log("the Slurm lab is down; starting it: scripts/slurm-lab up")
        started = _lab("up", timeout=900)
        if started.returncode != 0:
            last = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LabDown(f"scripts/slurm-lab up failed ({last[0]})")
    try:
        info = json.loads((LAB_DIR / "lab.json").read_text())["clusters"][name]
        hook_dir = info.get("hook_dir") or str(Path(info["hook_cmd"]).parent / "hook.d")
        lab = Lab(name=name, slurm_conf=info["slurm_conf"], wake_dir=info["wake_dir"],
                  hook_dir=hook_dir, cpus=int(info["cpus"]), rest_url=info["rest_url"],
                  bin_dir=info.get("bin_dir"), rest_token_file=info.get("rest_token_file"),
                  job_root=info.get("job_root"))
    except (OSError, ValueError, KeyError) as exc:
        raise LabDown(f"{LAB_DIR / 'lab.json'} has no cluster {name}: {exc!r}") from exc
    if "hook.d" not in Path(info["hook_cmd"]).read_text():
        raise LabDown(f"{info['hook_cmd']} does not run hook.d drop-ins: an older lab "
                      "(scripts/slurm-lab up rewrites it)")
    return lab


def _lab(command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["bash", str(LAB_SCRIPT), command], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabDown(f"scripts/slurm-lab {command}: {exc}") from exc


async def slurm(lab: Lab, *argv: str, cwd: Path | None = None, check: bool = True) -> str:
    """One Slurm client command (an argv list, no shell); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        lab.cmd(argv[0]), *argv[1:], env=lab.env(), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SLURM_COMMAND_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise BenchError(f"{argv[0]} did not answer in {SLURM_COMMAND_TIMEOUT_S:.0f} s") from None
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])}...: exit {proc.returncode}: "
                         f"{err.decode(errors='replace').strip()[:300]}")
    return out.decode(errors="replace")


async def active_jobs(lab: Lab) -> dict[str, str]:
    """{native id: job name} of every pending or running job on the cluster."""
    out = await slurm(lab, "squeue", "--noheader", f"--states={ACTIVE_STATES}",
                      "--format=%i|%j")
    return dict(line.strip().split("|", 1) for line in out.splitlines() if "|" in line)


async def cancel(lab: Lab, ids: Sequence[str]) -> None:
    for lo in range(0, len(ids), 500):
        await slurm(lab, "scancel", *ids[lo:lo + 500], check=False)


async def cancel_ours(run: Run) -> int:
    """Cancel this run's jobs still pending or running; how many there were."""
    ours = sorted({array_job_id(i) for i, name in (await active_jobs(run.lab)).items()
                   if name.startswith(run.prefix)})  # an array's pending N_[0-999] is N
    await cancel(run.lab, ours)
    return len(ours)


async def clean_up(run: Run) -> None:
    """Cancel what is left of this run on the cluster; a failure here is only reported."""
    try:
        left = await cancel_ours(run)
    except (BenchError, OSError, TimeoutError) as exc:
        console.log(f"[yellow]warning:[/] could not cancel this run's jobs "
                    f"(names {run.prefix}-*): {exc}")
        return
    if left:
        console.log(f"cancelled {left} leftover jobs of this run on {run.lab.name}")


async def foreign_jobs(run: Run, since: float) -> list[str]:
    """Names of other users' jobs that were on the cluster since ``since`` (they skew the
    figures: alpha has 2 CPUs)."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
    out = await slurm(run.lab, "sacct", "--noheader", "--parsable2", "--allusers",
                      "--allocations", f"--starttime={start}", "--format=JobIDRaw,JobName",
                      check=False)
    names = [line.partition("|")[2] for line in out.splitlines() if "|" in line]
    return [name for name in names if not name.startswith(run.prefix)]


async def slurm_version(lab: Lab) -> str:
    return (await slurm(lab, "sbatch", "--version", check=False)).strip()

