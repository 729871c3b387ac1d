"""What an UPDATE changed, the same on every dialect: ``changed_columns`` and ``old``.

Every type the typed-values tests cover: the old values arrive typed exactly
like the new ones, and ``changed_columns`` lists the watch's columns whose
value is distinct (``IS DISTINCT FROM``: NULL to NULL is no change).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from backends import Backend
from support.types import COLUMNS, VALUES, Colour, typed_table

from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder

TIMEOUT = 10.0


#: Whole seconds: MySQL stores TIME and (for an interval) DATETIME without fractions.
BEFORE: dict[str, Any] = {
    **VALUES,
    "clock": dt.time(23, 59, 58),
    "span": dt.timedelta(days=1, seconds=3),
}

AFTER: dict[str, Any] = {
    "id": 1,
    "big": -(2**62),
    "name": "second",
    "body": "",
    "flag": False,
    "at": dt.datetime(1999, 1, 1, 0, 0, 0, 1),
    "day": dt.date(2000, 2, 29),
    "clock": dt.time(0, 0, 1),  # MySQL TIME keeps whole seconds
    "span": dt.timedelta(seconds=-1),
    "price": decimal.Decimal("-0.01"),
    "ratio": 1e300,
    "ident": uuid.UUID("9f1c7d2e-5b3a-4c8d-9e6f-0a1b2c3d4e5f"),
    "blob": b"",
    "doc": ["x", {"y": None}],
    "colour": Colour.RED,
    "size": "small",
}


def typed(backend: Backend) -> sa.Table:
    return backend.create(typed_table(sa.MetaData(), portable=True))


def test_changed_columns_and_old_values_of_every_type(backend: Backend) -> None:
    table = typed(backend)
    n = backend.notifier()
    n.watch(table, "update", extra_columns=COLUMNS, include_old=True)
    n.watch(table, "update", extra_columns=["name"], channel_label="plain")
    with_old, plain = EventRecorder(), EventRecorder()
    n.subscribe(table, "update")(with_old)
    n.subscribe(table, "update", channel_label="plain")(plain)
    n.start()
    backend.insert(table, BEFORE)
    backend.update(table, {"id": 1}, {c: AFTER[c] for c in COLUMNS})
    backend.update(table, {"id": 1}, {"ratio": None, "name": "second"})
    backend.update(table, {"id": 1}, {"ratio": None})  # NULL to NULL: no change
    # The binary log holds no row event for an UPDATE that changes nothing.
    noop = backend.hears_unchanged_updates
    everything, one, *rest = with_old.wait_for(3 if noop else 2, TIMEOUT)

    assert everything.changed_columns == tuple(COLUMNS)
    assert dict(everything.row) == AFTER
    assert everything.old is not None and dict(everything.old) == BEFORE
    assert {c: type(v) for c, v in everything.old.items()} == {
        c: type(v) for c, v in BEFORE.items()
    }
    assert one.changed_columns == ("ratio",)
    assert one.old is not None and one.old["ratio"] == AFTER["ratio"] and one.row["ratio"] is None
    for none in rest:
        assert none.changed_columns == ()
        assert none.old is not None and dict(none.old) == dict(none.row)

    form = everything.to_dict()
    assert form["changed_columns"] == COLUMNS
    assert decimal.Decimal(form["old"]["price"]) == BEFORE["price"]
    assert form["old"]["colour"] == "GREEN"
    assert json.loads(everything.to_json())["old"]["doc"] == BEFORE["doc"]

    first, *others = plain.wait_for(3 if noop else 2, TIMEOUT)
    assert [e.changed_columns for e in (first, *others)] == [("name",), (), ()][: 1 + len(others)]
    assert first.old is None and first.to_dict()["old"] is None


def test_other_operations_carry_neither(backend: Backend) -> None:
    table = typed(backend)
    n = backend.notifier().watch(table, "insert").watch(table, "delete")
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.subscribe(table, "delete")(rec)
    n.start()
    backend.insert(table, BEFORE)
    backend.delete(table, {"id": 1})
    for event in rec.wait_for(2, TIMEOUT):
        assert event.changed_columns is None and event.old is None


def test_include_old_is_for_updates_only(backend: Backend) -> None:
    table = typed(backend)
    with pytest.raises(SQLNotifyConfigurationError, match="include_old only applies"):
        backend.notifier().watch(table, "delete", include_old=True)
