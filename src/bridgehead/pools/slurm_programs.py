"""Slurm's ResumeProgram, SuspendProgram and ResumeFailProgram, shipped with Bridgehead for the
``slurm_powersave`` pool provider::

    python -m bridgehead.pools.slurm_programs resume|suspend|resume-fail HOSTLIST

slurmctld runs its power-saving programs with ONE argument, a hostlist (``cn[1-3,7]``), as
SlurmUser, with ``SLURM_CONF`` set: point ``ResumeProgram`` etc. at a two-line wrapper that execs
this module (``scripts/slurm-lab`` writes such wrappers for its cluster ``delta``).

What starts and stops one node's machine is the site's (a cloud API call, a BMC command, a
slurmd started on this host): two argv templates in ``bridgehead-power.toml`` next to
slurm.conf (or the file named by ``--config``)::

    start = ["/opt/site/boot-vm", "{node}"]   # run per node, detached: the boot goes on
    stop = ["/opt/site/halt-vm", "{node}"]    # run per node, waited for (60 s at most)
    log_dir = "/var/log/slurm/power"          # optional: power.log, and <node>.log per start

Each word is passed as is after ``{node}`` is replaced (never through a shell), and only a
well-formed node name is accepted. The hostlist is expanded by ``scontrol show hostnames``,
Slurm's own parser.

- ``resume``: runs ``start`` for each node. slurmctld's power-save thread blocks SIGTERM and a
  child inherits its signal mask: a slurmd started from here would then ignore the SIGTERM that
  stops it. The mask and dispositions are reset first, so what ``start`` runs starts clean.
- ``suspend``: runs ``stop`` for each node, then clears the node's ``Comment``: the
  provider keeps its idempotency key there, and a node powered down is no longer that node
  (a later power-up, by Slurm itself, is not Bridgehead's launch).
- ``resume-fail``: Slurm gave up on a node (not registered by ResumeTimeout; it is DOWN now):
  runs ``stop`` (a half-booted machine must not go on costing) and leaves the node DOWN with
  its key and reason, so that Slurm schedules elsewhere and the provider lists the node as not
  ready: the Bridgehead scaler counts the failed boot and replaces the node; the provider
  offers the node again (``State=RESUME``) only after the pool's ``down_cooloff_s``. The reason
  starts with ``bridgehead:``: the provider recovers only the nodes it marked.

This module reads its own small file instead of Bridgehead's settings: it runs under
slurmctld, not as part of a Bridgehead process.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A Slurm node name as this program accepts it (no option-like or path-like word)."""
CONFIG_NAME = "bridgehead-power.toml"
STOP_TIMEOUT_S = 60.0
SCONTROL_TIMEOUT_S = 30.0
_RESET = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM")


class ProgramError(Exception):
    """A bad configuration or hostlist: said on stderr, exit 2."""


@dataclass(frozen=True, slots=True)
class PowerConfig:
    start: tuple[str, ...]
    stop: tuple[str, ...]
    log_dir: Path | None = None


def load_config(path: Path) -> PowerConfig:
    """The power config at ``path``; ProgramError naming the field."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProgramError(f"{path}: {exc}") from exc
    unknown = set(data) - {"start", "stop", "log_dir"}
    if unknown:
        raise ProgramError(f"{path}: unknown field {sorted(unknown)[0]!r}")
    argv = {}
    for name in ("start", "stop"):
        value = data.get(name)
        if not (isinstance(value, list) and value and all(isinstance(w, str) for w in value)):
            raise ProgramError(f"{path}: {name} must be a non-empty list of strings (an argv)")
        argv[name] = tuple(value)
    log_dir = data.get("log_dir")
    if log_dir is not None and not isinstance(log_dir, str):
        raise ProgramError(f"{path}: log_dir must be a string")
    return PowerConfig(argv["start"], argv["stop"], Path(log_dir) if log_dir else None)


def config_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        raise ProgramError("no --config and no SLURM_CONF to find bridgehead-power.toml by")
    return Path(conf).parent / CONFIG_NAME


def hostnames(hostlist: str) -> list[str]:
    """Slurm's expansion of ``hostlist`` (``scontrol show hostnames``), each name checked."""
    if hostlist.startswith("-"):
        raise ProgramError(f"not a hostlist: {hostlist!r}")
    done = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True,
                          text=True, timeout=SCONTROL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise ProgramError(f"scontrol show hostnames {hostlist}: {done.stderr.strip()}")
    names = done.stdout.split()
    for name in names:
        if not NODE_NAME.fullmatch(name):
            raise ProgramError(f"not a node name: {name!r}")
    return names


def node_argv(template: Sequence[str], node: str) -> list[str]:
    return [word.replace("{node}", node) for word in template]


def reset_signals() -> None:
    """Unblock every signal and restore default handlers (slurmctld's are inherited)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for name in _RESET:
        signal.signal(getattr(signal, name), signal.SIG_DFL)


class Program:
    def __init__(self, config: PowerConfig) -> None:
        self.config = config
        if config.log_dir is not None:
            config.log_dir.mkdir(parents=True, exist_ok=True)

    def log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}\n"
        if self.config.log_dir is None:
            sys.stderr.write(line)
            return
        with open(self.config.log_dir / "power.log", "a") as f:
            f.write(line)

    def resume(self, nodes: Sequence[str]) -> int:
        for node in nodes:
            out = (open(self.config.log_dir / f"{node}.log", "ab")
                   if self.config.log_dir else subprocess.DEVNULL)
            try:  # detached (own session): the machine outlives this program
                child = subprocess.Popen(node_argv(self.config.start, node),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, close_fds=True)
            except OSError as exc:
                self.log(f"resume {node}: cannot start {self.config.start[0]}: {exc}")
                continue
            finally:
                if not isinstance(out, int):
                    out.close()
            self.log(f"resume {node}: started (pid {child.pid})")
        return 0

    def suspend(self, nodes: Sequence[str]) -> int:
        for node in nodes:
            self._stop(node, "suspend")
            self._scontrol(f"NodeName={node}", "Comment=")
        return 0

    def resume_fail(self, nodes: Sequence[str]) -> int:
        for node in nodes:
            self._stop(node, "resume-fail")
            self._scontrol(f"NodeName={node}", "Reason=bridgehead: not resumed by ResumeTimeout")
        return 0

    def _stop(self, node: str, why: str) -> None:
        try:
            done = subprocess.run(node_argv(self.config.stop, node), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=STOP_TIMEOUT_S,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log(f"{why} {node}: stop failed: {exc}")
            return
        self.log(f"{why} {node}: stopped (exit {done.returncode}) {done.stderr.strip()[:300]}")

    def _scontrol(self, *words: str) -> None:
        done = subprocess.run(["scontrol", "update", *words], capture_output=True, text=True,
                              timeout=SCONTROL_TIMEOUT_S, check=False)
        if done.returncode != 0:
            self.log(f"scontrol update {' '.join(words)}: {done.stderr.strip()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridgehead.pools.slurm_programs",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--config", help=f"the power config (default: {CONFIG_NAME} next to "
                        "$SLURM_CONF)")
    parser.add_argument("mode", choices=("resume", "suspend", "resume-fail"))
    parser.add_argument("hostlist")
    args = parser.parse_args(argv)
    reset_signals()
    try:
        program = Program(load_config(config_path(args.config)))
        nodes = hostnames(args.hostlist)
    except (ProgramError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"bridgehead slurm power program: {exc}", file=sys.stderr)
        return 2
    program.log(f"{args.mode} {args.hostlist}")
    run = {"resume": program.resume, "suspend": program.suspend,
           "resume-fail": program.resume_fail}[args.mode]
    return run(nodes)


if __name__ == "__main__":
    sys.exit(main())
