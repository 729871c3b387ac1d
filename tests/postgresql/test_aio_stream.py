"""``notifier.stream()``: async iteration, the bounded buffer's overflow policies, a clean end."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from sqlnotify import (
    ChangeEvent,
    Notifier,
    Operation,
    SQLNotifyConfigurationError,
    SQLNotifyStreamOverflowError,
    signals,
)
from sqlnotify.testing import async_wait_until

TIMEOUT = 10.0


def make_table(engine: sa.Engine, schema: str) -> sa.Table:
    table = sa.Table(
        "item",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        schema=schema,
    )
    table.metadata.create_all(engine)
    return table


async def ainsert(engine: sa.Engine, table: sa.Table, *names: str, per_tx: int = 1) -> None:
    """Insert one row per name, ``per_tx`` rows per transaction, off the loop."""

    def work() -> None:
        for start in range(0, len(names), per_tx):
            with engine.begin() as conn:
                conn.execute(table.insert(), [{"name": n} for n in names[start : start + per_tx]])

    await asyncio.to_thread(work)


async def wait_for(predicate: Any, what: str) -> None:
    await async_wait_until(predicate, TIMEOUT, what)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def setup(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> tuple[Notifier, sa.Table]:
    table = make_table(pg_engine, schema)
    notifier = Notifier(pg_engine)
    notifiers.append(notifier)
    notifier.watch(table, Operation.INSERT, extra_columns=["name"])
    return notifier, table


def names(events: list[ChangeEvent]) -> list[str]:
    return [e.extra_columns["name"] for e in events]


def test_stream_yields_filtered_events_and_ends_on_astop(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine
) -> None:
    notifier, table = setup

    async def main() -> tuple[list[ChangeEvent], list[ChangeEvent]]:
        await notifier.astart()
        every = notifier.stream(table, Operation.INSERT)
        only_b = notifier.stream(
            table, Operation.INSERT, filters=[{"column": "name", "value": "b"}]
        )
        await ainsert(pg_engine, table, "a", "b", "c")
        first = [await asyncio.wait_for(every.__anext__(), TIMEOUT) for _ in range(3)]
        await wait_for(lambda: len(only_b) == 1, "the filtered event")
        await notifier.astop()
        # Buffered events are still read after the stop, then the stream ends.
        rest = [e async for e in only_b]
        assert [e async for e in every] == []
        assert every.ended and only_b.ended
        return first, rest

    first, rest = run(main())
    assert names(first) == ["a", "b", "c"]
    assert names(rest) == ["b"]


def test_a_waiting_reader_is_woken_and_ended(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine
) -> None:
    notifier, table = setup

    async def main() -> list[str]:
        await notifier.astart()
        stream = notifier.stream(table, Operation.INSERT)
        got: list[str] = []

        async def read() -> None:
            async for event in stream:
                got.append(event.extra_columns["name"])
                if len(got) == 2:
                    await ainsert(pg_engine, table, "third")

        reader = asyncio.create_task(read())
        await ainsert(pg_engine, table, "first", "second")
        await wait_for(lambda: len(got) == 3, "three events")
        await notifier.astop()
        await asyncio.wait_for(reader, TIMEOUT)  # the loop ended with StopAsyncIteration
        return got

    assert run(main()) == ["first", "second", "third"]


def test_stream_ends_on_sync_stop_too(setup: tuple[Notifier, sa.Table]) -> None:
    notifier, table = setup

    async def main() -> list[ChangeEvent]:
        stream = notifier.stream(table, Operation.INSERT)
        with pytest.warns(RuntimeWarning, match="called from a running event loop"):
            notifier.start()
        await asyncio.to_thread(notifier.stop)
        return [e async for e in stream]

    assert run(main()) == []


def test_aclose_and_async_with_disconnect_the_stream(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine
) -> None:
    notifier, table = setup
    signal = notifier.signal(table, Operation.INSERT)

    async def main() -> None:
        async with notifier:
            before = len(signal.receivers)
            async with notifier.stream(table, Operation.INSERT) as stream:
                assert len(signal.receivers) == before + 1
            assert stream.ended and len(signal.receivers) == before
            other = notifier.stream(table, Operation.INSERT)
            await other.aclose()
            assert len(signal.receivers) == before
            await ainsert(pg_engine, table, "a")
            await wait_for(lambda: notifier.stats.dispatched == 1, "the event")
            assert len(stream) == 0 and len(other) == 0

    run(main())


def fill(
    notifier: Notifier, table: sa.Table, pg_engine: sa.Engine, count: int, **options: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """Open a stream, let ``count`` events arrive without reading, return it and its signals."""
    overflows: list[dict[str, Any]] = []

    def on_overflow(sender: Any, **kw: Any) -> None:
        overflows.append(kw)

    signals.stream_overflow.connect(on_overflow, sender=notifier, weak=False)

    async def main() -> Any:
        await notifier.astart()
        stream = notifier.stream(table, Operation.INSERT, **options)
        await ainsert(pg_engine, table, *(f"r{i}" for i in range(count)), per_tx=count)
        await wait_for(lambda: notifier.stats.dispatched == count, f"{count} dispatched")
        return stream

    try:
        stream = run(main())
    finally:
        signals.stream_overflow.disconnect(on_overflow, sender=notifier)
    return stream, overflows


async def drain(stream: Any) -> list[ChangeEvent]:
    return [e async for e in stream]


def test_drop_oldest_keeps_the_newest_and_counts_logs_and_signals_drops(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    notifier, table = setup
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        stream, overflows = fill(notifier, table, pg_engine, 10, maxsize=3)
        notifier.stop()
    assert names(run(drain(stream))) == ["r7", "r8", "r9"]
    assert stream.dropped == 7
    assert notifier.stats.stream_dropped == 7
    assert [o["policy"] for o in overflows] == ["drop_oldest"] * 7
    assert names([o["event"] for o in overflows]) == [f"r{i}" for i in range(7)]
    assert all(o["stream"] is stream for o in overflows)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "is full (maxsize=3): dropping events (overflow='drop_oldest')" in text
    assert "dropped 7 event(s) while it was full" in text


def test_drop_newest_keeps_the_oldest(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine
) -> None:
    notifier, table = setup
    stream, overflows = fill(notifier, table, pg_engine, 10, maxsize=4, overflow="drop_newest")
    notifier.stop()
    assert names(run(drain(stream))) == ["r0", "r1", "r2", "r3"]
    assert stream.dropped == 6 == len(overflows) == notifier.stats.stream_dropped
    assert names([o["event"] for o in overflows]) == [f"r{i}" for i in range(4, 10)]


def test_raise_delivers_the_buffered_events_then_the_error(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine
) -> None:
    notifier, table = setup
    stream, overflows = fill(notifier, table, pg_engine, 5, maxsize=2, overflow="raise")

    async def read() -> list[ChangeEvent]:
        got = []
        with pytest.raises(SQLNotifyStreamOverflowError, match="buffer of 2 events") as info:
            async for event in stream:
                got.append(event)
        assert info.value.maxsize == 2
        return got

    assert names(run(read())) == ["r0", "r1"]
    assert stream.ended
    assert stream.dropped == 3 == len(overflows)


def test_block_makes_the_dispatcher_wait_for_the_reader(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine
) -> None:
    notifier, table = setup
    count = 50

    async def main() -> list[ChangeEvent]:
        async with notifier:
            stream = notifier.stream(
                table, Operation.INSERT, maxsize=2, overflow="block", block_timeout=TIMEOUT
            )
            got: list[ChangeEvent] = []

            async def read() -> None:
                async for event in stream:
                    got.append(event)
                    await asyncio.sleep(0)

            reader = asyncio.create_task(read())
            await ainsert(pg_engine, table, *(f"r{i}" for i in range(count)), per_tx=count)
            await wait_for(lambda: len(got) == count, f"{count} events")
            await stream.aclose()
            await asyncio.wait_for(reader, TIMEOUT)
            return got

    got = run(main())
    assert names(got) == [f"r{i}" for i in range(count)]
    assert notifier.stats.stream_dropped == 0


def test_block_drops_after_its_bound_without_a_reader(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine
) -> None:
    notifier, table = setup
    stream, overflows = fill(
        notifier, table, pg_engine, 4, maxsize=2, overflow="block", block_timeout=0.01
    )
    notifier.stop()
    assert names(run(drain(stream))) == ["r0", "r1"]
    assert stream.dropped == 2 == len(overflows)


def test_bad_stream_options_are_rejected(setup: tuple[Notifier, sa.Table]) -> None:
    notifier, table = setup
    with pytest.raises(SQLNotifyConfigurationError, match=r"overflow=.lossy. is not .*drop_oldest"):
        notifier.stream(table, Operation.INSERT, overflow="lossy")
    with pytest.raises(SQLNotifyConfigurationError, match="maxsize"):
        notifier.stream(table, Operation.INSERT, maxsize=0)
    with pytest.raises(SQLNotifyConfigurationError, match="no watch"):
        notifier.stream(table, Operation.DELETE)


def test_a_full_block_stream_does_not_hold_up_stop(
    setup: tuple[Notifier, sa.Table], pg_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    notifier, table = setup

    async def main() -> Any:
        await notifier.astart()
        stream = notifier.stream(
            table, Operation.INSERT, maxsize=2, overflow="block", block_timeout=60.0
        )
        await ainsert(pg_engine, table, *(f"r{i}" for i in range(5)), per_tx=5)
        await wait_for(lambda: len(stream) == 2, "a full buffer")
        await notifier.astop()
        return stream

    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        stream = run(main())
    # The dispatcher was waiting for room for r2; stopping made it drop r2..r4 at once.
    assert stream.dropped == 3
    assert names(run(drain(stream))) == ["r0", "r1"]
    assert "did not stop" not in caplog.text
