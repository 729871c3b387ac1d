"""Typed values on MySQL/MariaDB arrive as the Python values SQLAlchemy reads."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sqlnotify import Notifier
from sqlnotify.testing import EventRecorder


@pytest.fixture
def mysql_engine(each_mysql_engine: sa.Engine) -> sa.Engine:
    """This module's tests run on the shared MariaDB and on the private MySQL."""
    return each_mysql_engine


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Upper(sa.TypeDecorator[str]):
    impl = sa.String(20)
    cache_ok = True

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else value.upper()


def test_types_round_trip(mysql_engine: sa.Engine) -> None:
    table = sa.Table(
        "typed",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ratio", sa.Float(precision=53)),
        sa.Column("big", sa.Numeric(30, 10)),
        sa.Column("day", sa.Date),
        sa.Column("at", sa.Time().with_variant(mysql.TIME(fsp=6), "mysql", "mariadb")),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("uid", sa.Uuid),
        sa.Column("color", sa.Enum(Color)),
        sa.Column("shout", Upper),
        sa.Column("flag", sa.Boolean),
    )
    table.metadata.create_all(mysql_engine)
    columns = [c.name for c in table.columns if c.name != "id"]
    n = Notifier(mysql_engine).watch(table, "insert", extra_columns=columns)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    row = {
        "id": 2**40,
        "ratio": 0.1 + 0.2,
        "big": Decimal("12345678901234567890.0123456789"),
        "day": dt.date(2024, 2, 29),
        "at": dt.time(13, 14, 15, 250000),
        "blob": b"\x00\xffbytes'\\",
        "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "color": Color.BLUE,
        "shout": "quiet",
        "flag": False,
    }
    with n:
        with mysql_engine.begin() as conn:
            conn.execute(table.insert(), [row])
            (stored,) = conn.execute(sa.select(table)).mappings().all()
        (event,) = rec.wait_for(1, 10)
    assert dict(event.row) == dict(stored)
    assert dict(event.row) == {**row, "shout": "QUIET"}
    assert event.row["flag"] is False


@pytest.mark.parametrize("source", ["triggers", "binlog"])
def test_binary_types_arrive_as_bytes(
    each_binlog_engine: sa.Engine, notifiers: list[Notifier], source: str
) -> None:
    # BINARY, VARBINARY and the BLOBs of MySQL's own sizes are not LargeBinary in
    # SQLAlchemy: they arrive as bytes all the same.
    engine = each_binlog_engine
    kinds = {
        "fixed": sa.BINARY(4),
        "var": sa.VARBINARY(8),
        "tiny": mysql.TINYBLOB,
        "medium": mysql.MEDIUMBLOB,
        "long": mysql.LONGBLOB,
    }
    table = sa.Table(
        "binaries",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        *(sa.Column(name, kind) for name, kind in kinds.items()),
    )
    table.metadata.create_all(engine)
    n = Notifier(engine, mysql_source=source).watch(table, "insert", extra_columns=list(kinds))
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    row = {"id": 1, "fixed": b"\x00\x01\xfe\xff", "var": b"\x00'\\", "tiny": b"t"}
    row |= {"medium": b"\xff" * 300, "long": bytes(range(256))}
    n.start()
    with engine.begin() as conn:
        conn.execute(table.insert(), [row])
        (stored,) = conn.execute(sa.select(table)).mappings().all()
    (event,) = rec.wait_for(1, 10)
    assert dict(event.row) == dict(stored) == row
