"""Decoding on the in-memory dialect: typed values; bad payloads dropped, counted, logged."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from memory_setup import TIMEOUT, Memory, memory_fixture  # noqa: F401

from sqlnotify import signals
from sqlnotify.testing import EventRecorder, wait_until


class Colour(enum.Enum):
    RED = "r"
    GREEN = "g"


class Upper(sa.types.TypeDecorator[str]):
    """Stored lower case, read back upper case: both layers must run."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else str(value).lower()

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else str(value).upper()


def test_values_arrive_as_their_python_types(memory: Memory) -> None:
    table = memory.db.define(
        sa.Table(
            "typed",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("day", sa.Date),
            sa.Column("moment", sa.DateTime(timezone=True)),
            sa.Column("clock", sa.Time),
            sa.Column("span", sa.Interval),
            sa.Column("ref", sa.Uuid),
            sa.Column("blob", sa.LargeBinary),
            sa.Column("colour", sa.Enum(Colour)),
            sa.Column("ratio", sa.Float),
            sa.Column("amount", sa.Numeric(12, 4)),
            sa.Column("rough", sa.Numeric(12, 4, asdecimal=False)),
            sa.Column("shout", Upper),
            sa.Column("tags", sa.ARRAY(sa.Integer)),
            sa.Column("doc", sa.JSON),
        )
    )
    columns = [c.name for c in table.columns if c.name != "id"]
    n = memory.notifier()
    n.watch(table, "insert", extra_columns=columns)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    row = {
        "id": 1,
        "day": dt.date(2024, 2, 29),
        "moment": dt.datetime(2024, 2, 29, 23, 59, 1, 5, tzinfo=dt.timezone.utc),
        "clock": dt.time(7, 8, 9, 10),
        "span": dt.timedelta(days=1, seconds=2.5),
        "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "blob": b"\x00\xffbytes",
        "colour": Colour.GREEN,
        "ratio": 0.1,
        "amount": Decimal("-1234.5678"),
        "rough": 2.5,
        "shout": "Hello",
        "tags": [3, 1, 2],
        "doc": [{"nested": True}, None, 1.5],
    }
    memory.db.insert(table, row)
    (event,) = rec.wait_for(1, TIMEOUT)
    assert dict(event.row) == {**row, "shout": "HELLO"}
    for name, value in event.row.items():
        assert type(value) is type(row[name]), name


def test_a_null_stays_none(memory: Memory) -> None:
    n = memory.notifier()
    rec = EventRecorder()
    n.subscribe(memory.table, "insert")(rec)
    n.start()
    memory.db.insert(memory.table, {"id": 1})
    (event,) = rec.wait_for(1, TIMEOUT)
    assert dict(event.row) == {"id": 1, "name": None}


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("not json", "JSONDecodeError"),
        ('{"ts":1.0,"row":[1, 2]}', "ValueError"),
        ('{"ts":1.0,"row":{"name":"no key"}}', "ValueError"),
        ('{"ts":"yesterday","row":{"id":1}}', "ValueError"),
        ('{"ts":1.0}', "KeyError"),
    ],
)
def test_an_undecodable_payload_is_dropped_counted_and_logged(
    memory: Memory, caplog: pytest.LogCaptureFixture, payload: str, error: str
) -> None:
    n = memory.notifier()
    rec = EventRecorder()
    n.subscribe(memory.table, "insert")(rec)
    dropped: list[dict[str, Any]] = []

    def on_drop(sender: Any, **kwargs: Any) -> None:
        dropped.append(kwargs)

    signals.notification_dropped.connect(on_drop, sender=n, weak=False)
    try:
        n.start()
        channel = n.watches[0].channel
        with caplog.at_level(logging.DEBUG, logger="sqlnotify"):
            memory.db.send(channel, payload)
            memory.insert(2)  # the pipeline goes on
            assert [e.id for e in rec.wait_for(1, TIMEOUT)] == [2]
    finally:
        signals.notification_dropped.disconnect(on_drop, sender=n)
    assert dropped == [{"channel": channel, "reason": f"undecodable payload ({error})"}]
    health = n.health()
    assert (health["dropped"], health["received"]) == (1, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"dropped a notification on channel {channel!r}: undecodable payload ({error})"
    ]


def test_a_foreign_payload_on_a_durable_channel_is_dropped(
    memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    n = memory.notifier()
    n.watch(memory.table, "update", extra_columns=["name"], durable=True)
    rec = EventRecorder()
    n.subscribe(memory.table, "update")(rec)
    n.start()
    channel = n.watches[1].channel
    memory.insert(1)
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        # Looks like an event, but a durable watch's events come from the journal only.
        memory.db.send(channel, '{"ts":1.0,"row":{"id":99,"name":"forged"}}')
        memory.db.update(memory.table, 1, {"name": "real"})
        (event,) = rec.wait_for(1, TIMEOUT)
        wait_until(lambda: n.health()["dropped"] == 1, TIMEOUT, "the dropped payload")
    assert (event.id, event.row["name"], event.position) == (1, "real", 1)
    assert any(
        "not a wake-up of a durable watch" in r.getMessage() and channel in r.getMessage()
        for r in caplog.records
    )
