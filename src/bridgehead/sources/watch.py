"""Directory watcher: a ``file.created`` event for each file that lands in watched directories
(the on-prem analogue of "an object lands in a bucket").

It polls with ``os.scandir`` instead of using inotify: inotify only sees changes made through
the local kernel, so it misses files written by other nodes to NFS, Lustre or GPFS (where
instruments and clusters write). A listing every half second sees every writer, needs no
dependency, and costs little.

A file is reported once it is *complete*: the same (size, mtime_ns) seen by polls for
``debounce_s`` seconds, and not empty (unless ``allow_empty``). Completion is judged by
observation, not by the age of the mtime: an NFS server's clock and ours disagree. Names that
writers use while writing are ignored: hidden (``.name``) and ``*.tmp``, ``*.part``,
``*.partial``, ``*.crdownload``, ``*~``; the usual write-then-rename is then seen as a new
complete file under its final name. Hidden directories are not descended into.

Reported paths are real paths (symlinks resolved); a symlink whose target is outside every
watched root is ignored, and directory symlinks are not followed (no loops).

An event's ``id`` is a digest of (path, size, mtime_ns): a re-post after a crash carries the
same id, and the server logs an event with a known (source, id) once. A file rewritten later
(new size or mtime) is a new event. The state file (JSON, replaced atomically) remembers what
was reported, so a restarted watcher does not report it again::

    watcher = DirectoryWatcher(WatchSettings(roots=(Path("/data/in"),), globs=("*.csv",)))
    for event in watcher.scan(time.monotonic()):   # no sleeping inside: tests drive the clock
        ...                                          # post it, then:
        watcher.mark_reported(event)
    watcher.save()

:func:`run_watch` is that loop against a server, retrying while it is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from bridgehead.config import home
from bridgehead.domain.events import Event
from bridgehead.errors import ConfigError, InvalidSpec, ServerUnavailable

if TYPE_CHECKING:
    from bridgehead.client import AsyncClient

logger = logging.getLogger(__name__)

EVENT_TYPE = "file.created"
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
"""Names ending so are files still being written (browsers, rsync, editors, writers)."""
STATE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSettings:
    """What to watch and how often."""

    roots: tuple[Path, ...]
    globs: tuple[str, ...] = ("*",)
    """fnmatch patterns on the file name (case-sensitive); a file matching any is watched."""
    recursive: bool = False
    interval_s: float = 0.5
    """Seconds between polls."""
    debounce_s: float = 2.0
    """Seconds a file's size and mtime must stay unchanged before it is reported."""
    allow_empty: bool = False
    from_now: bool = False
    """Mark the files present at the first poll as seen without reporting them."""
    state_path: Path | None = None
    """Default: ``$BRIDGEHEAD_HOME/watch/<digest of roots and globs>.json``."""

    def __post_init__(self) -> None:
        if not self.roots:
            raise InvalidSpec("give at least one directory to watch")
        if not self.globs:
            raise InvalidSpec("give at least one glob pattern")
        if self.interval_s <= 0:
            raise InvalidSpec("the poll interval must be > 0")
        if self.debounce_s < 0:
            raise InvalidSpec("the debounce must be >= 0")


@dataclass(frozen=True, slots=True)
class FileStat:
    """A watched file as one poll saw it; ``path`` is its real path."""

    path: str
    size: int
    mtime_ns: int


Scan = Callable[[Sequence[str], WatchSettings], list[FileStat]]
"""One poll: the candidate files under the (real) roots. Raises ``OSError`` when a root
cannot be listed (then nothing is concluded from that poll)."""


def ignored_name(name: str) -> bool:
    """Hidden names and writers' temporary names."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(os.path.commonpath((path, root)) == root for root in roots)


def scan_tree(roots: Sequence[str], settings: WatchSettings) -> list[FileStat]:
    """Files under ``roots`` (real paths) matching a glob, not ignored by name, as real paths.
    A subdirectory that vanished or cannot be read is skipped; a root raises ``OSError``."""
    found: dict[str, FileStat] = {}
    for root in roots:
        folders = [root]
        while folders:
            folder = folders.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        _visit(entry, roots, settings, folders, found)
            except OSError:
                if folder == root:
                    raise
                logger.debug("cannot list %s; skipped", folder, exc_info=True)
    return list(found.values())


def _visit(entry: os.DirEntry[str], roots: Sequence[str], settings: WatchSettings,
           folders: list[str], found: dict[str, FileStat]) -> None:
    if ignored_name(entry.name):
        return
    try:
        if entry.is_dir(follow_symlinks=False):
            if settings.recursive:
                folders.append(entry.path)
            return
        if not entry.is_file() or not any(fnmatchcase(entry.name, g) for g in settings.globs):
            return
        path = entry.path
        if entry.is_symlink():
            path = os.path.realpath(path)
            if not _inside(path, roots):
                logger.debug("%s points outside the watched directories: ignored", entry.path)
                return
        stat = entry.stat()
    except OSError:  # gone between the listing and the stat
        return
    found[path] = FileStat(path, stat.st_size, stat.st_mtime_ns)


def event_id(file: FileStat) -> str:
    """The same file content (path, size, mtime) always gets the same id."""
    key = f"{file.path}|{file.size}|{file.mtime_ns}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def file_event(file: FileStat, source: str) -> Event:
    path = PurePath(file.path)
    data = {"path": file.path, "name": path.name, "stem": path.stem, "suffix": path.suffix,
            "dir": str(path.parent), "size": file.size, "mtime": file.mtime_ns / 1e9}
    return Event(type=EVENT_TYPE, subject=file.path, data=data, source=source,
                 id=event_id(file))


def default_state_path(roots: Sequence[str], globs: Sequence[str]) -> Path:
    key = json.dumps([sorted(roots), sorted(globs)])
    return home() / "watch" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float
    """The clock when this (size, mtime) was first seen."""


class DirectoryWatcher:
    """Polls directories; :meth:`scan` returns the events of files that became complete and
    were not reported yet. ``scan`` (the listing) and ``hostname`` can be injected for tests."""

    def __init__(self, settings: WatchSettings, *, scan: Scan = scan_tree,
                 hostname: str | None = None, source: str | None = None) -> None:
        self.settings = settings
        self.roots = tuple(dict.fromkeys(os.path.realpath(r) for r in settings.roots))
        self.source = source or f"bridgehead.watch/{hostname or socket.gethostname()}"
        """The events' source: a client token of one tenant posts only sources named after
        it, so give the watcher a token named so (or this source the token's name)."""
        self.state_path = settings.state_path or default_state_path(self.roots, settings.globs)
        self._state_file = os.path.realpath(self.state_path)
        self.unsettled = 0
        """After a scan: files still changing or not yet stable for the debounce."""
        self._scan = scan
        self._reported = _load_state(self.state_path)
        self._changing: dict[str, _Seen] = {}
        self._ready: dict[str, FileStat] = {}
        self._first = True
        self._dirty = False

    def scan(self, now: float) -> list[Event]:
        """One poll at clock ``now`` (seconds, any monotonic origin)."""
        try:
            files = self._scan(self.roots, self.settings)
        except OSError as exc:
            logger.warning("cannot list %s: %s", exc.filename, exc.strerror or exc)
            return []
        files = [f for f in files if f.path != self._state_file]  # --state inside a root
        first, self._first = self._first, False
        present = {f.path: f for f in files}
        self._forget(present)
        if first and self.settings.from_now:
            self._reported.update((f.path, (f.size, f.mtime_ns)) for f in files)
            self._dirty = True
            self.unsettled = 0
            return []
        self._ready = {}
        unsettled = 0
        for file in files:
            if self._reported.get(file.path) == (file.size, file.mtime_ns):
                self._changing.pop(file.path, None)
                continue
            seen = self._changing.get(file.path)
            if seen is None or (seen.size, seen.mtime_ns) != (file.size, file.mtime_ns):
                seen = self._changing[file.path] = _Seen(file.size, file.mtime_ns, now)
            if now - seen.since < self.settings.debounce_s:
                unsettled += 1
            elif file.size > 0 or self.settings.allow_empty:
                self._ready[event_id(file)] = file
        self.unsettled = unsettled
        return [file_event(f, self.source) for f in self._ready.values()]

    def mark_reported(self, event: Event) -> None:
        """Record that ``event`` (of the latest scan) was posted: its file is not reported
        again unless it changes. Kept in memory until :meth:`save`."""
        file = self._ready.pop(event.id)
        self._reported[file.path] = (file.size, file.mtime_ns)
        self._changing.pop(file.path, None)
        self._dirty = True

    def save(self) -> None:
        """Write the state file (temp file + ``os.replace``) if anything changed."""
        if not self._dirty:
            return
        data = {"version": STATE_VERSION, "roots": list(self.roots),
                "globs": list(self.settings.globs),
                "files": {path: list(key) for path, key in sorted(self._reported.items())}}
        path = self.state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self._dirty = False

    def _forget(self, present: dict[str, FileStat]) -> None:
        """Drop the files that are gone, so the state stays the size of the directories."""
        for path in [p for p in self._changing if p not in present]:
            del self._changing[path]
        gone = [p for p in self._reported if p not in present]
        for path in gone:
            del self._reported[path]
        self._dirty = self._dirty or bool(gone)


def _load_state(path: Path) -> dict[str, tuple[int, int]]:
    try:
        data = json.loads(path.read_text())
        return {str(p): (int(size), int(mtime)) for p, (size, mtime) in data["files"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"watch state {path} is not readable ({exc!r}); fix or delete it "
                          "(then files already there are reported again)") from exc


class _Stopped(Exception):
    """``stop`` was set while an event was waiting for the server."""


async def run_watch(
    watcher: DirectoryWatcher, client: AsyncClient, stop: asyncio.Event, *, once: bool = False,
    on_report: Callable[[Event, dict[str, Any]], None] | None = None,
    clock: Callable[[], float] = time.monotonic, backoff: tuple[float, float] = (0.5, 30.0),
) -> int:
    """Poll and post until ``stop`` is set (with ``once``: until every file present is
    reported, or empty and stable); returns how many events were posted.

    A file is marked reported only after its post succeeded. While the server is
    unreachable (or answers 5xx) the post is retried, waiting ``backoff[0]`` seconds and
    doubling up to ``backoff[1]``; other errors (a bad token, a refused event) propagate.
    The state is saved after each poll's batch, at least every second during a long batch,
    and at the end; a crash re-posts at most the events since the last save (same ids)."""
    posted = 0
    try:
        while not stop.is_set():
            events = await asyncio.to_thread(watcher.scan, clock())
            saved_at = clock()
            for event in events:
                answer = await _post(client, event, stop, backoff)
                watcher.mark_reported(event)
                posted += 1
                if on_report is not None:
                    on_report(event, answer)
                if clock() - saved_at > 1.0:
                    watcher.save()
                    saved_at = clock()
            watcher.save()
            if once and not watcher.unsettled:
                break
            await _sleep(stop, watcher.settings.interval_s)
    except _Stopped:
        pass
    finally:
        watcher.save()
    return posted


async def _post(client: AsyncClient, event: Event, stop: asyncio.Event,
                backoff: tuple[float, float]) -> dict[str, Any]:
    delay = backoff[0]
    while True:
        try:
            return await client.post_event(event.type, event.subject, event.data,
                                           source=event.source, id=event.id)
        except ServerUnavailable as exc:
            logger.warning("cannot post %s for %s: %s; retrying in %.1fs", event.type,
                           event.subject, exc.message, delay)
        if await _sleep(stop, delay):
            raise _Stopped
        delay = min(backoff[1], delay * 2)


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; True if it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
