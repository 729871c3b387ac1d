"""Server-side conditions (``watch(..., where=...)``), the same on every dialect.

A condition lets exactly the matching rows through: each comparison
operator, ``in_``, ``and_``/``or_``/``not_`` and ``is_(None)``, with SQL's
NULL logic (a comparison with NULL matches nothing).  INSERT and UPDATE test
the new row, DELETE the old one.  A hostile value (quotes, ``$$``, a
backslash, ``%``) is a value, never SQL.  The condition is part of the
watch's spec: the same condition after a restart needs no DDL, another one
is another trigger.

Every check writes the rows, then one row to an unconditioned "fence"
table: events are delivered in commit order, so once the fence's event
arrived every event the rows caused has too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from backends import Backend

from sqlnotify import Notifier
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder

TIMEOUT = 10.0

ROWS = [
    {"id": 1, "name": "a", "size": 5},
    {"id": 2, "name": "b", "size": None},
    {"id": 3, "name": "c", "size": 2},
    {"id": 4, "name": "d", "size": 11},
    {"id": 5, "name": "e", "size": 5},
    {"id": 6, "name": "f", "size": None},
]

#: label -> (condition, ids of ROWS it lets through)
CASES: dict[str, tuple[Callable[[sa.Table], Any], set[int]]] = {
    "eq": (lambda t: t.c.size == 5, {1, 5}),
    "ne": (lambda t: t.c.size != 5, {3, 4}),  # NULL != 5 is unknown: not through
    "lt": (lambda t: t.c.size < 3, {3}),
    "gt": (lambda t: t.c.size > 10, {4}),
    "in": (lambda t: t.c.name.in_(["b", "d", "zz"]), {2, 4}),
    "andor": (lambda t: sa.or_(sa.and_(t.c.size > 1, t.c.size < 6), t.c.name == "f"), {1, 3, 5, 6}),
    "null": (lambda t: t.c.size.is_(None), {2, 6}),
    "notnull": (lambda t: t.c.size.is_not(None), {1, 3, 4, 5}),
    "not": (lambda t: sa.not_(t.c.name == "a"), {2, 3, 4, 5, 6}),
}

HOSTILE = {
    "quote": "it's",
    "injection": "x' OR '1'='1",
    "dollar": "$$ OR true $$",
    "backslash": "back\\slash\\'",
    "percent": "50%%d%s",
    "newline": "two\nlines -- comment",
}


def tables(backend: Backend) -> tuple[sa.Table, sa.Table]:
    meta = sa.MetaData()
    item = sa.Table(
        "item",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=True),
    )
    fence = sa.Table("fence", meta, sa.Column("id", sa.Integer, primary_key=True))
    return backend.create(item), backend.create(fence)


class Fenced:
    """A notifier whose fence table tells when every earlier event has arrived."""

    def __init__(self, backend: Backend, fence: sa.Table) -> None:
        self.backend = backend
        self.notifier = backend.notifier().watch(fence, "insert")
        self.fence = fence
        self.fenced = EventRecorder()
        self.notifier.subscribe(fence, "insert")(self.fenced)
        self.count = 0

    def record(
        self, table: sa.Table, op: str, label: str | None = None, **watch: Any
    ) -> EventRecorder:
        self.notifier.watch(table, op, channel_label=label, **watch)
        rec = EventRecorder()
        self.notifier.subscribe(table, op, channel_label=label)(rec)
        return rec

    def wait(self) -> None:
        """Write a fence row and wait for its event."""
        self.count += 1
        self.backend.insert(self.fence, {"id": self.count})
        self.fenced.wait_for(self.count, TIMEOUT)


def ids(rec: EventRecorder) -> list[Any]:
    return sorted(e.id for e in rec.events)


def test_each_operator_lets_exactly_the_matching_rows_through(backend: Backend) -> None:
    item, fence = tables(backend)
    f = Fenced(backend, fence)
    recs = {
        label: f.record(item, "insert", label, where=cond(item), extra_columns=["name", "size"])
        for label, (cond, _) in CASES.items()
    }
    f.notifier.start()
    backend.insert(item, *ROWS)
    f.wait()
    assert {label: set(ids(rec)) for label, rec in recs.items()} == {
        label: expected for label, (_, expected) in CASES.items()
    }
    event = recs["eq"].events[0]
    assert dict(event.row) in ({"id": 1, "name": "a", "size": 5}, {"id": 5, "name": "e", "size": 5})


def test_update_tests_the_new_row_and_delete_the_old_one(backend: Backend) -> None:
    item, fence = tables(backend)
    f = Fenced(backend, fence)
    updates = f.record(item, "update", where=item.c.size > 10)
    deletes = f.record(item, "delete", where=item.c.name == "c")
    f.notifier.start()
    backend.insert(item, *ROWS)
    backend.update(item, {"id": 1}, {"size": 20})  # new row matches
    backend.update(item, {"id": 4}, {"size": 1})  # only the old row matched
    backend.update(item, {"id": 2}, {"name": "bb"})  # size stays NULL
    backend.delete(item, {"id": 3})  # old row matches
    backend.delete(item, {"id": 5})
    f.wait()
    assert ids(updates) == [1]
    assert ids(deletes) == [3]


def test_hostile_literals_are_values(backend: Backend) -> None:
    item, fence = tables(backend)
    f = Fenced(backend, fence)
    recs = {
        label: f.record(item, "insert", label, where=item.c.name == value)
        for label, value in HOSTILE.items()
    }
    f.notifier.start()
    rows = [{"id": i, "name": v, "size": None} for i, v in enumerate(HOSTILE.values(), 1)]
    backend.insert(item, *rows, {"id": 99, "name": "plain", "size": 1})
    f.wait()
    assert {label: ids(rec) for label, rec in recs.items()} == {
        label: [i] for i, label in enumerate(HOSTILE, 1)
    }


def test_the_condition_is_part_of_the_spec(backend: Backend) -> None:
    item, _ = tables(backend)

    def start(where: Any) -> Notifier:
        n = backend.notifier().watch(item, "insert", where=where)
        n.start()
        return n

    first = start(item.c.size > 1)
    plain = backend.notifier().watch(item, "insert")
    other = backend.notifier().watch(item, "insert", where=item.c.size > 2)
    assert len({first.watches[0].channel, plain.watches[0].channel, other.watches[0].channel}) == 3
    assert [s.state for s in first.install_states] == ["installed"]
    # Same condition, new process: the installed trigger is found unchanged.
    again = start(item.c.size > 1)
    assert again.watches[0].channel == first.watches[0].channel
    assert [s.state for s in again.install_states] == ["unchanged"]
    first.stop()
    again.stop()
    rec = EventRecorder()
    restarted = start(item.c.size > 1)
    restarted.subscribe(item, "insert")(rec)
    assert [s.state for s in restarted.install_states] == ["unchanged"]
    backend.insert(item, {"id": 1, "name": "a", "size": 1}, {"id": 2, "name": "b", "size": 2})
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.id == 2


def test_columns_of_another_table_are_refused(backend: Backend) -> None:
    item, fence = tables(backend)
    with pytest.raises(SQLNotifyConfigurationError, match="'id' is not a column of table 'item'"):
        backend.notifier().watch(item, "insert", where=fence.c.id > 1).start()
