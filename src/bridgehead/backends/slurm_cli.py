"""Slurm through its command-line tools on the head node: sbatch, squeue, sacct, scancel.

Every command is an argv list (never a shell string) run with a clean environment: the
agent's own variables (its token among them) never reach sbatch or the job. A job's argv is
given to a two-line wrapper script as its arguments, so shell metacharacters stay literal.

One poll cycle costs at most two commands whatever the number of jobs: ONE ``squeue`` for
all in-flight jobs and ONE ``sacct`` for those that left the queue, ended in it, or are
completing (exit code, usage). A job missing from squeue is never taken as succeeded: only
sacct says how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bridgehead.backends import slurm
from bridgehead.backends.base import NativeStatus
from bridgehead.config import SlurmSettings
from bridgehead.domain import sbatch
from bridgehead.domain.arrays import array_job_id, expand_native_ids
from bridgehead.domain.clusters import Capacity
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.errors import BackendError, BackendUnavailable, ConfigError, SubmitRejected

logger = logging.getLogger(__name__)

_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Zero Bytes were transmitted|Unable to establish|Transport endpoint|"
    r"Slurm backup controller in standby|slurmdbd.*(down|not responding)|"
    r"Problem talking to the database|Connection timed out|Communication connection failure",
    re.IGNORECASE,
)
_MISMATCH = re.compile(r"Incompatible versions of client and server code|"
                       r"Invalid Protocol Version", re.IGNORECASE)
"""A client of another Slurm release than the controller's (22.05's tools and 24.11's)."""
_ENV_KEEP = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ")
_SACCT_FIELDS = "JobID,State,ExitCode,ElapsedRaw,AllocCPUS,NNodes,MaxRSS,Start,NodeList"
"""JobID, not JobIDRaw: an array element's is JOBID_INDEX (its raw id is a number of its own).
NodeList: the batch step's is the node its script ran on (a ``%N`` log path's)."""
TOOLS = ("sbatch", "squeue", "sacct", "scancel")
"""The commands this backend runs."""
STEP_GRACE_S = 10.0
"""How long to wait for a signalled job's batch-step record (its signal) in accounting."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmCliConfig:
    """What the backend needs besides :class:`SlurmSettings`."""

    state_dir: Path
    allowed_roots: tuple[Path, ...] = ()


class SlurmCliBackend:
    kind = "slurm_cli"
    files_shared = True

    def __init__(self, settings: SlurmSettings, config: SlurmCliConfig) -> None:
        if settings.bin_dir is not None:
            missing = [t for t in TOOLS if not os.access(settings.bin_dir / t, os.X_OK)]
            if missing:
                raise ConfigError(f"slurm.bin_dir {settings.bin_dir} has no executable "
                                  f"{', '.join(missing)}")
        self.settings = settings
        self.files = slurm.JobFiles(settings.job_root or config.state_dir / "slurm",
                                    config.allowed_roots)
        self.calls: Counter[str] = Counter()
        """Scheduler commands run, by name (benchmarks count them per cycle)."""
        self._unaccounted: dict[str, float] = {}
        """Jobs ended in squeue but not yet in sacct: since when (accounting lags)."""
        self._last: dict[str, JobState] = {}
        """The last state this backend answered per job, to repeat while a job settles."""
        self._env = {key: os.environ[key] for key in _ENV_KEEP if key in os.environ}
        self._env["PATH"] = os.environ.get("PATH") or os.defpath
        if settings.conf is not None:
            self._env["SLURM_CONF"] = str(settings.conf)
        self._caps = slurm.Caps(max_cores=settings.max_cores, max_nodes=settings.max_nodes)

    # -- submit ----------------------------------------------------------------------------
    async def submit(self, job_id: str, spec: JobSpec) -> str:
        request = await asyncio.to_thread(self.files.request, job_id, spec, caps=self._caps,
                                          base_env=self._env)
        argv = ["sbatch", "--parsable", *request.sbatch_options()]
        if request.argv or request.args:  # the script on stdin, its arguments after it
            argv += ["/dev/stdin", *(request.argv or request.args)]
        out = await self._run(argv, stdin=request.script.encode(), env=request.env,
                              submit=True)
        native_id = out.strip().split(";")[0]
        if not slurm.native_ids([native_id]):
            raise BackendError(f"sbatch answered {out.strip()!r}, not a job id")
        await asyncio.to_thread(self.files.link_logs, request, native_id)
        logger.info("job %s submitted to Slurm as %s", job_id, native_id)
        return native_id

    async def adopt(self, job_id: str, spec: JobSpec, native_id: str) -> None:
        """A job found by its tag after a crash: its ``-o``/``-e`` logs linked, as by submit."""
        await asyncio.to_thread(self.files.relink_logs, job_id, spec, native_id,
                                caps=self._caps, base_env=self._env)

    # -- poll ------------------------------------------------------------------------------
    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        ids = slurm.native_ids(native_ids)
        if not ids:
            return {}
        queued, nodes = await self._squeue(ids)
        result: dict[str, NativeStatus] = {}
        ask_sacct = []
        for native_id in ids:
            raw = queued.get(native_id)
            state = slurm.to_state(raw) if raw is not None else None
            # COMPLETING: its processes ended and sacct already has how (the epilog still runs)
            if state is None or state.terminal or slurm.base_state(raw or "") == "COMPLETING":
                ask_sacct.append(native_id)
            else:
                result[native_id] = NativeStatus(
                    state=state, settling=slurm.base_state(raw or "") in slurm.SETTLING)
        if ask_sacct:
            accounted = await self._sacct(ask_sacct, nodes)
            for native_id in ask_sacct:
                status = self._ended(native_id, accounted.get(native_id), queued.get(native_id))
                if status is not None:
                    result[native_id] = status
        await self.files.place_logs(nodes, ended=[i for i, s in result.items()
                                                  if s.state.terminal])
        # the agent asks for all its jobs each time: what it no longer asks about is forgotten
        self._last = {native_id: status.state for native_id, status in result.items()
                      if not status.state.terminal}
        self._unaccounted = {i: t for i, t in self._unaccounted.items() if i in self._last}
        return result

    def _ended(self, native_id: str, accounted: NativeStatus | None,
               queued_raw: str | None) -> NativeStatus | None:
        """How a job that left the queue (or ended in it) ended. Accounting lags slurmctld:
        until sacct has the final record, the job is 'settling' in its last known state."""
        if accounted is not None and accounted.state.terminal and accounted.settling:
            # ended by a signal whose batch-step record has not reached accounting yet
            first = self._unaccounted.setdefault(native_id, time.monotonic())
            if time.monotonic() - first < STEP_GRACE_S:
                return NativeStatus(state=self._last.get(native_id, JobState.RUNNING),
                                    settling=True)
            accounted = replace(accounted, settling=False)  # its signal stays unknown
        if accounted is not None and (accounted.state.terminal or queued_raw is None):
            self._unaccounted.pop(native_id, None)
            return accounted
        if queued_raw is None:
            return None  # unknown to both: the agent decides, after its grace, that it is lost
        if not slurm.to_state(queued_raw).terminal:  # completing; sacct not there yet
            return NativeStatus(state=JobState.RUNNING, settling=True)
        first = self._unaccounted.setdefault(native_id, time.monotonic())
        state = slurm.to_state(queued_raw)
        if time.monotonic() - first < self.settings.accounting_grace_s:
            last = self._last.get(native_id, JobState.SUBMITTED)
            return NativeStatus(state=last, settling=True)  # no news yet: ask again soon
        self._unaccounted.pop(native_id, None)
        name = slurm.base_state(queued_raw)
        return NativeStatus(state=state, reason=slurm.reason_for(name, None, None) or
                            "ended; no accounting record to say how",
                            infrastructure=name in slurm.INFRASTRUCTURE)

    async def _squeue(self, ids: list[str]) -> tuple[dict[str, str], dict[str, str | None]]:
        """({native id: Slurm state}, {native id: the node its batch script runs on, None
        before it starts}) of the jobs slurmctld still holds, in ONE squeue call."""
        argv = ["squeue", "--noheader", "--states=all", "--format=%i|%T|%B",
                f"--jobs={','.join(ids)}"]
        try:
            out = await self._run(argv)
        except BackendUnavailable:
            raise
        except BackendError as exc:
            if "Invalid job id" not in exc.message:
                raise
            out = ""  # every id unknown to slurmctld (all purged): sacct will say
        states: dict[str, str] = {}
        nodes: dict[str, str | None] = {}
        for line in out.splitlines():
            listed, _, rest = line.strip().partition("|")
            state, _, host = rest.partition("|")
            for native_id in expand_native_ids(listed) if listed else ():
                states[native_id] = state  # pending array elements come as N_[1-9%2]
                nodes[native_id] = sbatch.first_host(host)
        return states, nodes

    async def _sacct(self, ids: list[str],
                     nodes: dict[str, str | None]) -> dict[str, NativeStatus]:
        """{native id: status} from accounting, in ONE sacct call (allocations and steps);
        the node each job's batch script ran on is put in ``nodes``."""
        # without --duplicates, sacct shows each id's most recent record (a requeued job's
        # last run, not a stale job of a slurmctld whose state was wiped)
        out = await self._run(["sacct", "--noheader", "--parsable2",
                               f"--format={_SACCT_FIELDS}", f"--jobs={','.join(ids)}"])
        rows: dict[str, list[str]] = {}
        rss: dict[str, float] = {}
        batch_exit: dict[str, str] = {}
        for line in out.splitlines():
            cells = line.split("|")
            if len(cells) != 9 or not cells[0]:
                continue
            base, dot, step = cells[0].partition(".")
            host = sbatch.first_host(cells[8])
            if host and (step == "batch" or not nodes.get(base)):
                nodes[base] = host  # the batch step's node, else the allocation's first
            if dot:
                mb = slurm.parse_memory_mb(cells[6])
                if mb is not None:
                    rss[base] = max(rss.get(base, 0.0), mb)
                if step == "batch":
                    batch_exit[base] = cells[2]
            else:
                rows.update(dict.fromkeys(expand_native_ids(base), cells[:8]))
        statuses = {native_id: _status_from_sacct(cells, rss.get(native_id),
                                                  batch_exit.get(native_id))
                    for native_id, cells in rows.items()}
        await self.files.place_logs(nodes, ended=[  # before explain reads a %N stderr
            i for i, status in statuses.items() if status.state.terminal])
        return {native_id: await self.files.explain(native_id, status)
                for native_id, status in statuses.items()}

    # -- the rest of the protocol -----------------------------------------------------------
    async def cancel(self, native_ids: Sequence[str]) -> None:
        ids = slurm.native_ids(native_ids)
        if not ids:
            return
        try:
            await self._run(["scancel", *ids])
        except BackendUnavailable:
            raise
        except BackendError as exc:  # some had already ended: the others were cancelled
            logger.info("scancel: %s", exc.message)

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Jobs whose comment is one of ``tags``: slurmctld's (pending, running, recently
        ended) and accounting's (since ``find_window_days``): one squeue and one sacct."""
        squeue = await self._run(["squeue", "--noheader", "--states=all", "--format=%i|%k"])
        sacct = await self._run(["sacct", "--noheader", "--parsable2", "--allocations",
                                 "--format=JobID,Comment",
                                 f"--starttime=now-{self.settings.find_window_days}days"])
        # an array's elements all carry its tag: they name the array (N_3, N_[4-9] -> N)
        pairs = ((array_job_id(i.strip()), c.strip()) for i, _, c in (
            line.partition("|") for line in [*squeue.splitlines(), *sacct.splitlines()]))
        return slurm.tagged(tags, pairs)

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        return await self.files.read_log(native_id, stream, offset, limit)

    def capacity(self) -> Capacity | None:
        return None  # sbatch refuses what no partition can run, with Slurm's own words

    def free_slots(self) -> int | None:
        return None  # Slurm queues what it cannot run yet

    async def close(self) -> None:
        return None

    # -- running commands -------------------------------------------------------------------
    async def _run(self, argv: list[str], *, stdin: bytes | None = None,
                   env: dict[str, str] | None = None, submit: bool = False) -> str:
        """Run one Slurm command; its stdout. BackendUnavailable if the controller (or the
        accounting daemon) cannot be reached or the command times out; SubmitRejected if sbatch
        refused the job; BackendError for other failures."""
        name = argv[0]
        self.calls[name] += 1
        code, out, err = await slurm.run_tool(
            argv, env=env or self._env, timeout_s=self.settings.command_timeout_s,
            bin_dir=self.settings.bin_dir, stdin=stdin)
        if code == 0:
            return out.decode(errors="replace")
        raise self._failure(name, code, err, submit=submit)

    def _failure(self, name: str, code: int, err: bytes, *, submit: bool) -> BackendError:
        """What a failed command means (see :meth:`_run`)."""
        text = err.decode(errors="replace")
        message = _message(err) or f"exit code {code}"
        if _MISMATCH.search(text):
            return BackendUnavailable(
                f"{name} is not of the cluster's Slurm release (Slurm says: incompatible "
                "versions of client and server code): set [agent.slurm] bin_dir to the "
                f"directory of the cluster's own tools (now: {self.settings.bin_dir or 'PATH'})")
        if _UNREACHABLE.search(text):
            return BackendUnavailable(f"{name}: {message}")
        if submit:
            return SubmitRejected(f"sbatch refused the job: {message}")
        return BackendError(f"{name}: {message}")


def _status_from_sacct(cells: list[str], max_rss_mb: float | None,
                       batch_exit: str | None) -> NativeStatus:
    _id, raw_state, exit_code, elapsed, cpus, nodes, _rss, start = cells
    state = slurm.to_state(raw_state)
    if not state.terminal:
        return NativeStatus(state=state, settling=slurm.base_state(raw_state) in slurm.SETTLING)
    code, signum = slurm.exit_status(exit_code)
    pending_signal = False
    started = start not in ("", "None", "Unknown")
    if not started:
        code, signum = None, None  # it never ran: no exit code to speak of
    elif exit_code in ("", "0:0") and state is not JobState.SUCCEEDED:
        # cancelled or timed out once started: the signal is on the batch step, whose
        # record reads 0:0 (or is missing) for a moment before it does
        pending_signal = batch_exit in (None, "", "0:0")
        code, signum = (None, None) if pending_signal else slurm.exit_status(batch_exit)
    name = slurm.base_state(raw_state)
    if state is JobState.SUCCEEDED and code:
        state = JobState.FAILED  # never seen, but a non-zero exit is never a success
    return NativeStatus(
        state=state, exit_code=code, reason=slurm.reason_for(name, code, signum),
        usage=slurm.usage_of(float(elapsed or 0), int(cpus or 0), int(nodes or 0), max_rss_mb),
        settling=pending_signal, infrastructure=name in slurm.INFRASTRUCTURE)


def _message(err: bytes) -> str:
    """A command's error output as one line, without its "Try --help" advice."""
    lines = [line.strip() for line in err.decode(errors="replace").splitlines()
             if line.strip() and not line.strip().startswith("Try ")]
    return "; ".join(lines)[:500]
