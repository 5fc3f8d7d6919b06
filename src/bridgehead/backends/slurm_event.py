"""``bridgehead slurm-event``: the PrologSlurmctld/EpilogSlurmctld hook.

slurmctld runs it (as SlurmUser, with a clean environment) when a job starts and when it
ends. It tells the cluster's agents "poll now" with one datagram to each wake socket in the
wake dir(s) (``bridgehead.wake``), so a job's end reaches the server in well under a second
instead of a poll interval. Polling stays the safety net: a lost wake-up costs only latency.

It must never hurt the cluster: a failing PrologSlurmctld requeues the job forever. So it
imports only the standard library (it starts in tens of milliseconds), never blocks, and
exits 0 whatever happens. See deploy/slurm/ for installing it.
"""

from __future__ import annotations

import glob
import json
import os
import sys

from bridgehead.wake import send_wake

FIELDS = {
    "context": "SLURM_SCRIPT_CONTEXT",
    "cluster": "SLURM_CLUSTER_NAME",
    "job_id": "SLURM_JOB_ID",
    "tag": "SLURM_JOB_COMMENT",
    "exit": "SLURM_JOB_EXIT_CODE2",
}


def message(env: dict[str, str]) -> str:
    """The datagram: what happened to which job (agents poll anyway; this is for logs)."""
    data = {key: env[var] for key, var in FIELDS.items() if var in env}
    data["source"] = "slurm"
    return json.dumps(data, separators=(",", ":"))


def sockets(args: list[str], env: dict[str, str]) -> list[str]:
    """The wake sockets named by ``--wake PATH`` and found in ``--wake-dir DIR`` (also
    ``BRIDGEHEAD_WAKE_DIR``, colon-separated)."""
    paths: list[str] = []
    dirs = [d for d in env.get("BRIDGEHEAD_WAKE_DIR", "").split(":") if d]
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--wake", "--wake-dir"):
            value = value if eq else next(it, "")
            if value:
                (paths if name == "--wake" else dirs).append(value)
    for directory in dirs:
        paths += sorted(glob.glob(os.path.join(glob.escape(directory), "*.sock")))
    return paths


def main(args: list[str]) -> int:
    try:
        env = dict(os.environ)
        text = message(env)
        for path in sockets(args, env):
            send_wake(path, text)
    except BaseException:  # a hook that fails blocks the cluster's jobs: never
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
