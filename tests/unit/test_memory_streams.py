"""``notifier.stream()`` on the in-memory dialect: async iteration, filters, overflow policies."""

from __future__ import annotations

import asyncio

import pytest
from memory_setup import TIMEOUT, Memory, memory_fixture  # noqa: F401

from sqlnotify import ChangeEvent, SQLNotifyConfigurationError, SQLNotifyStreamOverflowError
from sqlnotify.testing import async_wait_until


def ids(events: list[ChangeEvent]) -> list[int]:
    return [e.id for e in events]


def test_a_stream_yields_events_in_order_and_ends_after_astop(memory: Memory) -> None:
    n = memory.notifier()

    async def main() -> tuple[list[int], list[int], list[int]]:
        await n.astart()
        every = n.stream(memory.table, "insert")
        named = n.stream(memory.table, "insert", filters={"name": "b"})
        memory.insert(1, 2, name="a")
        memory.insert(3, name="b")
        first = [await asyncio.wait_for(every.__anext__(), TIMEOUT) for _ in range(3)]
        await async_wait_until(lambda: len(named) == 1, TIMEOUT, "the filtered event")
        await n.astop()
        rest = [e async for e in every]
        only_b = [e async for e in named]
        assert every.ended and named.ended
        return ids(first), ids(rest), ids(only_b)

    assert asyncio.run(main()) == ([1, 2, 3], [], [3])


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", [4, 5]), ("drop_newest", [1, 2])])
def test_a_full_stream_drops_by_its_policy(memory: Memory, policy: str, kept: list[int]) -> None:
    n = memory.notifier()

    async def main() -> tuple[list[int], int]:
        await n.astart()
        stream = n.stream(memory.table, "insert", maxsize=2, overflow=policy)
        memory.insert(1, 2, 3, 4, 5)
        await async_wait_until(lambda: n.health()["dispatched"] == 5, TIMEOUT, "dispatch")
        await n.astop()
        return ids([e async for e in stream]), stream.dropped

    assert asyncio.run(main()) == (kept, 3)
    assert n.health()["stream_dropped"] == 3


def test_an_overflowing_raise_stream_hands_out_its_buffer_then_the_error(memory: Memory) -> None:
    n = memory.notifier()

    async def main() -> list[int]:
        await n.astart()
        stream = n.stream(memory.table, "insert", maxsize=2, overflow="raise")
        memory.insert(1, 2, 3)
        await async_wait_until(lambda: n.health()["dispatched"] == 3, TIMEOUT, "dispatch")
        got = []
        with pytest.raises(SQLNotifyStreamOverflowError) as caught:
            async for event in stream:
                got.append(event.id)
        assert caught.value.maxsize == 2
        assert stream.ended
        await n.astop()
        return got

    assert asyncio.run(main()) == [1, 2]


def test_a_closed_stream_ends_and_gets_nothing_more(memory: Memory) -> None:
    n = memory.notifier()

    async def main() -> list[int]:
        await n.astart()
        async with n.stream(memory.table, "insert") as stream:
            memory.insert(1)
            first = await asyncio.wait_for(stream.__anext__(), TIMEOUT)
        memory.insert(2)
        await async_wait_until(lambda: n.health()["dispatched"] == 2, TIMEOUT, "dispatch")
        rest = [e async for e in stream]
        await n.astop()
        return [first.id, *ids(rest)]

    assert asyncio.run(main()) == [1]


def test_stream_options_are_checked(memory: Memory) -> None:
    n = memory.notifier()
    with pytest.raises(SQLNotifyConfigurationError, match="maxsize"):
        n.stream(memory.table, "insert", maxsize=0)
    with pytest.raises(SQLNotifyConfigurationError, match="overflow policy"):
        n.stream(memory.table, "insert", overflow="forget")
