"""The asyncio bridge: where ``async def`` callbacks run, their order, failures, start and stop."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
import support.watching
from sqlalchemy.ext.asyncio import create_async_engine

from sqlnotify import ChangeEvent, Notifier, Operation, signals
from sqlnotify.testing import EventRecorder, async_wait_until, wait_until

TIMEOUT = 10.0


def make_table(engine: sa.Engine, schema: str) -> sa.Table:
    return support.watching.make_table(
        engine, schema, columns=("name",), nullable=False, server_default="x"
    )


Items = tuple[sa.Table, Notifier]


@pytest.fixture
def items(pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]) -> Items:
    """The ``item`` table and a notifier (not started) watching its inserts, with ``name``."""
    table = make_table(pg_engine, schema)
    notifier = Notifier(pg_engine).watch(table, Operation.INSERT, extra_columns=["name"])
    notifiers.append(notifier)
    return table, notifier


def insert(engine: sa.Engine, table: sa.Table, *names: str, per_tx: int = 1) -> None:
    """Insert one row per name, ``per_tx`` rows per committed transaction."""
    for start in range(0, len(names), per_tx):
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"name": n} for n in names[start : start + per_tx]])


async def ainsert(engine: sa.Engine, table: sa.Table, *names: str, per_tx: int = 1) -> None:
    await asyncio.to_thread(insert, engine, table, *names, per_tx=per_tx)


async def wait_for(predicate: Callable[[], Any], what: str) -> None:
    await async_wait_until(predicate, TIMEOUT, what)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_async_callbacks_run_on_the_astart_loop_and_sync_ones_on_the_dispatcher(
    pg_engine: sa.Engine, items: Items
) -> None:
    table, notifier = items
    seen: list[tuple[str, int, Any]] = []
    sync_threads: list[str] = []

    @notifier.subscribe(table, Operation.INSERT)
    async def on_any(event: ChangeEvent) -> None:
        seen.append(("any", threading.get_ident(), asyncio.get_running_loop()))

    @notifier.subscribe(table, Operation.INSERT, filters={"name": "b"})
    async def on_b(event: ChangeEvent) -> None:
        seen.append(("b", threading.get_ident(), asyncio.get_running_loop()))

    @notifier.subscribe(table, Operation.INSERT)
    def on_sync(event: ChangeEvent) -> None:
        sync_threads.append(threading.current_thread().name)

    async def main() -> tuple[int, Any]:
        await notifier.astart()
        assert notifier.is_running
        assert notifier.loop_thread is None
        await ainsert(pg_engine, table, "a", "b")
        await wait_for(lambda: len(seen) == 3 and len(sync_threads) == 2, "three async calls")
        await notifier.astop()
        return threading.get_ident(), asyncio.get_running_loop()

    thread, loop = run(main())
    assert sorted(name for name, _, _ in seen) == ["any", "any", "b"]
    assert {(t, lp) for _, t, lp in seen} == {(thread, loop)}
    assert sync_threads == ["sqlnotify-dispatcher"] * 2
    assert not notifier.is_running


def test_order_per_subscription_under_load(pg_engine: sa.Engine, items: Items) -> None:
    table, notifier = items
    got: dict[str, list[int]] = {"slow": [], "fast": []}
    overlaps: list[int] = []
    busy = {"slow": False, "fast": False}

    def make(name: str, pause: int) -> Callable[[ChangeEvent], Awaitable[None]]:
        async def callback(event: ChangeEvent) -> None:
            if busy[name]:
                overlaps.append(event.id)
            busy[name] = True
            for _ in range(pause):
                await asyncio.sleep(0)  # let other tasks (and events) interleave
            got[name].append(event.id)
            busy[name] = False

        return callback

    notifier.subscribe(table, Operation.INSERT)(make("slow", 5))
    notifier.subscribe(table, Operation.INSERT)(make("fast", 0))
    total = 600

    async def main() -> None:
        async with notifier:
            # Several writers at once; commit order is what the database decides.
            await asyncio.gather(
                *(ainsert(pg_engine, table, *(["r"] * 100), per_tx=10) for _ in range(6))
            )
            await wait_for(lambda: len(got["slow"]) == total, f"{total} slow callbacks")

    run(main())
    assert overlaps == []
    assert len(got["fast"]) == total
    # Each subscription sees the events in the order the dispatcher received them.
    assert got["slow"] == got["fast"]
    with pg_engine.connect() as conn:
        ids = conn.execute(sa.select(table.c.id)).scalars().all()
    assert sorted(got["slow"]) == sorted(ids)


def test_an_async_callbacks_exception_is_isolated_like_a_sync_receivers(
    pg_engine: sa.Engine,
    items: Items,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, notifier = items
    ok: list[str] = []
    failed_ok: list[str] = []
    failures: list[dict[str, Any]] = []

    @notifier.subscribe(table, Operation.INSERT)
    async def flaky(event: ChangeEvent) -> None:
        if event.extra_columns["name"] == "bad":
            raise ValueError("boom in flaky")
        failed_ok.append(event.extra_columns["name"])

    @notifier.subscribe(table, Operation.INSERT)
    async def steady(event: ChangeEvent) -> None:
        ok.append(event.extra_columns["name"])

    def on_failed(sender: Any, **kw: Any) -> None:
        failures.append({"sender": sender, "thread": threading.get_ident(), **kw})

    signals.receiver_failed.connect(on_failed, sender=notifier)

    async def main() -> int:
        async with notifier:
            await ainsert(pg_engine, table, "a", "bad", "c")
            await wait_for(lambda: len(ok) == 3 and len(failed_ok) == 2, "the other callbacks")
        return threading.get_ident()

    with caplog.at_level(logging.ERROR, logger="sqlnotify"):
        loop_thread = run(main())
    signals.receiver_failed.disconnect(on_failed, sender=notifier)
    assert ok == ["a", "bad", "c"]
    assert failed_ok == ["a", "c"]
    assert notifier.stats.receiver_errors == 1
    assert len(failures) == 1
    failure = failures[0]
    assert failure["sender"] is notifier
    assert failure["receiver"].fn is flaky
    assert isinstance(failure["exception"], ValueError)
    assert failure["event"].extra_columns["name"] == "bad"
    assert failure["thread"] == loop_thread
    messages = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert messages and messages[0].exc_info is not None


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_async_with_on_an_async_engine(
    pg_url: str, schema: str, notifiers: list[Notifier], driver: str
) -> None:
    sync_url = sa.make_url(pg_url)
    async_url = sync_url.set(drivername=f"postgresql+{driver}")
    sync_engine = sa.create_engine(sync_url)
    table = make_table(sync_engine, schema)
    sync_engine.dispose()
    engine = create_async_engine(async_url)
    notifier = Notifier(engine)
    notifiers.append(notifier)
    notifier.watch(table, Operation.INSERT, extra_columns=["name"])
    names: list[str] = []

    @notifier.subscribe(table, Operation.INSERT)
    async def on_insert(event: ChangeEvent) -> None:
        names.append(event.extra_columns["name"])

    async def main() -> None:
        async with notifier as started:
            assert started is notifier and notifier.is_running
            async with engine.begin() as conn:
                await conn.execute(table.insert(), [{"name": "one"}, {"name": "two"}])
            await wait_for(lambda: len(names) == 2, "two events")
        assert not notifier.is_running
        await engine.dispose()

    run(main())
    assert names == ["one", "two"]


def test_start_runs_async_callbacks_on_a_private_loop_thread_that_stop_ends(
    pg_engine: sa.Engine, items: Items
) -> None:
    table, notifier = items
    where: list[tuple[str, Any]] = []
    done = EventRecorder()

    @notifier.subscribe(table, Operation.INSERT)
    async def on_insert(event: ChangeEvent) -> None:
        where.append((threading.current_thread().name, asyncio.get_running_loop()))
        done(event)

    notifier.start()
    thread = notifier.loop_thread
    assert thread is not None and thread.is_alive()
    assert thread.name == "sqlnotify-asyncio"
    insert(pg_engine, table, "a", "b")
    done.wait_for(2, TIMEOUT)
    loop = notifier.callback_loop
    notifier.stop()
    assert where == [("sqlnotify-asyncio", loop)] * 2
    assert not thread.is_alive()
    assert thread not in threading.enumerate()
    assert loop is not None and loop.is_closed()
    assert notifier.loop_thread is None


def test_a_notifier_without_async_callbacks_starts_no_loop_thread(
    pg_engine: sa.Engine, items: Items
) -> None:
    table, notifier = items
    notifier.subscribe(table, Operation.INSERT)(EventRecorder())
    notifier.start()
    assert notifier.loop_thread is None
    assert not [t for t in threading.enumerate() if t.name == "sqlnotify-asyncio"]
    # An async subscription added while running gets the loop thread at once.
    recorder = EventRecorder()

    async def late(event: ChangeEvent) -> None:
        recorder(event)

    notifier.subscribe(table, Operation.INSERT)(late)
    thread = notifier.loop_thread
    assert thread is not None and thread.is_alive()
    insert(pg_engine, table, "a")
    assert recorder.wait_for(1, TIMEOUT)[0].operation is Operation.INSERT
    notifier.stop()
    assert not thread.is_alive()


def test_anotify_sends_a_custom_payload(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    from sqlnotify import SQLNotifyPayloadSizeError

    table = make_table(pg_engine, schema)
    notifier = Notifier(pg_engine)
    notifiers.append(notifier)
    notifier.watch(table, Operation.UPDATE, extra_columns=["name"])
    got: list[ChangeEvent] = []

    @notifier.subscribe(table, Operation.UPDATE)
    async def on_update(event: ChangeEvent) -> None:
        got.append(event)

    async def main() -> None:
        async with notifier:
            await notifier.anotify(table, Operation.UPDATE, payload={"id": 7, "name": "n"})
            await wait_for(lambda: got, "the custom event")
            with pytest.raises(SQLNotifyPayloadSizeError):
                await notifier.anotify(
                    table, Operation.UPDATE, payload={"id": 1, "name": "x" * 9000}
                )

    run(main())
    assert len(got) == 1
    assert got[0].custom and got[0].id == 7 and got[0].extra_columns["name"] == "n"


def test_astop_waits_for_queued_and_running_callbacks(pg_engine: sa.Engine, items: Items) -> None:
    table, notifier = items
    finished: list[int] = []
    started = EventRecorder()

    @notifier.subscribe(table, Operation.INSERT)
    async def slow(event: ChangeEvent) -> None:
        started(event)
        await asyncio.sleep(0.05)
        finished.append(event.id)

    async def main() -> None:
        await notifier.astart()
        await ainsert(pg_engine, table, "a", "b", "c", per_tx=3)
        await wait_for(lambda: len(started) >= 1, "the first callback to start")
        await notifier.astop()
        # astop returned only once every queued callback had finished
        assert len(finished) == 3

    run(main())
    assert notifier.stats.async_abandoned == 0


def test_astop_reports_callbacks_still_pending_after_its_bound(
    pg_engine: sa.Engine,
    items: Items,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, notifier = items
    outcome: list[str] = []
    started = EventRecorder()

    @notifier.subscribe(table, Operation.INSERT)
    async def stuck(event: ChangeEvent) -> None:
        started(event)
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async def main() -> None:
        await notifier.astart()
        await ainsert(pg_engine, table, "a", "b", "c", per_tx=3)
        await wait_for(lambda: len(started) == 1, "the first callback to start")
        await wait_for(lambda: notifier.stats.dispatched == 3, "all three dispatched")
        await notifier.astop(timeout=0.1)

    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        run(main())
    assert outcome == ["cancelled"]
    assert len(started) == 1
    assert notifier.stats.async_abandoned == 3
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "3 async callback(s) still pending" in text
    assert "1 running (cancelled), 2 queued (not run)" in text


def test_astart_failure_leaves_nothing_running(pg_url: str, notifiers: list[Notifier]) -> None:
    from sqlnotify import SQLNotifyConfigurationError

    notifier = Notifier(sa.create_engine(pg_url))
    notifiers.append(notifier)
    notifier.watch("no_such_table_for_astart", Operation.INSERT)

    async def on_insert(event: ChangeEvent) -> None:
        raise AssertionError("never called")

    notifier.subscribe("no_such_table_for_astart", Operation.INSERT)(on_insert)
    before = {t.name for t in threading.enumerate()}

    async def main() -> None:
        with pytest.raises(SQLNotifyConfigurationError, match="no_such_table_for_astart"):
            await notifier.astart()

    run(main())
    assert not notifier.is_running
    after = {t.name for t in threading.enumerate()}
    assert not {n for n in after - before if n.startswith("sqlnotify")}


def test_stop_after_the_loop_closed_counts_the_callbacks_it_could_not_run(
    pg_engine: sa.Engine, items: Items
) -> None:
    table, notifier = items
    called: list[int] = []

    @notifier.subscribe(table, Operation.INSERT)
    async def on_insert(event: ChangeEvent) -> None:
        called.append(event.id)

    async def main() -> None:
        await notifier.astart()  # and the loop ends without astop()

    run(main())
    insert(pg_engine, table, "a", "b")
    wait_until(lambda: notifier.stats.dispatched == 2, TIMEOUT, "two dispatched events")
    notifier.stop()
    assert called == []
    assert notifier.stats.async_abandoned == 2


def test_a_cancelled_astart_is_undone(items: Items) -> None:
    _, notifier = items
    connected = EventRecorder()
    signals.listener_connected.connect(connected, sender=notifier)

    async def main() -> None:
        task = asyncio.create_task(notifier.astart())
        await asyncio.sleep(0)  # the task is now waiting for the worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        run(main())
    finally:
        signals.listener_connected.disconnect(connected, sender=notifier)
    assert len(connected) == 1  # the start did complete in its thread...
    assert not notifier.is_running  # ...and was stopped before the cancellation propagated


def test_an_object_with_an_async_call_method_is_an_async_callback(
    pg_engine: sa.Engine, items: Items
) -> None:
    table, notifier = items

    class Handler:
        def __init__(self) -> None:
            self.loops: list[Any] = []

        async def __call__(self, event: ChangeEvent) -> None:
            self.loops.append(asyncio.get_running_loop())

    handler = Handler()
    notifier.subscribe(table, Operation.INSERT)(handler)

    async def main() -> Any:
        async with notifier:
            await ainsert(pg_engine, table, "a")
            await wait_for(lambda: handler.loops, "the handler")
        return asyncio.get_running_loop()

    loop = run(main())
    assert handler.loops == [loop]
    assert notifier.unsubscribe(handler, table, Operation.INSERT)


def test_sync_stop_on_the_loops_thread_reports_what_it_cannot_wait_for(
    pg_engine: sa.Engine,
    items: Items,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, notifier = items
    started = EventRecorder()

    @notifier.subscribe(table, Operation.INSERT)
    async def stuck(event: ChangeEvent) -> None:
        started(event)
        await asyncio.Event().wait()

    async def main() -> None:
        await notifier.astart()
        await ainsert(pg_engine, table, "a", "b", per_tx=2)
        await wait_for(lambda: len(started) == 1, "the first callback")
        await wait_for(lambda: notifier.stats.dispatched == 2, "both dispatched")
        notifier.stop()  # blocks this loop: it cannot wait for the callbacks

    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        run(main())
    assert not notifier.is_running
    assert notifier.stats.async_abandoned == 2
    assert "1 running (cancelled), 1 queued (not run)" in caplog.text


# Task.cancelling() is Python 3.11+: on 3.10 there is no such test to run (not a skip).
if sys.version_info >= (3, 11):

    def test_a_callback_raising_cancelled_error_is_a_failure_not_the_end_of_its_queue(
        pg_engine: sa.Engine, items: Items
    ) -> None:
        table, notifier = items
        done: list[str] = []

        @notifier.subscribe(table, Operation.INSERT)
        async def callback(event: ChangeEvent) -> None:
            if event.extra_columns["name"] == "a":
                inner = asyncio.get_running_loop().create_future()
                inner.cancel()
                await inner  # raises CancelledError inside the callback only
            done.append(event.extra_columns["name"])

        async def main() -> None:
            async with notifier:
                await ainsert(pg_engine, table, "a", "b", per_tx=2)
                await wait_for(lambda: done == ["b"], "the second event")

        run(main())
        assert notifier.stats.receiver_errors == 1


def test_the_bridge_wakes_the_loop_once_per_dispatcher_batch() -> None:
    from sqlnotify._pipeline.bridge import LoopBridge

    def event(i: int) -> ChangeEvent:
        return ChangeEvent(
            schema=None,
            table="t",
            operation=Operation.INSERT,
            row={"id": i},
            primary_keys=("id",),
            epoch=None,
            channel="c",
        )

    class Sub:
        def __init__(self) -> None:
            self.got: list[int] = []

        async def fn(self, ev: ChangeEvent) -> None:
            self.got.append(ev.id)

    async def main() -> tuple[int, list[int], list[int]]:
        loop = asyncio.get_running_loop()
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        bridge = LoopBridge(
            loop,
            log=logging.getLogger("test"),
            on_error=lambda *a: None,
            on_abandoned=lambda n: None,
        )
        a, b = Sub(), Sub()

        def dispatcher() -> int:  # what the dispatcher thread does for one batch
            bridge.batch_thread = threading.get_ident()
            for i in range(100):
                bridge.submit(a, event(i))
                bridge.submit(b, event(i))
            bridge.flush()
            return wakes

        batch_wakes = await asyncio.to_thread(dispatcher)
        await wait_for(lambda: len(a.got) == len(b.got) == 100, "200 callbacks")
        await bridge.drain(1.0)
        return batch_wakes, a.got, b.got

    wakes, got_a, got_b = run(main())
    assert wakes == 1
    assert got_a == got_b == list(range(100))
