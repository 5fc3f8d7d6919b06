"""``python -m bridgehead``: the ``bridgehead`` command.

Until the command's own Ctrl-C handler is installed (:mod:`bridgehead.cli.interrupts`, the
first thing ``main`` does), a Ctrl-C ends the process at once and quietly, exit 130: nothing
has been started yet that needs cleaning up, and Python's own handler would print a traceback
of whatever module was being imported (a fresh checkout compiles them all on first use)."""

import _signal  # the built-in C module: ``signal`` would import enum first (milliseconds)
import os  # already loaded by the interpreter: free

_signal.signal(_signal.SIGINT, lambda signum, frame: os._exit(130))

from bridgehead.cli.entry import main  # noqa: E402  (after the handler, on purpose)

main()
