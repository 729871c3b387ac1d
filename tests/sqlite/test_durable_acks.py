"""Durable positions wait for every receiver: async callbacks, stop() from a receiver, full queues.

Each test runs against PostgreSQL (a durable watch) and SQLite (a named
consumer of the change log): the position a consumer saves never passes an
event whose receivers did not all finish, so what a stop abandons comes again
after a restart, and no receiver runs once stop() has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from support.sqlite import file_engine
from support.watching import make_table

from sqlnotify import (
    ChangeEvent,
    Notifier,
    SQLNotifyConfigurationError,
    SQLNotifyStreamOverflowError,
    signals,
)
from sqlnotify._pipeline.durable import Acks
from sqlnotify.testing import async_wait_until, wait_until

TIMEOUT = 10.0
SIX = [(i, "x") for i in range(1, 7)]


@dataclasses.dataclass
class Backend:
    name: str
    engine: sa.Engine
    target: Any

    def insert(self, rows: list[tuple[int, str]]) -> None:
        """All ``rows`` ``(id, note)`` in one transaction."""
        with self.engine.begin() as conn:
            for i, note in rows:
                conn.execute(
                    sa.text("INSERT INTO item (id, note) VALUES (:i, :n)"), {"i": i, "n": note}
                )

    def notifier(self, notifiers: list[Notifier], **options: Any) -> Notifier:
        n = Notifier(self.engine, consumer="acks", **options)
        n.watch(self.target, "insert", extra_columns=["note"], durable=True)
        notifiers.append(n)
        return n


@pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("sqlite", marks=pytest.mark.sqlite),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "postgresql":
        engine = request.getfixturevalue("pg_schema_engine")
        yield Backend("postgresql", engine, make_table(engine))
        return
    path = request.getfixturevalue("sqlite_path")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, note TEXT)")
    engine = file_engine(path)
    yield Backend("sqlite", engine, "item")
    engine.dispose()


def restart_and_collect(backend: Backend, notifiers: list[Notifier], wanted: set[int]) -> list[int]:
    """Start a new notifier under the same consumer name; return the ids it gets."""
    n = backend.notifier(notifiers)
    got: list[int] = []

    @n.subscribe(backend.target, "insert")
    async def record(event: ChangeEvent) -> None:
        got.append(event.id)

    n.start()
    wait_until(lambda: wanted <= set(got), TIMEOUT, f"rows {sorted(wanted)} after the restart")
    n.stop()
    return got


def test_async_callbacks_abandoned_at_stop_come_again_after_restart(
    backend: Backend, notifiers: list[Notifier]
) -> None:
    n1 = backend.notifier(notifiers, drain_timeout=0.2)
    started: list[int] = []
    handled: list[int] = []
    stop_returned = threading.Event()
    late: list[int] = []

    @n1.subscribe(backend.target, "insert")
    async def slow(event: ChangeEvent) -> None:
        if stop_returned.is_set():
            late.append(event.id)
        started.append(event.id)
        if event.id > 2:
            await asyncio.Event().wait()  # never set: slower than drain_timeout
        handled.append(event.id)

    n1.start()
    backend.insert(SIX)
    wait_until(
        lambda: started == [1, 2, 3] and n1.stats.dispatched == 6,
        TIMEOUT,
        "rows 1 and 2 handled, row 3 stuck, all six dispatched",
    )
    n1.stop()
    stop_returned.set()
    assert handled == [1, 2]
    assert n1.stats.async_abandoned == 4  # row 3 cancelled, rows 4 to 6 never run
    again = restart_and_collect(backend, notifiers, {3, 4, 5, 6})
    assert set(handled) | set(again) == set(range(1, 7))
    assert again == sorted(again)  # commit order, even when replayed
    assert late == []
    # Everything finished in the second run: a third gets only what is new.
    backend.insert([(7, "x")])
    assert restart_and_collect(backend, notifiers, {7}) == [7]


def test_a_sync_receiver_that_stops_the_notifier_loses_nothing_after_it(
    backend: Backend, notifiers: list[Notifier]
) -> None:
    n1 = backend.notifier(notifiers)
    seen: list[int] = []
    after: list[int] = []
    late: list[str] = []
    stop_returned = threading.Event()

    @n1.subscribe(backend.target, "insert")
    def first(event: ChangeEvent) -> None:
        if stop_returned.is_set():
            late.append(f"first {event.id}")
        seen.append(event.id)
        if event.extra_columns["note"] == "shutdown":
            n1.stop()
            stop_returned.set()

    @n1.subscribe(backend.target, "insert")
    def second(event: ChangeEvent) -> None:
        if stop_returned.is_set():
            late.append(f"second {event.id}")
        after.append(event.id)

    @n1.subscribe(backend.target, "insert")
    async def third(event: ChangeEvent) -> None:
        if stop_returned.is_set():
            late.append(f"async {event.id}")

    n1.start()
    backend.insert([(1, "x"), (2, "x"), (3, "shutdown"), (4, "x"), (5, "x"), (6, "x")])
    assert stop_returned.wait(TIMEOUT), "the shutdown row stops the notifier"
    assert not n1.is_running
    assert seen == [1, 2, 3]
    assert after == [1, 2]  # the shutdown row's later receivers do not run after stop()
    again = restart_and_collect(backend, notifiers, {3, 4, 5, 6})
    assert again == sorted(again)
    assert late == []


@pytest.mark.parametrize("how", ["astop", "stop"])
def test_an_async_callback_that_stops_the_notifier_loses_nothing_after_it(
    backend: Backend, notifiers: list[Notifier], how: str
) -> None:
    n1 = backend.notifier(notifiers)
    seen: list[int] = []
    late: list[int] = []
    stop_returned = threading.Event()

    @n1.subscribe(backend.target, "insert")
    async def callback(event: ChangeEvent) -> None:
        if stop_returned.is_set():
            late.append(event.id)
        seen.append(event.id)
        if event.extra_columns["note"] == "shutdown":
            if how == "astop":
                await n1.astop()
            else:
                n1.stop()  # blocks this loop: stop() cannot wait, and must not hang
            stop_returned.set()

    async def main() -> None:
        await n1.astart()
        rows = [(1, "x"), (2, "x"), (3, "shutdown"), (4, "x"), (5, "x"), (6, "x")]
        await asyncio.to_thread(backend.insert, rows)
        await async_wait_until(stop_returned.is_set, TIMEOUT, "the shutdown row to stop")

    asyncio.run(main())
    assert not n1.is_running
    assert seen == [1, 2, 3]
    again = restart_and_collect(backend, notifiers, {4, 5, 6})
    assert again == sorted(again)
    assert late == []


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "raise"])
def test_a_full_async_queue_drops_by_its_policy_counts_signals_and_holds_the_position(
    backend: Backend, notifiers: list[Notifier], policy: str
) -> None:
    n1 = backend.notifier(notifiers, async_maxsize=2, async_overflow=policy)
    got: list[int] = []
    dropped: list[tuple[Any, int, str]] = []
    failures: list[BaseException] = []
    gates: list[asyncio.Event] = []

    async def slow(event: ChangeEvent) -> None:
        await gates[0].wait()
        got.append(event.id)

    n1.subscribe(backend.target, "insert")(slow)

    def on_overflow(sender: Any, receiver: Any, event: ChangeEvent, policy: str) -> None:
        dropped.append((receiver, event.id, policy))

    def on_failed(sender: Any, exception: BaseException, **kw: Any) -> None:
        failures.append(exception)

    async def main() -> None:
        gates.append(asyncio.Event())
        await n1.astart()
        await asyncio.to_thread(backend.insert, SIX)
        await async_wait_until(lambda: n1.stats.dispatched == 6, TIMEOUT, "six dispatched")
        gates[0].set()
        await async_wait_until(
            lambda: len(got) + len(dropped) == 6, TIMEOUT, "every row handled or dropped"
        )
        await n1.astop()

    signals.async_overflow.connect(on_overflow, sender=n1)
    signals.receiver_failed.connect(on_failed, sender=n1)
    try:
        asyncio.run(main())
    finally:
        signals.async_overflow.disconnect(on_overflow, sender=n1)
        signals.receiver_failed.disconnect(on_failed, sender=n1)
    ids = [i for _, i, _ in dropped]
    assert len(ids) >= 3  # six rows, one running at most, two waiting
    assert all(r is slow and p == policy for r, _, p in dropped)
    assert n1.stats.async_dropped == len(ids) == n1.health()["async_dropped"]
    assert sorted(got + ids) == list(range(1, 7))
    if policy == "drop_oldest":
        assert max(ids) < min(got)
    else:
        assert max(got) < min(ids)
    if policy == "raise":
        assert len(failures) == len(ids)
        assert all(isinstance(f, SQLNotifyStreamOverflowError) for f in failures)
    else:
        assert failures == []
    # A dropped event's receiver never finished: it comes again after a restart.
    again = restart_and_collect(backend, notifiers, set(ids))
    assert again == sorted(again)


def test_a_full_blocking_async_queue_holds_the_dispatcher_and_stop_still_ends_it(
    backend: Backend, notifiers: list[Notifier]
) -> None:
    n1 = backend.notifier(notifiers, async_maxsize=1, drain_timeout=0.1)  # "block", no limit
    started: list[int] = []
    stop_returned = threading.Event()
    late: list[int] = []

    @n1.subscribe(backend.target, "insert")
    async def stuck(event: ChangeEvent) -> None:
        if stop_returned.is_set():
            late.append(event.id)
        started.append(event.id)
        await asyncio.Event().wait()  # never set

    n1.start()
    backend.insert(SIX)
    bridge = n1._bridge
    assert bridge is not None
    # Row 1 running, row 2 queued, the dispatcher waiting to queue row 3.
    wait_until(
        lambda: (
            started == [1]
            and n1.stats.dispatched == 2
            and any(s.blocked for s in bridge._states.values())
        ),
        TIMEOUT,
        "the dispatcher waiting for room in the full queue",
    )
    n1.stop()  # wakes the waiting dispatcher; nothing may hang
    stop_returned.set()
    assert n1.stats.async_dropped == 0
    assert late == []
    again = restart_and_collect(backend, notifiers, set(range(1, 7)))
    assert again == sorted(again)


def test_acks_pass_a_mark_only_once_every_callback_before_it_is_done() -> None:
    acks = Acks("p0")
    acks.mark("p1")  # nothing open: safe at once
    assert acks.safe == "p1"
    a, b = acks.begin(), acks.begin()
    acks.mark("p2")
    c = acks.begin()
    acks.mark("p3")
    acks.done(b)  # out of order: a is still open
    assert acks.safe == "p1" and not acks.settled
    acks.done(a)
    assert acks.safe == "p2" and acks.unfinished == 1
    acks.done(c)
    assert acks.safe == "p3" and acks.settled
    d = acks.begin()
    acks.mark("p4")  # d is never done (abandoned at stop): the position holds
    assert acks.safe == "p3" and not acks.settled
    acks.hold(d)  # or dropped while running: tracking ends, nothing piles up
    assert acks.begin() == 0
    acks.mark("p5")
    acks.done(d)
    assert acks.safe == "p3" and not acks.settled and acks.unfinished == 0


def test_bad_async_queue_options_are_refused(sqlite_path: str) -> None:
    engine = file_engine(sqlite_path)
    try:
        with pytest.raises(SQLNotifyConfigurationError, match="async_overflow='later'"):
            Notifier(engine, async_overflow="later")
        with pytest.raises(SQLNotifyConfigurationError, match="async_maxsize"):
            Notifier(engine, async_maxsize=0)
        with pytest.raises(SQLNotifyConfigurationError, match="async_block_timeout"):
            Notifier(engine, async_block_timeout=-1)
    finally:
        engine.dispose()
