"""The typed table of the typed-values tests: a column of every type, and its values."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import sqlalchemy as sa


class Colour(enum.Enum):
    RED = "r"
    GREEN = "g"


#: The typed table's columns but its key, in order.
COLUMNS = [
    "big",
    "name",
    "body",
    "flag",
    "at",
    "day",
    "clock",
    "span",
    "price",
    "ratio",
    "ident",
    "blob",
    "doc",
    "colour",
    "size",
]

#: A row of the typed table (sub-second times and intervals).
VALUES: dict[str, Any] = {
    "id": 1,
    "big": 2**62 + 1,
    "name": "Zoë 'quoted' \"double\"",
    "body": "line one\nline two\t\u2603",
    "flag": True,
    "at": dt.datetime(2024, 2, 29, 13, 45, 1, 123456),
    "day": dt.date(2024, 12, 31),
    "clock": dt.time(23, 59, 58, 500000),
    "span": dt.timedelta(days=1, seconds=3, microseconds=250000),
    "price": decimal.Decimal("1234.50"),
    "ratio": 0.1 + 0.2,
    "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "blob": b"\x00\xffbinary\x80",
    "doc": {"a": [1, 2.5, None, True], "b": {"c": "d"}, "e": "text"},
    "colour": Colour.GREEN,
    "size": "large",
}


def typed_table(metadata: sa.MetaData, *, portable: bool = False) -> sa.Table:
    """The ``typed`` table in ``metadata``; ``portable``: explicit keys, double precision
    floats and a named enum type, for every dialect."""
    return sa.Table(
        "typed",
        metadata,
        sa.Column(
            "id", sa.Integer, primary_key=True, **({"autoincrement": False} if portable else {})
        ),
        sa.Column("big", sa.BigInteger),
        sa.Column("name", sa.String(50)),
        sa.Column("body", sa.Text),
        sa.Column("flag", sa.Boolean),
        sa.Column("at", sa.DateTime),
        sa.Column("day", sa.Date),
        sa.Column("clock", sa.Time),
        sa.Column("span", sa.Interval),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("ratio", sa.Float(53) if portable else sa.Float),
        sa.Column("ident", sa.Uuid),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("doc", sa.JSON),
        sa.Column("colour", sa.Enum(Colour, name="colour_enum") if portable else sa.Enum(Colour)),
        sa.Column("size", sa.Enum("small", "large", name="size_enum")),
    )
