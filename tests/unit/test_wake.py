"""Push wake-ups: a datagram to the agent's socket calls it back; senders never fail."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bridgehead.wake import WakeListener, prune_dead, send_wake


async def test_a_wake_up_reaches_the_listener(tmp_path: Path) -> None:
    got: list[str] = []
    woke = asyncio.Event()

    def on_wake(message: str) -> None:
        got.append(message)
        woke.set()

    listener = WakeListener(tmp_path / "wake.sock", on_wake)
    assert listener.open()
    try:
        assert send_wake(tmp_path / "wake.sock", "job-1")
        await asyncio.wait_for(woke.wait(), 2)
        assert got == ["job-1"]
    finally:
        listener.close()
    assert not (tmp_path / "wake.sock").exists()


def test_sending_with_nobody_listening_is_harmless(tmp_path: Path) -> None:
    assert send_wake(tmp_path / "nobody.sock") is False
    assert send_wake("/nonexistent/dir/wake.sock") is False


async def test_a_path_too_long_for_a_socket_falls_back_to_polling(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    assert WakeListener(deep / "wake.sock", lambda _m: None).open() is False


async def test_dead_sockets_in_a_shared_wake_dir_are_pruned(tmp_path: Path) -> None:
    live = WakeListener(tmp_path / "live.sock", lambda _m: None)
    assert live.open()
    dead = WakeListener(tmp_path / "dead.sock", lambda _m: None)
    assert dead.open()
    dead._sock.close()  # killed: its socket file stays behind, with nobody listening
    mine = tmp_path / "mine.sock"
    mine.touch()
    assert prune_dead(tmp_path, keep=mine) == 1
    assert sorted(p.name for p in os.scandir(tmp_path)) == ["live.sock", "mine.sock"]
    live.close()
