"""One contract, every dialect: what an application sees must not depend on the database.

Each test runs against the in-memory dialect, SQLite, PostgreSQL and MariaDB (see
``conftest.py``): row events of the three operations with their typed
values and keys, subscription filters, channel labels, ``trigger_columns``,
custom notifications, a named consumer's resume, and the gap it hears of
when the journal lost rows it had not read.
"""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from backends import Backend

from sqlnotify import ChangeEvent, Gap, Notifier, Operation
from sqlnotify.testing import EventRecorder, wait_until

TIMEOUT = 10.0


def item_table(backend: Backend, name: str = "item") -> sa.Table:
    return backend.create(
        sa.Table(
            name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("size", sa.Integer, nullable=True),
        )
    )


def recorded(n: Notifier, table: sa.Table, op: str, **subscribe: Any) -> EventRecorder:
    rec = EventRecorder()
    n.subscribe(table, op, **subscribe)(rec)
    return rec


def test_insert(backend: Backend) -> None:
    table = item_table(backend)
    n = backend.notifier().watch(table, "insert", extra_columns=["name"])
    rec = recorded(n, table, "insert")
    n.start()
    backend.insert(table, {"id": 1, "name": "one", "size": 5})
    (event,) = rec.wait_for(1, TIMEOUT)
    assert isinstance(event, ChangeEvent)
    assert event.operation is Operation.INSERT
    assert (event.schema, event.table) == (backend.schema, "item")
    assert event.id == 1 and event.primary_keys == ("id",)
    assert dict(event.row) == {"id": 1, "name": "one"}  # the watch's columns only
    assert event.status == "complete" and not event.custom
    assert event.channel == n.watches[0].channel


def test_update(backend: Backend) -> None:
    table = item_table(backend)
    backend.insert(table, {"id": 1, "name": "before", "size": 1})
    n = backend.notifier().watch(table, "update", extra_columns=["name", "size"])
    rec = recorded(n, table, "update")
    n.start()
    backend.update(table, {"id": 1}, {"name": "after"})
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.operation is Operation.UPDATE
    assert dict(event.row) == {"id": 1, "name": "after", "size": 1}  # the new row


def test_delete(backend: Backend) -> None:
    table = item_table(backend)
    backend.insert(table, {"id": 1, "name": "a"}, {"id": 2, "name": "b"})
    n = backend.notifier().watch(table, "delete", extra_columns=["name"])
    rec = recorded(n, table, "delete")
    n.start()
    backend.delete(table, {"id": 2})
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.operation is Operation.DELETE
    assert dict(event.row) == {"id": 2, "name": "b"}  # the old row


def test_types(backend: Backend) -> None:
    table = backend.create(
        sa.Table(
            "typed",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("count", sa.Integer),
            sa.Column("label", sa.Text),
            sa.Column("flag", sa.Boolean),
            sa.Column("price", sa.Numeric(10, 2)),
            sa.Column("at", sa.DateTime),
            sa.Column("doc", sa.JSON),
            sa.Column("note", sa.Text, nullable=True),
        )
    )
    columns = ["count", "label", "flag", "price", "at", "doc", "note"]
    n = backend.notifier().watch(table, "insert", extra_columns=columns)
    rec = recorded(n, table, "insert")
    n.start()
    full = {
        "id": 1,
        "count": -42,
        "label": 'h\u00e9llo "quoted" \\ line\nbreak',
        "flag": True,
        "price": Decimal("12.50"),
        "at": dt.datetime(2024, 2, 29, 13, 14, 15, 123456),
        "doc": {"a": [1, 2.5, {"b": None}], "c": "x"},
        "note": "set",
    }
    empty = {"id": 2, "flag": False, **{c: None for c in columns if c != "flag"}}
    backend.insert(table, full)
    backend.insert(table, empty)
    first, second = rec.wait_for(2, TIMEOUT)
    assert dict(first.row) == full
    types = {c: type(v) for c, v in first.row.items()}
    assert types == {
        "id": int,
        "count": int,
        "label": str,
        "flag": bool,
        "price": Decimal,
        "at": dt.datetime,
        "doc": dict,
        "note": str,
    }
    assert dict(second.row) == empty
    assert second.row["flag"] is False


def test_filters(backend: Backend) -> None:
    table = item_table(backend)
    n = backend.notifier().watch(table, "insert", extra_columns=["name", "size"])
    only_b = recorded(n, table, "insert", filters={"name": "b"})
    size_2 = recorded(n, table, "insert", filters=[{"column": "size", "value": 2}])
    every = recorded(n, table, "insert")
    n.start()
    backend.insert(table, {"id": 1, "name": "a", "size": 2})
    backend.insert(table, {"id": 2, "name": "b", "size": 1})
    backend.insert(table, {"id": 3, "name": "b", "size": 2})
    assert [e.id for e in every.wait_for(3, TIMEOUT)] == [1, 2, 3]
    # Receivers of one event run in order: the filtered ones have seen all three.
    assert [e.id for e in only_b.events] == [2, 3]
    assert [e.id for e in size_2.events] == [1, 3]


def test_channel_labels(backend: Backend) -> None:
    table = item_table(backend)
    n = backend.notifier()
    n.watch(table, "insert", extra_columns=["name"], channel_label="names")
    n.watch(table, "insert", extra_columns=["size"], channel_label="sizes")
    names = recorded(n, table, "insert", channel_label="names")
    sizes = recorded(n, table, "insert", channel_label="sizes")
    n.start()
    backend.insert(table, {"id": 7, "name": "seven", "size": 70})
    (by_name,) = names.wait_for(1, TIMEOUT)
    (by_size,) = sizes.wait_for(1, TIMEOUT)
    assert dict(by_name.row) == {"id": 7, "name": "seven"}
    assert dict(by_size.row) == {"id": 7, "size": 70}
    assert by_name.channel != by_size.channel
    assert {by_name.channel, by_size.channel} == {w.channel for w in n.watches}


def test_trigger_columns(backend: Backend) -> None:
    table = item_table(backend)
    backend.insert(table, {"id": 1, "name": "a", "size": 1})
    n = backend.notifier().watch(table, "update", extra_columns=["name"], trigger_columns=["name"])
    rec = recorded(n, table, "update")
    n.start()
    backend.update(table, {"id": 1}, {"size": 2})  # no trigger column changed: no event
    backend.update(table, {"id": 1}, {"name": "a"})  # the same value: no event
    backend.update(table, {"id": 1}, {"name": "b"})
    events = rec.wait_for(1, TIMEOUT)
    assert [dict(e.row) for e in events] == [{"id": 1, "name": "b"}]


def durable_consumer(backend: Backend, table: sa.Table) -> tuple[Notifier, EventRecorder]:
    n = backend.notifier(consumer="worker").watch(table, "insert", durable=True)
    return n, recorded(n, table, "insert")


def seen_then_stopped(backend: Backend, table: sa.Table) -> EventRecorder:
    """The durable consumer received row 1 ("seen"), then stopped; its recorder."""
    first, rec1 = durable_consumer(backend, table)
    first.start()
    backend.insert(table, {"id": 1, "name": "seen"})
    rec1.wait_for(1, TIMEOUT)
    first.stop()
    return rec1


def test_durable_resume(backend: Backend) -> None:
    table = item_table(backend)
    rec1 = seen_then_stopped(backend, table)
    backend.insert(table, {"id": 2, "name": "missed"}, {"id": 3, "name": "missed"})
    again, rec2 = durable_consumer(backend, table)
    again.start()
    backend.insert(table, {"id": 4, "name": "live"})
    events = rec2.wait_for(3, TIMEOUT)
    assert [e.id for e in events] == [2, 3, 4]  # exactly the rows it had not received
    positions = [e.position for e in [*rec1.events, *events]]
    assert all(isinstance(p, int) for p in positions)
    assert positions == sorted(positions) and len(set(positions)) == 4
    wait_until(
        lambda: again.health().get("position") == events[-1].position,
        TIMEOUT,
        "the consumer's position at its last event",
    )


def test_gap_after_lost_journal_rows(backend: Backend) -> None:
    table = item_table(backend)
    seen_then_stopped(backend, table)
    backend.insert(table, {"id": 2, "name": "lost"}, {"id": 3, "name": "lost"})
    backend.lose_journal()

    again, rec2 = durable_consumer(backend, table)
    gaps: list[tuple[Gap, str]] = []

    @again.on_gap
    def record(gap: Gap) -> None:
        gaps.append((gap, threading.current_thread().name))

    again.start()
    backend.insert(table, {"id": 4, "name": "after"})
    assert [e.id for e in rec2.wait_for(1, TIMEOUT)] == [4]
    wait_until(lambda: gaps, TIMEOUT, "a retention gap")
    gap, thread = gaps[0]
    assert gap.reason == "retention"
    assert gap.channels == (again.watches[0].channel,)
    assert gap.start <= gap.end
    # The change logs (SQLite, MySQL) count the ids lost; the journals know when, not how many.
    assert gap.count == (2 if backend.name in ("sqlite", "mysql") else None)
    assert thread == "sqlnotify-dispatcher"
    assert [e.id for e in rec2.events] == [4]  # the lost rows never arrive


def test_custom_notification(backend: Backend) -> None:
    table = item_table(backend)
    n = backend.notifier().watch(table, "insert", extra_columns=["name", "size"])
    rec = recorded(n, table, "insert")
    n.start()
    n.notify(table, "insert", {"id": 9, "name": "by hand", "size": 3})
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.custom and event.operation is Operation.INSERT
    assert dict(event.row) == {"id": 9, "name": "by hand", "size": 3}
