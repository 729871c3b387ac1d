"""The asyncio bridge on the in-memory dialect: ``async def`` receivers on the caller's loop."""

from __future__ import annotations

import asyncio
import threading

from memory_setup import TIMEOUT, Memory, memory_fixture  # noqa: F401

from sqlnotify import ChangeEvent, Gap
from sqlnotify.testing import async_wait_until


def test_async_receivers_run_on_the_loop_that_called_astart(memory: Memory) -> None:
    n = memory.notifier()
    seen: list[tuple[int, asyncio.AbstractEventLoop, str]] = []
    sync_threads: list[str] = []

    @n.subscribe(memory.table, "insert")
    async def on_insert(event: ChangeEvent) -> None:
        seen.append((event.id, asyncio.get_running_loop(), threading.current_thread().name))

    @n.subscribe(memory.table, "insert")
    def plain(event: ChangeEvent) -> None:
        sync_threads.append(threading.current_thread().name)

    async def main() -> asyncio.AbstractEventLoop:
        await n.astart()
        assert n.callback_loop is asyncio.get_running_loop()
        memory.insert(1, 2, 3)
        await async_wait_until(lambda: len(seen) == 3, TIMEOUT, "three async callbacks")
        await n.astop()
        assert n.callback_loop is None
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert [s[0] for s in seen] == [1, 2, 3]
    assert all(s[1] is loop for s in seen)
    assert {s[2] for s in seen} == {threading.current_thread().name}
    assert sync_threads == ["sqlnotify-dispatcher"] * 3


def test_calls_of_one_subscription_never_overlap_and_astop_drains_them(memory: Memory) -> None:
    n = memory.notifier()
    order: list[int] = []
    active = peak = 0

    async def main() -> None:
        nonlocal active, peak
        gate = asyncio.Event()

        @n.subscribe(memory.table, "insert")
        async def slow(event: ChangeEvent) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            if event.id == 1:
                await gate.wait()
            order.append(event.id)
            active -= 1

        await n.astart()
        memory.insert(1, 2, 3)
        # Every event went through the dispatcher: 2 and 3 wait behind 1 on the loop.
        await async_wait_until(lambda: n.health()["dispatched"] == 3, TIMEOUT, "dispatch")
        assert order == []
        gate.set()
        await n.astop()  # waits for the queued callbacks (drain_timeout)

    asyncio.run(main())
    assert order == [1, 2, 3]
    assert peak == 1
    assert n.health()["async_abandoned"] == 0


def test_a_failing_async_receiver_is_counted_and_the_next_event_still_runs(
    memory: Memory,
) -> None:
    n = memory.notifier()
    done: list[int] = []

    @n.subscribe(memory.table, "insert")
    async def flaky(event: ChangeEvent) -> None:
        if event.id == 1:
            raise ValueError("first one fails")
        done.append(event.id)

    async def main() -> None:
        await n.astart()
        memory.insert(1, 2)
        await async_wait_until(lambda: done == [2], TIMEOUT, "the second event")
        await async_wait_until(lambda: n.health()["failed"] == 1, TIMEOUT, "the failure count")
        await n.astop()

    asyncio.run(main())


def test_an_async_gap_callback_runs_on_the_loop(memory: Memory, fast_reconnect: None) -> None:
    n = memory.notifier()
    gaps: list[tuple[Gap, asyncio.AbstractEventLoop]] = []

    @n.on_gap
    async def resync(gap: Gap) -> None:
        gaps.append((gap, asyncio.get_running_loop()))

    async def main() -> asyncio.AbstractEventLoop:
        await n.astart()
        assert memory.db.disconnect() == 1
        await async_wait_until(lambda: gaps, TIMEOUT, "a gap after the disconnect")
        await n.astop()
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    gap, where = gaps[0]
    assert where is loop
    assert gap.reason == "disconnected"
    assert gap.channels == (n.watches[0].channel,)
