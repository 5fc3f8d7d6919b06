"""Push wake-ups to a local agent: "something changed, poll now".

The agent binds a unix datagram socket in its state dir; a job's supervisor (local backend)
or a scheduler hook (Slurm's EpilogSlurmctld) sends a datagram to it when a job starts or
ends, so the agent polls at once instead of at its next interval. Polling stays the safety
net: a lost or impossible wake-up only costs latency. Senders never block and never fail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_PATH = 107  # sun_path is 108 bytes with its terminating NUL


def send_wake(path: str | Path, message: str = "") -> bool:
    """Send one wake-up datagram; False (never an exception) if nobody listens."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode()[:512], os.fspath(path))
        return True
    except OSError:
        return False


def prune_dead(directory: Path, keep: Path) -> int:
    """Remove the sockets in a shared wake dir that nobody listens on any more (agents killed
    before they could clean up), so hooks stop sending to them. How many were removed."""
    removed = 0
    for path in directory.glob("*.sock"):
        if path == keep:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(os.fspath(path))  # sends nothing: a live agent is not woken
            except ConnectionRefusedError:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    return removed


class WakeListener:
    """The agent's end: calls ``on_wake`` (in the event loop) for every datagram received."""

    def __init__(self, path: Path, on_wake: Callable[[str], None]) -> None:
        self.path = path
        self._on_wake = on_wake
        self._sock: socket.socket | None = None
        self._loop: Any = None

    def open(self) -> bool:
        """Bind the socket; False (and only polling) where that is impossible."""
        if len(os.fsencode(self.path)) > MAX_PATH:
            logger.warning("wake socket path %s is too long; relying on polling", self.path)
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a previous run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(os.fspath(self.path))
        except OSError as exc:
            sock.close()
            logger.warning("cannot bind wake socket %s (%s); relying on polling", self.path, exc)
            return False
        import asyncio  # here, not at the top: job supervisors import this module to send

        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)
        return True

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._on_wake(data.decode(errors="replace"))

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
