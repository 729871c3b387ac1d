"""Values arrive as the columns' Python types, the same as on PostgreSQL."""

from __future__ import annotations

import decimal
import math
import sqlite3
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from support.env import need_module
from support.sqlite import file_engine
from support.types import COLUMNS, VALUES, typed_table
from support.watching import watched

from sqlnotify import Notifier, Operation
from sqlnotify.testing import EventRecorder


def record_all(engine: sa.Engine, table: sa.Table, notifiers: list[Notifier]) -> EventRecorder:
    return watched(notifiers, engine, table, *Operation.rows(), extra_columns=COLUMNS).events


def typed_and_recorded(
    engine: sa.Engine, notifiers: list[Notifier]
) -> tuple[sa.Table, EventRecorder]:
    """The typed table, created, and a started notifier recording all its changes."""
    metadata = sa.MetaData()
    table = typed_table(metadata)
    metadata.create_all(engine)
    return table, record_all(engine, table, notifiers)


def roundtrip(engine: sa.Engine, notifiers: list[Notifier]) -> tuple[dict[str, Any], ...]:
    table, rec = typed_and_recorded(engine, notifiers)
    with engine.begin() as conn:
        conn.execute(table.insert().values(VALUES))
        stored = conn.execute(sa.select(table)).mappings().one()
        conn.execute(table.update().values(flag=False, doc=["x"], ratio=None))
        conn.execute(table.delete())
    ins, upd, dele = rec.wait_for(3)
    assert [ins.operation, upd.operation, dele.operation] == list(Operation.rows())
    return dict(stored), dict(ins.row), dict(upd.row), dict(dele.row)


def test_types_match_what_sqlalchemy_reads(sqlite_path: str, notifiers: list[Notifier]) -> None:
    engine = file_engine(sqlite_path)
    stored, ins, upd, dele = roundtrip(engine, notifiers)
    for name, value in VALUES.items():
        assert ins[name] == value, name
        assert type(ins[name]) is type(value), name
        assert ins[name] == stored[name], name
        if name not in ("flag", "doc", "ratio"):
            assert dele[name] == value, name
    assert dele["flag"] is False and dele["doc"] == ["x"]
    assert upd["flag"] is False and upd["doc"] == ["x"] and upd["ratio"] is None
    engine.dispose()


def test_pysqlite3_engine(sqlite_path: str, notifiers: list[Notifier]) -> None:
    pysqlite3 = need_module("pysqlite3.dbapi2")
    engine = sa.create_engine(f"sqlite:///{sqlite_path}", module=pysqlite3)
    _, ins, _, _ = roundtrip(engine, notifiers)
    assert ins == VALUES
    assert notifiers[0].dialect.driver is pysqlite3  # type: ignore[attr-defined]
    engine.dispose()


def test_same_types_as_postgresql(
    sqlite_path: str, pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    engine = file_engine(sqlite_path)
    _, lite, _, _ = roundtrip(engine, notifiers)
    _, pg, _, _ = roundtrip(pg_schema_engine, notifiers)
    for name in VALUES:
        assert type(lite[name]) is type(pg[name]), name
        assert lite[name] == pg[name], name
    engine.dispose()


def test_custom_notify_values(sqlite_path: str, notifiers: list[Notifier]) -> None:
    engine = file_engine(sqlite_path)
    table, rec = typed_and_recorded(engine, notifiers)
    notifiers[0].notify(table, "insert", VALUES)
    event = rec.wait_for(1)[0]
    assert event.custom
    assert dict(event.row) == VALUES
    engine.dispose()


def test_odd_values_never_fail_the_write(sqlite_path: str, notifiers: list[Notifier]) -> None:
    """SQLite lets any column hold any type; the trigger copes with each."""
    engine = file_engine(sqlite_path)
    _, rec = typed_and_recorded(engine, notifiers)
    with closing(sqlite3.connect(sqlite_path)) as conn, conn:
        conn.execute(
            "INSERT INTO typed (id, name, ratio, price, doc, big, blob)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (2, b"\x01\x02", float("inf"), float("-inf"), "{not json", 1.5, "text in a blob"),
        )
        conn.execute("INSERT INTO typed (id, doc, name) VALUES (3, x'7b7d', 1e999)")
    first, second = rec.wait_for(2)
    assert first.extra_columns["name"] == "0102"  # a BLOB in a text column: hex
    assert first.extra_columns["ratio"] == math.inf
    assert first.extra_columns["price"] == decimal.Decimal("-Infinity")
    assert first.extra_columns["doc"] == "{not json"
    assert first.extra_columns["big"] == 1.5
    assert first.extra_columns["blob"] == b"text in a blob"
    assert second.extra_columns["doc"] == "7B7D"
    assert second.extra_columns["name"] in ("Inf", math.inf)
    assert notifiers[0].stats.dropped == 0
    engine.dispose()


def test_binary_and_varbinary_arrive_as_bytes(sqlite_path: str, notifiers: list[Notifier]) -> None:
    # Not LargeBinary in SQLAlchemy, stored as BLOBs all the same.
    engine = file_engine(sqlite_path)
    table = sa.Table(
        "binaries",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fixed", sa.BINARY(4)),
        sa.Column("var", sa.VARBINARY(8)),
    )
    table.metadata.create_all(engine)
    w = watched(notifiers, engine, table, extra_columns=["fixed", "var"])
    row = {"id": 1, "fixed": b"\x00\x01\xfe\xff", "var": b"'\\"}
    with engine.begin() as conn:
        conn.execute(table.insert(), [row])
        (stored,) = conn.execute(sa.select(table)).mappings().all()
    (event,) = w.events.wait_for(1)
    assert dict(event.row) == dict(stored) == row
    engine.dispose()
