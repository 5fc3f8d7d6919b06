"""The change hub: subscribe-before-read waits, and closing ends every long-poll at once."""

from __future__ import annotations

import asyncio
import time

from bridgehead.store.hub import ChangeHub


async def test_publish_wakes_only_the_watchers_of_that_key() -> None:
    hub = ChangeHub()
    async with hub.watch("job:a") as a, hub.watch("job:b") as b:
        hub.publish(["job:a"])
        assert await a.wait(1) is True
        assert await b.wait(0.05) is False
    assert hub.waiting == 0


async def test_a_change_before_the_wait_is_not_missed() -> None:
    hub = ChangeHub()
    async with hub.watch("k") as w:
        hub.publish(["k"])  # between the read and the wait
        assert await w.wait(1) is True


async def test_close_ends_waits_now_and_later() -> None:
    hub = ChangeHub()
    async with hub.watch("k") as w:
        waiter = asyncio.create_task(w.wait(30))
        await asyncio.sleep(0.05)
        hub.close()
        assert await asyncio.wait_for(waiter, 1) is True
        started = time.monotonic()
        assert await w.wait(30) is False
        assert time.monotonic() - started < 1
