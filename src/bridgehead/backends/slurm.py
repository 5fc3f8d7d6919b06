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
import glob
import json
import math
import os
import pwd
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridgehead.backends.base import NativeStatus, confine_working_dir, read_file_range
from bridgehead.domain import sbatch
from bridgehead.domain.jobs import JobSpec, JobState, Resources, Usage, array_indices
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
    "NODE_FAIL": JobState.LOST,  # with infrastructure: see INFRASTRUCTURE
    "PREEMPTED": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.LOST,
    "SPECIAL_EXIT": JobState.FAILED,
    "REVOKED": JobState.CANCELLED,
}
"""Every Slurm job state (``squeue -t all``, ``sacct``) to ours. An unknown state raises."""

INFRASTRUCTURE = frozenset({"NODE_FAIL", "BOOT_FAIL"})
"""States of an attempt lost to its nodes (a node died, or never booted): LOST with
``infrastructure``, so Bridgehead runs the job again once, under its own cap and not the user's
retries. Slurm would requeue such a job by itself (two runs of one attempt): every job is
submitted with ``--no-requeue`` unless it asks for requeueing itself (see :func:`build_request`),
so it ends in one of these states instead."""

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
    "array": "give the job's array (bridgehead submit --array): each element is then a "
             "Bridgehead job of its own",
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
_NATIVE_ID = re.compile(r"[0-9]{1,12}(?:_[0-9]{1,10})?")
"""A Slurm job id, or an array element's (``JOBID_INDEX``)."""
_MEMORY_KILL = re.compile(rb"Exceeded (job|step) memory limit|oom[-_ ]kill", re.IGNORECASE)
_LOG_NAME = {False: "%j", True: "%A_%a"}
"""A job's log file name: its id, or an array element's JOBID_INDEX (its native id)."""
_AWAITING = ".node"
"""The suffix of the file keeping a ``%N`` log path until the job has a node."""
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
        self._awaiting: set[str] = set()
        """Native ids whose log path names their node, not known yet (see place_logs)."""
        self._scanned = False
        self._node_of: dict[str, str] = {}
        """The node of each awaiting job seen started (its file may not be there yet)."""

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
            request = build_request(
                job_id, spec, caps=caps, working_dir=working_dir,
                stdout=str(self.logs / f"{_LOG_NAME[bool(spec.array)]}.out"),
                stderr=str(self.logs / f"{_LOG_NAME[bool(spec.array)]}.err"), base_env=base_env)
        except InvalidSpec as exc:
            raise SubmitRejected(exc.message) from exc
        _check_array_logs(request)
        return request

    def link_logs(self, request: SlurmRequest, native_id: str) -> None:
        """Where the script's own ``-o``/``-e`` put the job's output, point
        ``<logs>/<native id>.out|.err`` at those files (sbatch's patterns expanded, relative
        to the working dir), so the logs are read from the paths the user asked for. Blocking.
        With ``-o`` and no ``-e`` both streams are in the ``-o`` file, shipped as stdout.
        A path naming the job's node (``%N``) is linked by :meth:`place_logs` once the job has
        one: until then ``<logs>/.<native id>.<out|err>.node`` keeps what it needs."""
        user = pwd.getpwuid(os.getuid()).pw_name
        for option, pattern, ext in (("output", request.stdout, "out"),
                                     ("error", request.stderr, "err")):
            if option not in request.from_script or (ext == "err" and pattern == request.stdout):
                continue
            for one, where in _log_targets(request, pattern, native_id, user):
                if sbatch.needs_node(pattern):
                    self._await_node(one, ext, where)
                else:
                    self._link(one, ext, sbatch.log_path(**where))

    def _link(self, native_id: str, ext: str, target: str) -> None:
        link, tmp = self.logs / f"{native_id}.{ext}", self.logs / f".{native_id}.{ext}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def _await_node(self, native_id: str, ext: str, where: Mapping[str, Any]) -> None:
        path = self.logs / f".{native_id}.{ext}{_AWAITING}"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(where))
        os.replace(tmp, path)
        self._awaiting.add(native_id)

    async def place_logs(self, nodes: Mapping[str, str | None],
                         ended: Collection[str] = ()) -> None:
        """Link the logs whose path names the node (``%N``) of each job of ``nodes`` (native
        id: the node its batch script runs on, None while it has none or it is not said; a
        node once said is kept) once the file is there;
        for the jobs of ``ended``, link what can be named and keep nothing more (one cancelled
        while pending never had a file). Costs nothing for jobs with no such path (after one
        scan of the logs directory, for the jobs an earlier agent submitted).

        slurmstepd writes ``%N`` as its host's short name, which is the Slurm node's name on
        most clusters; where the two differ (``NodeHostname``, several slurmd on one host), the
        file the pattern matches with any name there (the newest) is taken once the job has
        ended."""
        awaiting = await self.awaiting_node({*nodes, *ended})
        self._node_of.update((i, n) for i in awaiting if (n := nodes.get(i)))
        todo = {i: self._node_of.get(i) for i in awaiting if i in self._node_of or i in ended}
        if todo:
            await asyncio.to_thread(self._place, todo, frozenset(ended))
            for i in set(self._node_of) - self._awaiting:
                del self._node_of[i]

    async def node_unknown(self, native_ids: Iterable[str]) -> set[str]:
        """Those of ``native_ids`` whose log path waits for a node not yet seen."""
        return {i for i in await self.awaiting_node(native_ids) if i not in self._node_of}

    async def awaiting_node(self, native_ids: Iterable[str]) -> set[str]:
        """Those of ``native_ids`` with a log path that waits for their node (``%N``)."""
        if not self._scanned:
            self._awaiting |= await asyncio.to_thread(self._scan_awaiting)
            self._scanned = True
        return self._awaiting.intersection(native_ids)

    def _scan_awaiting(self) -> set[str]:
        if not self.logs.is_dir():
            return set()
        return {name[1:-len(_AWAITING)].rpartition(".")[0] for name in os.listdir(self.logs)
                if name.startswith(".") and name.endswith(_AWAITING)}

    def _place(self, nodes: Mapping[str, str | None], ended: Collection[str]) -> None:
        for native_id, node in nodes.items():
            waiting = False
            for ext in ("out", "err"):
                path = self.logs / f".{native_id}.{ext}{_AWAITING}"
                try:
                    where = json.loads(path.read_text())
                except FileNotFoundError:
                    continue
                named = sbatch.log_path(**where, node=node) if node else None
                target = named if named and os.path.exists(named) else None
                if target is None and native_id not in ended:
                    waiting = True  # started, its file not opened yet: look again next poll
                    continue
                target = target or (_written(where) if named else None)
                if named:  # a job that never had a node never opened a file
                    self._link(native_id, ext, target or named)
                path.unlink(missing_ok=True)
            if not waiting:
                self._awaiting.discard(native_id)

    def relink_logs(self, job_id: str, spec: JobSpec, native_id: str, *, caps: Caps,
                    base_env: Mapping[str, str]) -> None:
        """:meth:`link_logs` for a job found by its tag after a crash (the agent may have died
        between the scheduler taking the job and linking its logs). Blocking."""
        self.link_logs(self.request(job_id, spec, caps=caps, base_env=base_env), native_id)

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


def _written(where: Mapping[str, Any]) -> str | None:
    """The file a ``%N`` log path names with any host name (the newest, if several), or
    None: where slurmstepd's host name is not the Slurm node's."""
    anywhere = glob.escape(sbatch.log_path(**where, node="\0")).replace("\0", "*")
    newest: tuple[int, str] | None = None
    for found in glob.glob(anywhere):
        with contextlib.suppress(OSError):
            newest = max(newest or (0, ""), (os.stat(found).st_mtime_ns, found))
    return newest[1] if newest else None


def _log_targets(request: SlurmRequest, pattern: str, native_id: str,
                 user: str) -> list[tuple[str, dict[str, Any]]]:
    """(native id, :func:`sbatch.log_path`'s arguments for it): the job's, or each array
    element's (``N_<index>``, with ``%A`` the array's id and ``%a`` the index)."""
    common = {"pattern": pattern, "working_dir": request.working_dir, "name": request.name,
              "user": user}
    if request.array is None:
        return [(native_id, {**common, "job_id": native_id})]
    return [(f"{native_id}_{i}", {**common, "job_id": f"{native_id}_{i}",
                                  "array_job_id": native_id, "array_task_id": str(i)})
            for i in array_indices(request.array)[0]]


def _check_array_logs(request: SlurmRequest) -> None:
    """SubmitRejected for an array whose ``-o``/``-e`` uses ``%j``: each element's own job id,
    which Slurm picks when the element starts (the head node cannot name its file)."""
    for option, pattern in (("output", request.stdout), ("error", request.stderr)):
        if request.array is not None and option in request.from_script and re.search(
                r"%[0-9]*[jJ]", pattern.replace("%%", "")):
            raise SubmitRejected(f"#SBATCH --{option}={pattern}: %j in a job array's log "
                                 "path is each element's own job id, which Bridgehead cannot "
                                 "know to read its log: use %A_%a (array id, index)")


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
    from_script: frozenset[str] = frozenset()
    """Options the script's own #SBATCH directives give with the values above: not repeated
    on sbatch's command line (which would beat them), so the script's words stand."""
    args: tuple[str, ...] = ()
    """The script's arguments (``sbatch job.sh a b c``)."""
    array: str | None = None
    """A job array's indices (``--array``): one submission, one Slurm job per element."""
    no_requeue: bool = True
    """Submit with ``--no-requeue`` (Bridgehead re-runs a job its node lost, see
    :data:`INFRASTRUCTURE`); False when the job says itself (:func:`requeue_said`)."""

    def own_flags(self) -> list[str]:
        """Bridgehead's own flag options (both backends send them)."""
        return ["--no-requeue"] if self.no_requeue else []

    def sbatch_options(self) -> list[str]:
        """sbatch's command line: Bridgehead's own options, and each resource unless the
        script's directives already say it (then the script's words stand)."""
        opts = [f"--comment={self.tag}", f"--chdir={self.working_dir}", "--export=ALL"]
        wanted = (
            ("job-name", self.name), ("output", self.stdout), ("error", self.stderr),
            ("ntasks", self.ntasks), ("cpus-per-task", self.cpus_per_task),
            ("nodes", self.nodes), ("mem", f"{self.memory_mb}M" if self.memory_mb else None),
            ("gpus", self.gpus or None), ("time", self.time_minutes),
            ("partition", self.partition), ("account", self.account))
        opts += [f"--{option}={value}" for option, value in wanted
                 if value is not None and option not in self.from_script]
        if self.array is not None:
            opts.append(f"--array={self.array}")
        return opts + self.own_flags() + list(self.extra)


def build_request(job_id: str, spec: JobSpec, *, caps: Caps, working_dir: str,
                  stdout: str, stderr: str, base_env: Mapping[str, str]) -> SlurmRequest:
    """The Slurm request for ``spec``; InvalidSpec (the job fails, with this message) for
    options or env that Bridgehead owns, or values Slurm would misread."""
    for key in spec.env:
        if key.startswith(RESERVED_ENV):
            raise InvalidSpec(f"env {key}: names starting with {', '.join(RESERVED_ENV)} "
                              "are reserved on Slurm")
    want = sbatch.asked(sbatch.directives(spec.script)) if spec.script else sbatch.Asked()
    r = spec.resources
    ntasks, cpus, nodes = shape(r, want)
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
    said = from_script(want, spec, ntasks=ntasks, cpus=cpus, nodes=nodes)
    return SlurmRequest(
        tag=job_id, name=want.name if want.name and "job-name" in said else _job_name(
            spec.name or f"bh-{job_id}"),
        script=spec.script if spec.script is not None else _ARGV_WRAPPER,
        argv=tuple(spec.command), args=spec.args, env=env,
        working_dir=spec.working_dir or working_dir,
        stdout=want.output or stdout, stderr=want.error or want.output or stderr,
        ntasks=ntasks, cpus_per_task=cpus, nodes=nodes,
        memory_mb=r.memory_mb, gpus=r.gpus,
        time_minutes=math.ceil(r.walltime_s / 60) if r.walltime_s else None,
        partition=r.partition, account=r.account, extra=tuple(extra), from_script=said,
        array=spec.array, no_requeue=not requeue_said(spec),
    )


def requeue_said(spec: JobSpec) -> bool:
    """Does the job say itself whether Slurm may requeue it (``--requeue``/``--no-requeue``,
    passed through or in an ``#SBATCH`` line)? Then its word stands: a job asking
    ``--requeue`` is requeued by Slurm when its node dies (one Bridgehead attempt, run again by
    Slurm under the same job id), and Bridgehead adds nothing that would silently override it."""
    said = {option[2:].partition("=")[0] for option in spec.scheduler_options}
    if spec.script:
        said |= {d.option for d in sbatch.directives(spec.script)}
    return bool(said & {"requeue", "no-requeue"})


def shape(r: Resources, want: sbatch.Asked) -> tuple[int, int, str]:
    """(ntasks, cpus-per-task, nodes) for ``r``: the script's own shape when its directives
    ask for these cores (and nodes), else ``r.cores`` tasks of the script's CPUs per task
    where they divide (an explicit or capped count wins over the directive), else of one."""
    nodes = want.nodes if want.nodes and want.min_nodes == r.nodes else str(r.nodes)
    if want.cores is None:
        return r.cores, 1, nodes
    if want.cores == r.cores:
        return want.tasks or 1, want.cpus_per_task or 1, nodes
    cpus = min(want.cpus_per_task or 1, r.cores)
    return (r.cores // cpus, cpus, nodes) if r.cores % cpus == 0 else (r.cores, 1, nodes)


def from_script(want: sbatch.Asked, spec: JobSpec, *, ntasks: int, cpus: int,
                nodes: str) -> frozenset[str]:
    """The sbatch options whose final value the script's directives already give."""
    r = spec.resources
    pairs = {"ntasks": (want.tasks, ntasks), "cpus-per-task": (want.cpus_per_task, cpus),
             "nodes": (want.nodes, nodes), "mem": (want.memory_mb, r.memory_mb),
             "time": (want.walltime_s, r.walltime_s), "gpus": (want.gpus, r.gpus),
             "partition": (want.partition, r.partition), "account": (want.account, r.account)}
    said = {option for option, (asked, final) in pairs.items()
            if asked is not None and asked == final}
    if want.name is not None and spec.name in (None, want.name):
        said.add("job-name")
    if want.output is not None:
        said |= {"output", "error"}  # with no -e, sbatch writes stderr to the -o file
    if want.error is not None:
        said.add("error")
    return frozenset(said)


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
