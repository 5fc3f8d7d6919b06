"""Ctrl-C that always works: a command stops within a second of SIGINT, whatever it waits on.

The ``bridgehead`` entry point installs ``on_sigint`` before anything else is imported. A
first Ctrl-C raises ``KeyboardInterrupt`` as Python's own handler does, so the command's
``finally`` blocks and ``asyncio.run``'s clean-up run (a follower says what it stopped, a long
poll is closed), and it arms a watchdog: if the process is still alive ``GRACE_S`` later (a
clean-up blocked on a socket, a thread, a loaded machine), it exits at once with
``exit_code()``. A second Ctrl-C exits at once. Once interrupted, the process is only
ending: what Python would print of objects the interrupt left half-built (an event loop whose
``__init__`` it cut short fails in ``__del__``, a coroutine never awaited, asyncio.run's
report of the tasks the interrupt ended) is noise, not news, so it is not printed. This
module imports nothing heavy, so it can be the first thing the process does.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from types import FrameType

GRACE_S = 0.8
"""How long a clean exit may take after Ctrl-C before the process is ended."""
INTERRUPTED = 130
"""The shell's exit code for a command stopped by SIGINT (128 + 2)."""

_state = {"code": INTERRUPTED, "armed": False}


def install() -> None:
    """Make SIGINT raise ``KeyboardInterrupt`` and arm the watchdog (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)


def on_sigint(signum: int, frame: FrameType | None) -> None:
    if _state["armed"]:
        _exit_now()
    arm()
    _quiet()
    raise KeyboardInterrupt


def _quiet() -> None:
    sys.unraisablehook = _ignore
    warnings.simplefilter("ignore")
    if "logging" in sys.modules:  # loaded by then if asyncio is: its shutdown report of the
        # tasks the interrupt ended ("unhandled exception during asyncio.run() shutdown")
        sys.modules["logging"].getLogger("asyncio").disabled = True


def _ignore(unraisable: object) -> None:
    """Nothing to say: the process is ending because the user asked it to."""


def arm() -> None:
    """Start the watchdog: the process ends ``GRACE_S`` from now unless it has exited. For
    commands that handle SIGINT themselves (an event loop's signal handler)."""
    if _state["armed"]:
        return
    _state["armed"] = True
    timer = threading.Timer(GRACE_S, _exit_now)
    timer.daemon = True
    timer.start()


def interrupted() -> bool:
    """Whether a Ctrl-C has come (the process is ending)."""
    return bool(_state["armed"])


def set_exit_code(code: int) -> None:
    """The exit code of a command that Ctrl-C ends normally (``events tail``: 0)."""
    _state["code"] = code


def exit_code() -> int:
    return int(_state["code"])


def _exit_now() -> None:
    # No print() and no flush(): the main thread may hold the stream's lock.
    os._exit(exit_code())
