"""A Livy batch's log as the agent's two byte streams.

``GET /batches/{id}/log?from=&size=`` gives lines; Livy in YARN mode lays a batch's log out as
``["stdout: ", ..., "\\nstderr: ", ..., "\\nYARN Diagnostics: ", ...]``
(incubator-livy server/src/main/scala/org/apache/livy/utils/SparkYarnApp.scala:141-144). The
``stdout`` section, its lines joined with ``\\n``, is the stdout stream: it only grows, so a
line index and byte offset already read stay valid and each read continues from them. The
``stderr`` section is the stderr stream, read once the batch has ended (before that its lines
shift as stdout grows). A log without the section headers (Livy without YARN) is all stdout.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

STDOUT, STDERR, DIAGNOSTICS = "stdout: ", "\nstderr: ", "\nYARN Diagnostics: "

Lines = Callable[[int, int, int], Awaitable[list[str]]]
"""(batch id, from, size) -> those lines of its log (size -1: all)."""


class BatchLogs:
    """Reads for every batch the agent follows, keyed by batch name; a running batch's stdout
    at most every ``interval_s`` (Livy has no bulk log call: a request per batch)."""

    def __init__(self, lines: Lines, *, interval_s: float, page: int) -> None:
        self._lines = lines
        self.interval_s = interval_s
        self.page = max(100, page)
        self._cursor: dict[str, tuple[int, int]] = {}
        """name -> (log line index, stdout byte offset) of a line boundary already read."""
        self._stderr: dict[str, bytes] = {}
        self._read_at: dict[str, float] = {}

    async def read(self, name: str, batch_id: int, stream: str, *, ended: bool, offset: int,
                   limit: int) -> bytes:
        if stream == "stdout":
            now = time.monotonic()
            if not ended and now - self._read_at.get(name, -1e9) < self.interval_s:
                return b""
            self._read_at[name] = now
            return await self._stdout(name, batch_id, offset, limit)
        if stream != "stderr" or not ended:
            return b""
        if name not in self._stderr:
            lines = await self._lines(batch_id, 0, -1)
            start = lines.index(STDERR) + 1 if STDERR in lines else len(lines)
            end = next((i for i in range(start, len(lines)) if lines[i] == DIAGNOSTICS),
                       len(lines))
            self._stderr[name] = "".join(f"{line}\n" for line in lines[start:end]).encode()
        data = self._stderr[name][offset:offset + limit]
        if not data:
            self._stderr.pop(name, None)
        return data

    async def _stdout(self, name: str, batch_id: int, offset: int, limit: int) -> bytes:
        line, at = self._cursor.get(name, (0, 0))
        if at > offset:
            line, at = 0, 0
        data = bytearray()
        while at + len(data) < offset + limit:
            lines = await self._lines(batch_id, line, self.page)
            section_ended = False
            for text in lines:
                if line == 0 and text == STDOUT:
                    line += 1
                    continue
                if text in (STDERR, DIAGNOSTICS):
                    section_ended = True
                    break
                chunk = f"{text}\n".encode()
                if at + len(data) + len(chunk) <= offset:
                    at += len(chunk)
                    self._cursor[name] = (line + 1, at)
                else:
                    data += chunk
                line += 1
            if section_ended or len(lines) < self.page:
                break
        return bytes(data[max(0, offset - at):][:limit])

    def forget(self, keep: set[str]) -> None:
        """Drop what is kept about batches not in ``keep``."""
        for kept in (self._cursor, self._stderr, self._read_at):
            for name in [n for n in kept if n not in keep]:
                del kept[name]
