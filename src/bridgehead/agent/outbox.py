"""The agent's durable outbox: reports wait here, in order, until the server has them.

A SQLite file under the agent's state dir. Writes are fsynced (``synchronous=FULL``) before
the agent acts on them, so a report recorded is a report that will arrive, whichever process
dies. Log shipping offsets live in the same file and move in the same transaction as the
chunk they account for, so a restarted agent resumes each log exactly where it stopped.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bridgehead.domain.jobs import JobState, Transition, Usage
from bridgehead.store.base import LogChunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log_offsets (
    job_id TEXT NOT NULL, stream TEXT NOT NULL, pos INTEGER NOT NULL,
    PRIMARY KEY (job_id, stream));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Batch:
    last_seq: int
    transitions: list[Transition]
    logs: list[LogChunk]


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def meta(self, key: str, default: str) -> str:
        """A persistent value, set to ``default`` the first time it is asked for."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, default))
            return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def put(self, transitions: Sequence[Transition] = (), logs: Sequence[LogChunk] = ()) -> None:
        """Record reports (and advance the log offsets they carry) in one transaction."""
        if not transitions and not logs:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for chunk in logs:
                    self._db.execute("INSERT INTO outbox (kind, body) VALUES ('log', ?)",
                                     (_encode_chunk(chunk),))
                    self._db.execute(
                        "INSERT INTO log_offsets VALUES (?, ?, ?) ON CONFLICT (job_id, stream) "
                        "DO UPDATE SET pos = excluded.pos",
                        (chunk.job_id, chunk.stream, chunk.pos + len(chunk.data)),
                    )
                for t in transitions:
                    self._db.execute("INSERT INTO outbox (kind, body) VALUES ('transition', ?)",
                                     (json.dumps(_transition_dict(t)),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def offset(self, job_id: str, stream: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT pos FROM log_offsets WHERE job_id = ? AND stream = ?",
                                   (job_id, stream)).fetchone()
        return row[0] if row else 0

    def forget_offsets(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM log_offsets WHERE job_id = ?", (job_id,))

    def peek(self, max_items: int, max_bytes: int) -> Batch | None:
        """The oldest reports, in order, up to ``max_items`` or about ``max_bytes``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, body FROM outbox ORDER BY seq LIMIT ?", (max_items,)
            ).fetchall()
        if not rows:
            return None
        transitions, logs, size, last = [], [], 0, rows[0][0]
        for seq, kind, body in rows:
            if size and size + len(body) > max_bytes:
                break
            size += len(body)
            last = seq
            if kind == "log":
                logs.append(_decode_chunk(body))
            else:
                transitions.append(_transition_from(json.loads(body)))
        return Batch(last_seq=last, transitions=transitions, logs=logs)

    def ack(self, last_seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (last_seq,))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


def _transition_dict(t: Transition) -> dict[str, object]:
    data = asdict(t)
    data["state"] = t.state.value
    return data


def _transition_from(data: dict) -> Transition:
    usage = data.pop("usage", None)
    return Transition(**{**data, "state": JobState(data["state"]),
                         "usage": Usage(**usage) if usage else None})


def _encode_chunk(c: LogChunk) -> bytes:
    head = json.dumps({"job_id": c.job_id, "stream": c.stream, "pos": c.pos}).encode()
    return head + b"\n" + c.data


def _decode_chunk(body: bytes) -> LogChunk:
    head, _, data = bytes(body).partition(b"\n")
    meta = json.loads(head)
    return LogChunk(job_id=meta["job_id"], stream=meta["stream"], pos=meta["pos"], data=data)
