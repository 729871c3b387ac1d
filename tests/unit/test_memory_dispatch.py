"""Dispatch on the in-memory dialect: isolated receivers, commit order, the dispatcher thread."""

from __future__ import annotations

import threading
from typing import Any

from memory_setup import TIMEOUT, Memory, memory_fixture  # noqa: F401

from sqlnotify import ChangeEvent, Operation, signals
from sqlnotify.testing import EventRecorder, wait_until


def test_a_failing_receiver_does_not_stop_the_others(memory: Memory) -> None:
    n = memory.notifier()
    calls: list[tuple[str, int]] = []
    failures: list[dict[str, Any]] = []

    @n.subscribe(memory.table, "insert")
    def first(event: ChangeEvent) -> None:
        calls.append(("first", event.id))

    @n.subscribe(memory.table, "insert")
    def broken(event: ChangeEvent) -> None:
        raise RuntimeError(f"cannot handle {event.id}")

    @n.subscribe(memory.table, "insert")
    def last(event: ChangeEvent) -> None:
        calls.append(("last", event.id))

    def on_failure(sender: Any, **kwargs: Any) -> None:
        failures.append(kwargs)

    signals.receiver_failed.connect(on_failure, sender=n, weak=False)
    try:
        n.start()
        memory.insert(1, 2)
        wait_until(lambda: len(calls) == 4, TIMEOUT, "both events at both healthy receivers")
        wait_until(lambda: len(failures) == 2, TIMEOUT, "two receiver_failed signals")
    finally:
        signals.receiver_failed.disconnect(on_failure, sender=n)
    assert calls == [("first", 1), ("last", 1), ("first", 2), ("last", 2)]
    assert [f["event"].id for f in failures] == [1, 2]
    assert all(isinstance(f["exception"], RuntimeError) for f in failures)
    health = n.health()
    assert (health["received"], health["dispatched"], health["failed"]) == (2, 2, 2)


def test_events_keep_commit_order_across_operations(memory: Memory) -> None:
    n = memory.notifier("insert", "update", "delete")
    rec = EventRecorder()
    for op in ("insert", "update", "delete"):
        n.subscribe(memory.table, op)(rec)
    n.start()
    for i in range(1, 51):
        memory.insert(i)
        if i % 2 == 0:
            memory.db.update(memory.table, i, {"name": "even"})
        if i % 5 == 0:
            memory.db.delete(memory.table, i)
    expected: list[tuple[Operation, int]] = []
    for i in range(1, 51):
        expected.append((Operation.INSERT, i))
        if i % 2 == 0:
            expected.append((Operation.UPDATE, i))
        if i % 5 == 0:
            expected.append((Operation.DELETE, i))
    events = rec.wait_for(len(expected), TIMEOUT)
    assert [(e.operation, e.id) for e in events] == expected


def test_receivers_run_on_the_dispatcher_thread(memory: Memory) -> None:
    n = memory.notifier()
    threads: list[str] = []
    n.subscribe(memory.table, "insert")(
        lambda event: threads.append(threading.current_thread().name)
    )
    n.start()
    memory.insert(1)
    wait_until(lambda: threads, TIMEOUT, "the event")
    assert threads == ["sqlnotify-dispatcher"]


def test_a_blinker_receiver_gets_the_sender_and_the_event(memory: Memory) -> None:
    n = memory.notifier()
    rec = EventRecorder()
    n.signal(memory.table, "insert").connect(rec, weak=False)
    n.start()
    memory.insert(3)
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.id == 3 and rec.senders == [memory.table]
