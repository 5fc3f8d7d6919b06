"""The ``bridgehead`` console script. ``slurm-event`` (a Slurm hook, run for every job) is
dispatched before the CLI's imports, so it starts in tens of milliseconds."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["slurm-event"]:
        from bridgehead.backends.slurm_event import main as hook

        sys.exit(hook(sys.argv[2:]))
    from bridgehead.cli.main import main as cli_main

    cli_main()
