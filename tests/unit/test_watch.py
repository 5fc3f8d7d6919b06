"""The directory watcher: a file is reported once, when complete, as its real path; the clock
is passed to ``scan`` (nothing sleeps), and the server is an httpx mock transport."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.cli.watch import parse_seconds
from bridgehead.client import AsyncClient
from bridgehead.domain.events import Event
from bridgehead.errors import AuthError, ConfigError, InvalidSpec
from bridgehead.sources.watch import (
    DirectoryWatcher,
    FileStat,
    WatchSettings,
    default_state_path,
    run_watch,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


def make(root: Path, **kw: Any) -> DirectoryWatcher:
    kw.setdefault("state_path", root.parent / "state.json")
    return DirectoryWatcher(WatchSettings(roots=(root,), **kw), hostname="host1")


def real(path: Path) -> str:
    return os.path.realpath(path)


def paths(events: list[Event]) -> list[str]:
    return sorted(e.subject for e in events)


def report_all(watcher: DirectoryWatcher, now: float) -> list[Event]:
    events = watcher.scan(now)
    for event in events:
        watcher.mark_reported(event)
    watcher.save()
    return events


def test_a_growing_file_is_reported_once_stable_for_the_debounce(root: Path) -> None:
    data = root / "run1.csv"
    data.write_text("t,signal\n")
    watcher = make(root)
    assert watcher.scan(0.0) == [] and watcher.unsettled == 1
    with data.open("a") as fh:
        fh.write("0.0,1.0\n")
    assert watcher.scan(1.5) == []
    assert watcher.scan(3.0) == []  # unchanged for 1.5 s only: the size changed at 1.5
    [event] = watcher.scan(3.5)
    assert watcher.unsettled == 0
    stat = data.stat()
    path = os.path.realpath(data)
    assert event.type == "file.created" and event.source == "bridgehead.watch/host1"
    assert event.subject == path
    assert event.id == hashlib.sha256(
        f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    assert event.data == {"path": path, "name": "run1.csv", "stem": "run1", "suffix": ".csv",
                          "dir": os.path.dirname(path), "size": 17,
                          "mtime": stat.st_mtime_ns / 1e9}
    watcher.mark_reported(event)
    assert watcher.scan(10.0) == []


def test_writers_temp_names_are_ignored_and_a_rename_into_place_is_reported(root: Path) -> None:
    for name in ("x.csv.part", ".hidden.csv", "y.tmp", "z.csv~", "a.crdownload", "b.partial"):
        (root / name).write_text("data")
    watcher = make(root)
    assert watcher.scan(0.0) == [] and watcher.scan(5.0) == [] and watcher.unsettled == 0
    (root / "x.csv.part").rename(root / "x.csv")
    assert watcher.scan(6.0) == []
    assert paths(watcher.scan(8.0)) == [os.path.realpath(root / "x.csv")]


def test_empty_files_are_not_complete_unless_allowed(root: Path) -> None:
    (root / "empty.csv").touch()
    watcher = make(root)
    assert watcher.scan(0.0) == [] and watcher.scan(9.0) == []
    assert watcher.unsettled == 0  # stable and empty: nothing to wait for
    allowing = make(root, allow_empty=True, state_path=root.parent / "other.json")
    allowing.scan(0.0)
    assert [e.data["size"] for e in allowing.scan(2.0)] == [0]


def test_the_state_survives_a_restart_and_only_marked_events_count(root: Path) -> None:
    (root / "a.csv").write_text("1")
    (root / "b.csv").write_text("2")
    first = make(root)
    first.scan(0.0)
    a, b = sorted(first.scan(2.0), key=lambda e: e.subject)
    first.mark_reported(a)  # b's post "failed": not marked
    first.save()
    saved = json.loads((root.parent / "state.json").read_text())
    assert list(saved["files"]) == [a.subject] and saved["roots"] == [os.path.realpath(root)]

    second = make(root)
    second.scan(100.0)
    again = second.scan(102.0)
    assert [e.id for e in again] == [b.id]  # same file, same id: the server dedupes it


def test_a_state_file_inside_a_watched_directory_is_not_reported(root: Path) -> None:
    (root / "a.csv").write_text("1")
    watcher = make(root, state_path=root / "state.json")
    watcher.scan(0.0)
    report_all(watcher, 2.0)  # writes state.json into the watched directory
    assert watcher.scan(3.0) == [] and watcher.scan(9.0) == [] and watcher.unsettled == 0


def test_a_rewritten_file_is_a_new_event(root: Path) -> None:
    data = root / "a.csv"
    data.write_text("first")
    watcher = make(root)
    watcher.scan(0.0)
    [old] = report_all(watcher, 2.0)
    data.write_text("second version")
    watcher.scan(3.0)
    [new] = watcher.scan(5.0)
    assert new.subject == old.subject and new.id != old.id and new.data["size"] == 14


def test_deleted_files_leave_the_state(root: Path) -> None:
    (root / "a.csv").write_text("1")
    watcher = make(root)
    watcher.scan(0.0)
    report_all(watcher, 2.0)
    (root / "a.csv").unlink()
    watcher.scan(3.0)
    watcher.save()
    assert json.loads((root.parent / "state.json").read_text())["files"] == {}


def test_symlinks_resolve_and_those_leaving_the_roots_are_ignored(tmp_path: Path,
                                                                  root: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "passwd.csv").write_text("x")
    (root / "escape.csv").symlink_to(outside / "passwd.csv")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "real").mkdir()
    (root / "real" / "data.csv").write_text("inside")
    (root / "alias.csv").symlink_to(root / "real" / "data.csv")
    (root / "dangling.csv").symlink_to(root / "nowhere.csv")
    watcher = make(root, recursive=True)
    watcher.scan(0.0)
    # the alias and the file itself are one real path, reported once
    assert paths(watcher.scan(2.0)) == [os.path.realpath(root / "real" / "data.csv")]


def test_glob_patterns_match_the_name_case_sensitively(root: Path) -> None:
    for name in ("a.csv", "b.txt", "c.h5", "D.CSV"):
        (root / name).write_text("x")
    watcher = make(root, globs=("*.csv", "*.h5"))
    watcher.scan(0.0)
    assert [Path(p).name for p in paths(watcher.scan(2.0))] == ["a.csv", "c.h5"]


def test_recursive_watches_subdirectories_but_not_hidden_ones(root: Path) -> None:
    (root / "top.csv").write_text("x")
    (root / "run" / "1").mkdir(parents=True)
    (root / "run" / "1" / "deep.csv").write_text("x")
    (root / ".snapshot").mkdir()
    (root / ".snapshot" / "old.csv").write_text("x")
    flat = make(root)
    flat.scan(0.0)
    assert [Path(p).name for p in paths(flat.scan(2.0))] == ["top.csv"]
    deep = make(root, recursive=True, state_path=root.parent / "deep.json")
    deep.scan(0.0)
    assert [Path(p).name for p in paths(deep.scan(2.0))] == ["deep.csv", "top.csv"]


def test_from_now_skips_what_is_there_but_not_what_changes(root: Path) -> None:
    (root / "old.csv").write_text("old")
    (root / "growing.csv").write_text("part")
    watcher = make(root, from_now=True)
    assert watcher.scan(0.0) == [] and watcher.unsettled == 0
    (root / "new.csv").write_text("new")
    with (root / "growing.csv").open("a") as fh:
        fh.write(" and the rest")
    watcher.scan(1.0)
    assert [Path(p).name for p in paths(watcher.scan(3.0))] == ["growing.csv", "new.csv"]


def test_an_unlistable_root_reports_nothing_and_forgets_nothing(root: Path) -> None:
    files = [FileStat("/data/a.csv", 10, 1)]

    def scan(roots: Any, settings: Any) -> list[FileStat]:
        if not files:
            raise OSError(116, "Stale file handle", "/data")
        return list(files)

    watcher = DirectoryWatcher(WatchSettings(roots=(root,), state_path=root / "s.json"),
                               scan=scan, hostname="h")
    watcher.scan(0.0)
    report_all(watcher, 2.0)
    files.clear()  # the NFS mount went away
    assert watcher.scan(3.0) == []
    files.append(FileStat("/data/a.csv", 10, 1))
    assert watcher.scan(4.0) == [] and watcher.scan(9.0) == []  # still known as reported


def test_settings_and_state_errors(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidSpec):
        WatchSettings(roots=())
    with pytest.raises(InvalidSpec):
        WatchSettings(roots=(root,), interval_s=0)
    (root.parent / "state.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"state\.json"):
        make(root)
    monkeypatch.setenv("BRIDGEHEAD_HOME", str(root.parent / "home"))
    path = default_state_path(["/b", "/a"], ["*.csv"])
    assert path == default_state_path(["/a", "/b"], ["*.csv"]) != default_state_path(["/a"], ["*"])
    assert path.parent == root.parent / "home" / "watch" and path.suffix == ".json"


def test_events_carry_the_source_given_else_the_hosts(root: Path) -> None:
    (root / "a.csv").write_text("x")
    named = DirectoryWatcher(WatchSettings(roots=(root,), debounce_s=0,
                                           state_path=root.parent / "s.json"),
                             hostname="host1", source="lab-a/watch")
    assert [e.source for e in named.scan(0.0)] == ["lab-a/watch"]
    assert [e.source for e in make(root, debounce_s=0).scan(0.0)] == ["bridgehead.watch/host1"]


def test_durations() -> None:
    assert [parse_seconds(t, "--x") for t in ("0.5", "0.5s", "500ms", "2s", "1m", "2")] == [
        0.5, 0.5, 0.5, 2.0, 60.0, 2.0]
    with pytest.raises(InvalidSpec, match="--debounce"):
        parse_seconds("soon", "--debounce")


@pytest.mark.parametrize("args, words", [
    (("watch", "/no/such/dir"), "not a directory"),
    (("watch", ".", "--debounce", "soon"), "--debounce"),
    (("watch", ".", "--interval", "0"), "interval"),
    (("watch", ".", "--source", " "), "--source"),
])
def test_cli_bad_input_exits_2_with_one_line(args: tuple[str, ...], words: str,
                                             tmp_path: Path) -> None:
    env = {"BRIDGEHEAD_HOME": str(tmp_path), "BRIDGEHEAD_URL": "http://127.0.0.1:9",
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("bridgehead: error:") and words in line


# -- posting ---------------------------------------------------------------------------------
class FlakyServer:
    """Answers 503 ``failures`` times, then logs events like the server (dedupe by id)."""

    def __init__(self, failures: int = 0, status: int = 503) -> None:
        self.failures, self.status = failures, status
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            return httpx.Response(self.status, json={"detail": "down"})
        body = json.loads(request.content)
        if body["id"] not in {b["id"] for b in self.bodies}:
            self.bodies.append(body)
        return httpx.Response(201, json={**body, "seq": len(self.bodies)})


def client_for(server: FlakyServer, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> AsyncClient:
    monkeypatch.setenv("BRIDGEHEAD_HOME", str(tmp_path / "home"))
    return AsyncClient("http://bh.test", "tok", transport=httpx.MockTransport(server))


async def test_run_watch_retries_while_the_server_is_down_and_loses_nothing(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    (root / "a.csv").write_text("1,2\n")
    path = real(root / "a.csv")
    server = FlakyServer(failures=3)
    seen: list[tuple[str, Any]] = []
    watcher = make(root, debounce_s=0, interval_s=0.01)
    async with client_for(server, monkeypatch, tmp_path) as client:
        posted = await run_watch(watcher, client, asyncio.Event(), once=True,
                                 on_report=lambda e, answer: seen.append((e.id, answer["seq"])),
                                 backoff=(0.01, 0.02))
    assert posted == 1 and server.attempts == 4
    [body] = server.bodies
    assert body["type"] == "file.created" and body["source"] == "bridgehead.watch/host1"
    assert body["subject"] == path and body["data"]["size"] == 4
    assert seen == [(body["id"], 1)]
    assert "retrying" in caplog.text
    assert list(json.loads((root.parent / "state.json").read_text())["files"]) == [
        body["subject"]]


async def test_stopping_while_the_server_is_down_marks_nothing(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "a.csv").write_text("1")
    stop = asyncio.Event()
    watcher = make(root, debounce_s=0)
    async with client_for(FlakyServer(failures=10**6), monkeypatch, tmp_path) as client:
        task = asyncio.create_task(run_watch(watcher, client, stop, backoff=(0.01, 0.01)))
        await asyncio.sleep(0.1)
        stop.set()
        assert await asyncio.wait_for(task, 5) == 0
    assert not (root.parent / "state.json").exists()  # nothing was reported


async def test_a_refused_post_is_an_error_not_a_retry(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "a.csv").write_text("1")
    server = FlakyServer(failures=1, status=401)
    async with client_for(server, monkeypatch, tmp_path) as client:
        with pytest.raises(AuthError):
            await run_watch(make(root, debounce_s=0), client, asyncio.Event(), once=True)
    assert server.attempts == 1


async def test_once_waits_for_files_still_being_written(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = root / "a.csv"
    data.write_text("1")
    now = [0.0]

    def clock() -> float:  # each poll advances the clock by 1 s; the file grows until 3 s
        now[0] += 1.0
        if now[0] <= 3.0:
            with data.open("a") as fh:
                fh.write("more")
        return now[0]

    server = FlakyServer()
    watcher = make(root, debounce_s=2, interval_s=0.001)
    async with client_for(server, monkeypatch, tmp_path) as client:
        assert await run_watch(watcher, client, asyncio.Event(), once=True, clock=clock) == 1
    assert server.bodies[0]["data"]["size"] == 13
