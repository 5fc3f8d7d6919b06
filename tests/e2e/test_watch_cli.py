"""`bridgehead watch` as a real process against a real server: a file dropped into the
directory becomes one ``file.created`` event, also across restarts of the watcher, with its
state kept (the watcher skips the file) or lost (the server drops the re-post by its id)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Proc, Stack, env_for, eventually, make_token, stack

pytestmark = pytest.mark.slow

CSV = "t,signal\n0.0,1.0\n0.1,0.8\n"


def file_events(s: Stack) -> list[dict[str, Any]]:
    page = httpx.get(f"{s.server.url}/v1/events", params={"limit": 1000}, timeout=10,
                     headers={"Authorization": f"Bearer {s.admin}"}).json()
    return [e for e in page["events"] if e["type"] == "file.created"]


def reported(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def test_a_dropped_file_is_one_event_across_watcher_restarts(tmp_path: Path) -> None:
    home, incoming = tmp_path / "home", tmp_path / "incoming"
    home.mkdir()
    incoming.mkdir()
    with stack(home, agent=False) as s:
        env = env_for(home, BRIDGEHEAD_URL=s.server.url,
                      BRIDGEHEAD_TOKEN=make_token(s.dsn, "client"))

        def watcher(n: int) -> Proc:
            return Proc(["watch", str(incoming), "--glob", "*.csv", "--debounce", "300ms",
                         "--interval", "0.1s", "--json"], home / f"watch-{n}.log", env).start()

        first = watcher(1)
        part = incoming / "run1.csv.part"  # written under a temp name, renamed into place
        part.write_text(CSV)
        part.rename(incoming / "run1.csv")
        (incoming / "notes.txt").write_text("not a csv")
        [event] = eventually(lambda: file_events(s), 30, what="the file.created event")
        path = os.path.realpath(incoming / "run1.csv")
        assert event["subject"] == path and event["source"].startswith("bridgehead.watch/")
        assert event["data"] == {
            "path": path, "name": "run1.csv", "stem": "run1", "suffix": ".csv",
            "dir": os.path.dirname(path), "size": len(CSV),
            "mtime": (incoming / "run1.csv").stat().st_mtime_ns / 1e9}
        assert first.kill(signal.SIGTERM) == 0, first.output()
        assert [(r["id"], r["seq"]) for r in reported(first)] == [(event["id"], event["seq"])]

        # restarted with its state: run1 is known, only the new file is posted
        second = watcher(2)
        (incoming / "run2.csv").write_text(CSV * 2)
        eventually(lambda: len(file_events(s)) == 2, 30, what="run2's event")
        assert second.kill(signal.SIGTERM) == 0, second.output()
        assert [r["data"]["name"] for r in reported(second)] == ["run2.csv"]

        # state lost (as if killed before saving): both are posted again, the server keeps one
        [state] = (home / "watch").glob("*.json")
        state.unlink()
        third = watcher(3)
        eventually(lambda: len(reported(third)) == 2, 30, what="the re-posts")
        third.kill(signal.SIGTERM)
        events = file_events(s)
        assert sorted(e["data"]["name"] for e in events) == ["run1.csv", "run2.csv"]
        assert {r["id"]: r["seq"] for r in reported(third)} == {e["id"]: e["seq"]
                                                               for e in events}


def test_the_events_example_turns_a_dropped_csv_into_a_plot(tmp_path: Path) -> None:
    """examples/events: watch -> file.created -> reduce job -> job.finished -> plot job."""
    home, incoming = tmp_path / "home", tmp_path / "incoming data"
    home.mkdir()
    incoming.mkdir()
    examples = Path(__file__).parents[2] / "examples" / "events"
    with stack(home) as s:
        admin = env_for(home, BRIDGEHEAD_URL=s.server.url, BRIDGEHEAD_TOKEN=s.admin)
        applied = subprocess.run(
            [sys.executable, "-m", "bridgehead.cli.main", "rules", "apply",
             str(examples / "rules.yaml")], env=admin, capture_output=True, text=True,
            timeout=60)
        assert applied.returncode == 0, applied.stderr
        assert "2 rules applied" in applied.stdout
        env = env_for(home, BRIDGEHEAD_URL=s.server.url,
                      BRIDGEHEAD_TOKEN=make_token(s.dsn, "client"))
        watcher = Proc(["watch", str(incoming), "--glob", "*.csv", "--debounce", "300ms"],
                       home / "watch.log", env).start()
        shutil.copy(examples / "sample.csv", incoming / "sample.csv")
        eventually(lambda: (incoming / "sample.png").exists(), 60, what="the plot")
        watcher.kill(signal.SIGTERM)
        assert (incoming / "sample.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((incoming / "sample.summary.json").read_text())["rows"] == 200
        assert f"file.created {incoming / 'sample.csv'}" in watcher.output()
