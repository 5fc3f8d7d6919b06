"""What both Slurm backends share: the state table, the request a JobSpec makes, and caps.

``slurm_cli`` (sbatch/squeue/sacct/scancel) and ``slurm_rest`` (slurmrestd) differ only in
transport. Both turn a JobSpec into one :class:`SlurmRequest` here, so resources, caps,
pass-through options and the Bridgehead tag mean the same on either.

Resources, in Slurm terms:
- ``cores`` is the job's total CPU count, asked as ``--ntasks`` (the LCLS meaning: an MPI step
  launched with ``srun``/``mpirun`` gets one rank per core); ``nodes`` is ``--nodes``;
- ``memory_mb`` is ``--mem`` (per node); ``gpus`` is ``--gpus``; ``walltime_s`` is ``--time``,
  rounded UP to whole minutes (Slurm keeps time limits in minutes);
- pass-through ``--ntasks``, ``--cpus-per-task`` and ``--nodes`` replace the resource values;
  caps (``max_cores``, ``max_nodes``, from the job and from the agent's settings, the smaller
  wins) then clamp the result: ntasks x cpus-per-task <= max_cores, nodes <= max_nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bridgehead.backends.base import NativeStatus, confine_working_dir, read_file_range
from bridgehead.domain.jobs import JobSpec, JobState, Usage
from bridgehead.errors import BackendUnavailable, InvalidSpec, SubmitRejected

STATES: dict[str, JobState] = {
    # still waiting for resources (or put back in the queue): the scheduler has it
    "PENDING": JobState.SUBMITTED,
    "REQUEUED": JobState.SUBMITTED,
    "REQUEUE_FED": JobState.SUBMITTED,
    "REQUEUE_HOLD": JobState.SUBMITTED,
    "RESV_DEL_HOLD": JobState.SUBMITTED,
    # allocated: its processes run (or are paused, or are being torn down)
    "CONFIGURING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    # ended
    "COMPLETED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMED_OUT,
    "DEADLINE": JobState.TIMED_OUT,
    "NODE_FAIL": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "REVOKED": JobState.CANCELLED,
}
"""Every Slurm job state (``squeue -t all``, ``sacct``) to ours. An unknown state raises."""

SETTLING = frozenset({"COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"})
"""States that change within moments: the agent polls again soon instead of at its interval."""

REASONS: dict[str, str] = {
    "TIMEOUT": "walltime exceeded",
    "DEADLINE": "deadline reached before the job could finish",
    "NODE_FAIL": "a node of the job failed",
    "PREEMPTED": "preempted by a higher-priority job",
    "OUT_OF_MEMORY": "out of memory: the job used more than its memory limit",
    "BOOT_FAIL": "the job's nodes failed to boot",
    "SPECIAL_EXIT": "the job ended in SPECIAL_EXIT (requeue-held by its exit code)",
    "REVOKED": "revoked: a sibling of this federated job started on another cluster",
    "CANCELLED": "cancelled",
}

RESERVED_OPTIONS: dict[str, str] = {
    "comment": "Bridgehead tags the job with its id there",
    "output": "Bridgehead chooses the log files it ships",
    "error": "Bridgehead chooses the log files it ships",
    "input": "jobs read no standard input",
    "open-mode": "Bridgehead chooses the log files it ships",
    "chdir": "use the job's working_dir",
    "export": "use the job's env",
    "export-file": "use the job's env",
    "get-user-env": "use the job's env",
    "array": "one Bridgehead job is one Slurm job (submit one job per task)",
    "clusters": "the agent's cluster is chosen by the job's cluster",
    "cluster": "the agent's cluster is chosen by the job's cluster",
    "parsable": "the agent reads sbatch's answer itself",
    "wrap": "use the job's command or script",
    "wait": "the agent follows the job itself",
    "test-only": "the agent must submit the job for real",
    "uid": "jobs run as the agent's user",
    "gid": "jobs run as the agent's group",
    "batch": "the agent chooses how the job starts",
    "mem": "use resources.memory_mb",
    "time": "use resources.walltime_s",
}
"""sbatch options a job may not pass through, and why (the refusal's message)."""

RESERVED_ENV = ("SBATCH_", "SLURM_", "BRIDGEHEAD_")
"""Env names a job may not set: sbatch reads SBATCH_*/SLURM_* as options of its own."""

_INT = re.compile(r"[1-9][0-9]{0,6}")
_NODES = re.compile(r"([1-9][0-9]{0,5})(?:-([1-9][0-9]{0,5}))?")
_NATIVE_ID = re.compile(r"[0-9]{1,12}")
_MEMORY_KILL = re.compile(rb"Exceeded (job|step) memory limit|oom[-_ ]kill", re.IGNORECASE)
_ARGV_WRAPPER = '#!/bin/sh\n# Bridgehead: run the argv given to this script, as given\nexec "$@"\n'
ARGV_FROM_ENV = r"""#!/bin/sh
# Bridgehead: run the argv held in BRIDGEHEAD_ARGC and BRIDGEHEAD_ARGV_<i>, as given. eval only
# sees this fixed text with $i, a number: the words themselves are never parsed by a shell.
i=0
n="$BRIDGEHEAD_ARGC"
set --
while [ "$i" -lt "$n" ]; do
    eval "set -- \"\$@\" \"\${BRIDGEHEAD_ARGV_$i}\""
    unset "BRIDGEHEAD_ARGV_$i"
    i=$((i + 1))
done
unset BRIDGEHEAD_ARGC
exec "$@"
"""
"""The script of a command job where the transport cannot pass script arguments (slurmrestd
22.05 crashes on its ``argv`` field): the words travel in the environment (:func:`argv_env`)."""


def argv_env(argv: Sequence[str]) -> dict[str, str]:
    """The environment :data:`ARGV_FROM_ENV` rebuilds ``argv`` from."""
    env = {f"BRIDGEHEAD_ARGV_{i}": word for i, word in enumerate(argv)}
    env["BRIDGEHEAD_ARGC"] = str(len(argv))
    return env


async def run_tool(argv: Sequence[str], *, env: Mapping[str, str], timeout_s: float,
                   bin_dir: Path | None = None, stdin: bytes | None = None
                   ) -> tuple[int, bytes, bytes]:
    """Run one Slurm command-line tool (an argv list, never a shell): (exit code, stdout,
    stderr). BackendUnavailable if it cannot start or does not answer in ``timeout_s``."""
    name = argv[0]
    program = str(bin_dir / name) if bin_dir else name
    try:
        proc = await asyncio.create_subprocess_exec(
            program, *argv[1:], env=dict(env),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise BackendUnavailable(f"cannot run {name}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise BackendUnavailable(f"{name} did not answer in {timeout_s:.0f}s") from None
    return proc.returncode or 0, out, err


def tagged(tags: Sequence[str], jobs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """{tag: native ids, oldest first} from (native id, comment) pairs, for each of ``tags``."""
    found: dict[str, set[str]] = {tag: set() for tag in tags}
    for native_id, comment in jobs:
        if comment in found and _NATIVE_ID.fullmatch(native_id):
            found[comment].add(native_id)
    return {tag: sorted(ids, key=int) for tag, ids in found.items()}


def native_ids(ids: Iterable[str]) -> list[str]:
    """The distinct well-formed Slurm job ids among ``ids`` (nothing else is asked about)."""
    return [i for i in dict.fromkeys(ids) if _NATIVE_ID.fullmatch(i)]


class JobFiles:
    """A job's files on the file system the head node shares with the compute nodes: its
    stdout/stderr at ``<root>/logs/<native id>.out|.err`` (sbatch's ``%j``), and, unless the job
    names a working dir (which must be under ``allowed_roots``), ``<root>/work/<job id>/``."""

    def __init__(self, root: Path, allowed_roots: Sequence[Path]) -> None:
        self.logs, self.work, self.allowed_roots = root / "logs", root / "work", allowed_roots

    def request(self, job_id: str, spec: JobSpec, *, caps: Caps,
                base_env: Mapping[str, str]) -> SlurmRequest:
        """The job's request, its directories made (blocking: call it in a thread);
        SubmitRejected for what Slurm must not be asked."""
        for directory in (self.logs, self.work / job_id):
            directory.mkdir(parents=True, exist_ok=True)
        working_dir = str(self.work / job_id)
        if spec.working_dir is not None:
            working_dir = confine_working_dir(spec.working_dir, self.allowed_roots)
        try:
            return build_request(job_id, spec, caps=caps, working_dir=working_dir,
                                 stdout=str(self.logs / "%j.out"),
                                 stderr=str(self.logs / "%j.err"), base_env=base_env)
        except InvalidSpec as exc:
            raise SubmitRejected(exc.message) from exc

    async def explain(self, native_id: str, status: NativeStatus) -> NativeStatus:
        """``status``, with the reason "out of memory" for a job SIGKILLed after slurmstepd
        said so in its stderr: without cgroups, Slurm's memory enforcement (jobacct_gather's
        OverMemoryKill) ends such a job FAILED 0:9, not OUT_OF_MEMORY."""
        if status.state is not JobState.FAILED or status.exit_code != 128 + 9:
            return status
        path = self.logs / f"{native_id}.err"
        size = await asyncio.to_thread(lambda: path.stat().st_size if path.exists() else 0)
        tail = await self.read_log(native_id, "stderr", max(0, size - 8192), 8192)
        if _MEMORY_KILL.search(tail):
            return replace(status, reason=REASONS["OUT_OF_MEMORY"])
        return status

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        if not _NATIVE_ID.fullmatch(native_id):
            return b""
        path = self.logs / f"{native_id}.{'out' if stream == 'stdout' else 'err'}"
        return await asyncio.to_thread(read_file_range, path, offset, limit)


@dataclass(frozen=True, slots=True, kw_only=True)
class Caps:
    """Upper bounds on what one job may ask (LCLS's per-task ``max_cores``/``max_nodes``)."""

    max_cores: int | None = None
    max_nodes: int | None = None

    def tighter(self, other: Caps) -> Caps:
        return Caps(max_cores=_least(self.max_cores, other.max_cores),
                    max_nodes=_least(self.max_nodes, other.max_nodes))


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmRequest:
    """One batch job, transport-neutral: the script, its arguments, its options."""

    tag: str
    name: str
    script: str
    argv: tuple[str, ...]
    env: dict[str, str]
    working_dir: str
    stdout: str
    stderr: str
    ntasks: int
    cpus_per_task: int
    nodes: str
    memory_mb: int | None = None
    gpus: int = 0
    time_minutes: int | None = None
    partition: str | None = None
    account: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)
    """The job's other pass-through options, verbatim and in order."""

    def sbatch_options(self) -> list[str]:
        opts = [
            f"--job-name={self.name}", f"--comment={self.tag}", f"--chdir={self.working_dir}",
            f"--output={self.stdout}", f"--error={self.stderr}", "--export=ALL",
            f"--ntasks={self.ntasks}", f"--cpus-per-task={self.cpus_per_task}",
            f"--nodes={self.nodes}",
        ]
        if self.memory_mb:
            opts.append(f"--mem={self.memory_mb}M")
        if self.gpus:
            opts.append(f"--gpus={self.gpus}")
        if self.time_minutes:
            opts.append(f"--time={self.time_minutes}")
        if self.partition:
            opts.append(f"--partition={self.partition}")
        if self.account:
            opts.append(f"--account={self.account}")
        return opts + list(self.extra)


def build_request(job_id: str, spec: JobSpec, *, caps: Caps, working_dir: str,
                  stdout: str, stderr: str, base_env: Mapping[str, str]) -> SlurmRequest:
    """The Slurm request for ``spec``; InvalidSpec (the job fails, with this message) for
    options or env that Bridgehead owns, or values Slurm would misread."""
    for key in spec.env:
        if key.startswith(RESERVED_ENV):
            raise InvalidSpec(f"env {key}: names starting with {', '.join(RESERVED_ENV)} "
                              "are reserved on Slurm")
    r = spec.resources
    ntasks, cpus, nodes = r.cores, 1, str(r.nodes)
    extra: list[str] = []
    for option in spec.scheduler_options:
        name, _, value = option[2:].partition("=")
        if name in RESERVED_OPTIONS:
            raise InvalidSpec(f"scheduler option --{name} is not allowed: "
                              f"{RESERVED_OPTIONS[name]}")
        if name == "ntasks":
            ntasks = _positive(option, value)
        elif name == "cpus-per-task":
            cpus = _positive(option, value)
        elif name == "nodes":
            if not _NODES.fullmatch(value):
                raise InvalidSpec(f"scheduler option {option!r}: expected --nodes=N or N-M")
            nodes = value
        else:
            extra.append(option)
    job_caps = Caps(max_cores=r.max_cores, max_nodes=r.max_nodes)
    ntasks, cpus, nodes = clamp(ntasks, cpus, nodes, caps.tighter(job_caps))
    env = dict(base_env)
    env.update(spec.env)
    env["BRIDGEHEAD_JOB_ID"] = job_id
    return SlurmRequest(
        tag=job_id, name=_job_name(spec.name or f"bh-{job_id}"),
        script=spec.script if spec.script is not None else _ARGV_WRAPPER,
        argv=tuple(spec.command), env=env, working_dir=spec.working_dir or working_dir,
        stdout=stdout, stderr=stderr, ntasks=ntasks, cpus_per_task=cpus, nodes=nodes,
        memory_mb=r.memory_mb, gpus=r.gpus,
        time_minutes=math.ceil(r.walltime_s / 60) if r.walltime_s else None,
        partition=r.partition, account=r.account, extra=tuple(extra),
    )


def clamp(ntasks: int, cpus_per_task: int, nodes: str, caps: Caps) -> tuple[int, int, str]:
    """Apply ``caps``: cores (ntasks x cpus-per-task) first lose tasks, then CPUs per task;
    a node range keeps its minimum and loses its top."""
    if caps.max_cores is not None and ntasks * cpus_per_task > caps.max_cores:
        cpus_per_task = min(cpus_per_task, caps.max_cores)
        ntasks = max(1, caps.max_cores // cpus_per_task)
    if caps.max_nodes is not None:
        low, _, high = nodes.partition("-")
        lo, hi = int(low), int(high or low)
        lo, hi = min(lo, caps.max_nodes), min(hi, caps.max_nodes)
        nodes = str(lo) if lo == hi else f"{lo}-{hi}"
    if int(nodes.partition("-")[0]) > ntasks:
        nodes = str(ntasks)  # Slurm refuses more nodes than tasks
    return ntasks, cpus_per_task, nodes


def exit_status(exit_code: str | None) -> tuple[int | None, int | None]:
    """Slurm's ``"exit:signal"`` (sacct ExitCode) as (exit code, signal); (None, None) if
    absent. A signal gives the shell's convention, 128 + signal, as the exit code."""
    if not exit_code:
        return None, None
    code, _, sig = exit_code.partition(":")
    try:
        signum = int(sig or 0)
        return (128 + signum, signum) if signum else (int(code), None)
    except ValueError:
        return None, None


def exit_from_wait_status(raw: int | None) -> tuple[int | None, int | None]:
    """A raw wait status (slurmrestd's ``exit_code``, the epilog's ``SLURM_JOB_EXIT_CODE``)."""
    if raw is None:
        return None, None
    signum = raw & 0x7F
    return (128 + signum, signum) if signum else ((raw >> 8) & 0xFF, None)


def reason_for(slurm_state: str, exit_code: int | None, signum: int | None) -> str | None:
    """The human reason stored on the job for a terminal Slurm state."""
    if slurm_state in REASONS:
        return REASONS[slurm_state]
    if slurm_state == "FAILED":
        if signum:
            return f"killed by signal {signum}"
        return f"exit code {exit_code}" if exit_code is not None else "failed"
    return None


def base_state(raw: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``COMPLETING+`` style flags dropped."""
    return raw.split()[0].rstrip("+").upper() if raw.strip() else ""


def to_state(raw: str) -> JobState:
    state = base_state(raw)
    try:
        return STATES[state]
    except KeyError:
        raise ValueError(f"unknown Slurm job state {raw!r}") from None


def parse_memory_mb(text: str) -> float | None:
    """sacct's MaxRSS (``1234K``, ``12M``, ``1.5G``, or bytes) in MiB."""
    text = text.strip()
    if not text:
        return None
    units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
    try:
        if text[-1].upper() in units:
            return float(text[:-1]) * units[text[-1].upper()]
        return float(text) / (1 << 20)
    except ValueError:
        return None


def usage_of(elapsed_s: float, cpus: int, nodes: int, max_rss_mb: float | None) -> Usage:
    return Usage(elapsed_s=float(elapsed_s), cores=cpus, nodes=nodes, max_rss_mb=max_rss_mb)


def _job_name(name: str) -> str:
    """Slurm job names: printable, no commas or newlines, at most 100 chars."""
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)[:100] or "bridgehead"


def _positive(option: str, value: str) -> int:
    if not _INT.fullmatch(value):
        raise InvalidSpec(f"scheduler option {option!r}: expected a positive integer")
    return int(value)


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)
