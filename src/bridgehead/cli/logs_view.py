"""A job's log for people: both streams by default, its stderr lines marked ``[stderr]`` (as
the workflow view shows them), or one stream as raw bytes (``--stdout`` / ``--stderr``).

Read once, stdout comes first, then stderr (the server keeps no order between the two). Followed,
each stream is read by its own long-poll and whole lines are written as they arrive, so the
two interleave about as the job wrote them; a last line without a newline is written at the
end. Everything goes to this process's stdout, so ``bridgehead logs ID | less`` shows it all.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from bridgehead.backends.base import STREAMS

STDERR_MARK = b"[stderr] "


async def show(bh: Any, job_id: str, streams: Sequence[str] = STREAMS, *,
               follow: bool = False, out: BinaryIO | None = None) -> None:
    """Write the job's ``streams`` to ``out`` (stdout); with ``follow``, until the job has
    ended and everything is read."""
    sink = _Sink(out or sys.stdout.buffer, mark=len(streams) > 1)
    if follow:
        await asyncio.gather(*(_follow(bh, job_id, s, sink) for s in streams))
    else:
        for stream in streams:
            await _read_all(bh, job_id, stream, sink)
    sink.close()


async def _read_all(bh: Any, job_id: str, stream: str, sink: _Sink) -> None:
    offset = 0
    while True:
        data, offset, _ = await bh.read_logs(job_id, stream=stream, offset=offset)
        if not data:
            return
        sink.write(stream, data)


async def _follow(bh: Any, job_id: str, stream: str, sink: _Sink) -> None:
    async for data in bh.follow_logs(job_id, stream=stream):
        sink.write(stream, data)


class _Sink:
    """Writes raw bytes for one stream; for two, whole lines, stderr's marked."""

    def __init__(self, out: BinaryIO, *, mark: bool) -> None:
        self.out, self.mark = out, mark
        self.partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        if not self.mark:
            self._emit(data)
            return
        text = self.partial.pop(stream, b"") + data
        lines = text.split(b"\n")
        if lines[-1]:
            self.partial[stream] = lines[-1]
        whole = lines[:-1]
        if whole:
            self._emit(b"".join(self._line(stream, line) for line in whole))

    def close(self) -> None:
        for stream in STREAMS:
            if rest := self.partial.pop(stream, b""):
                self._emit(self._line(stream, rest))

    def _line(self, stream: str, line: bytes) -> bytes:
        return (STDERR_MARK if stream == "stderr" else b"") + line + b"\n"

    def _emit(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()


def pick_streams(stdout: bool, stderr: bool) -> tuple[str, ...]:
    """``--stdout`` / ``--stderr`` (either, or both, which is the default)."""
    chosen = tuple(s for s, on in (("stdout", stdout), ("stderr", stderr)) if on)
    return chosen or STREAMS
