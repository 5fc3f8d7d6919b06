"""The ``bridgehead`` console script (and ``python -m bridgehead``).

Ctrl-C is set up before anything else is imported (``interrupts``), so a SIGINT at any moment
ends the command quietly: no traceback, exit 130 (or the command's own code). ``slurm-event``
(a Slurm hook, run for every job) is dispatched before the CLI's imports, so it starts in tens
of milliseconds."""

from __future__ import annotations

import sys

from bridgehead.cli import interrupts


def main() -> None:
    interrupts.install()
    try:
        if sys.argv[1:2] == ["slurm-event"]:
            from bridgehead.backends.slurm_event import main as hook

            sys.exit(hook(sys.argv[2:]))
        from bridgehead.cli.main import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.exit(interrupts.exit_code())
    except Exception:
        # A Ctrl-C inside an import can come out as another error: Python wraps what a
        # class body's ``__set_name__`` raises (a dataclass field) in a RuntimeError.
        if interrupts.interrupted():
            sys.exit(interrupts.exit_code())
        raise
