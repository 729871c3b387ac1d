"""Turn JSON payload values back into the columns' Python types."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.sql.sqltypes import _AbstractInterval

Converter = Callable[[Any], Any]

_FRACTION = re.compile(r"(\.\d{1,5})(?=[+-]|Z|$)")
_HOURS_OFFSET = re.compile(r"[+-]\d\d$")


def _pad_fraction(text: str) -> str:
    # Python 3.10's fromisoformat wants 3 or 6 fraction digits; PostgreSQL trims them.
    return _FRACTION.sub(lambda m: m.group(1).ljust(7, "0"), text)


def _py310_iso(text: str) -> str:
    """Rewrite PostgreSQL's ISO 8601 forms into the subset Python 3.10 parses."""
    text = _pad_fraction(text)
    if ":" in text and _HOURS_OFFSET.search(text):  # "+05" -> "+05:00"
        text += ":00"
    return text


def to_datetime(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.replace("Z", "+00:00") if value.endswith("Z") else value
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.fromisoformat(_py310_iso(text))


def to_date(value: Any) -> Any:
    return dt.date.fromisoformat(value[:10]) if isinstance(value, str) else value


def to_time(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        return dt.time.fromisoformat(_py310_iso(value))


def to_timedelta(value: Any) -> Any:
    if isinstance(value, (int, float, str)):
        return dt.timedelta(seconds=float(value))
    return value


def to_decimal(value: Any) -> Any:
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def to_float(value: Any) -> Any:
    return float(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else value


def to_uuid(value: Any) -> Any:
    return uuid.UUID(value) if isinstance(value, str) else value


def to_bool(value: Any) -> Any:
    return bool(value) if isinstance(value, int) else value


def to_bytes_b64(value: Any) -> Any:
    return base64.b64decode(value) if isinstance(value, str) else value


def to_bytes_hex(value: Any) -> Any:
    return bytes.fromhex(value) if isinstance(value, str) else value


def from_json_text(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _enum_converter(type_: sqltypes.Enum) -> Converter | None:
    lookup = getattr(type_, "_object_lookup", None)
    if type_.enum_class is None or not lookup:
        return None

    def convert(value: Any) -> Any:
        return lookup.get(value, value)

    return convert


def _unwrap(type_: Any) -> Any:
    """The type that decides the payload's JSON form.

    ``Interval`` is a ``TypeDecorator`` over ``DateTime`` (for databases
    without an interval type), but it is stored natively on PostgreSQL and
    read back as a ``timedelta``: it is kept, not unwrapped.
    """
    t = type_
    while isinstance(t, sqltypes.TypeDecorator) and not isinstance(t, _AbstractInterval):
        t = t.impl_instance if hasattr(t, "impl_instance") else t.impl
    return t


def _decorators(type_: Any) -> list[sqltypes.TypeDecorator[Any]]:
    """The ``TypeDecorator`` layers of ``type_`` that convert values read, outermost first."""
    found = []
    t = type_
    while isinstance(t, sqltypes.TypeDecorator) and not isinstance(t, _AbstractInterval):
        own = type(t).process_result_value
        if own.__code__ is not sqltypes.TypeDecorator.process_result_value.__code__:
            found.append(t)
        t = t.impl_instance if hasattr(t, "impl_instance") else t.impl
    return found


@functools.cache
def _sa_dialect(name: str) -> Any:
    # The dialects' base modules import no driver.
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql.base import PGDialect

        return PGDialect()  # type: ignore[no-untyped-call]
    if name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql.base import MySQLDialect

        return MySQLDialect(is_mariadb=name == "mariadb")
    from sqlalchemy.dialects.sqlite.base import SQLiteDialect

    return SQLiteDialect()


def converter_for(type_: Any, dialect: str) -> Converter | None:
    """The converter for one column type, or ``None`` when JSON already gives the type.

    ``dialect`` is ``"postgresql"``, ``"sqlite"``, ``"mysql"`` or ``"mariadb"``;
    SQLite and MySQL store booleans as integers and send BLOBs hex-encoded in
    payloads; JSON columns need no converter on any, since every trigger
    embeds the document itself.
    A ``TypeDecorator``'s ``process_result_value`` is applied after the
    conversion, as SQLAlchemy does when it reads the row.
    """
    base = _base_converter(_unwrap(type_), dialect)
    layers = _decorators(type_)
    if not layers:
        return base
    sa_dialect = _sa_dialect(dialect)
    inner_first = layers[::-1]

    def convert(value: Any) -> Any:
        if base is not None:
            value = base(value)
        for layer in inner_first:
            value = layer.process_result_value(value, sa_dialect)
        return value

    return convert


def _array_converter(item: Converter) -> Converter:
    def convert(value: Any) -> Any:
        if isinstance(value, list):
            return [convert(v) for v in value]  # nested for multi-dimensional arrays
        return None if value is None else item(value)

    return convert


def _base_converter(t: Any, dialect: str) -> Converter | None:
    if isinstance(t, sqltypes.ARRAY):
        item = converter_for(t.item_type, dialect)
        return _array_converter(item) if item is not None else None
    if isinstance(t, sqltypes.Enum):
        return _enum_converter(t)
    if isinstance(t, sqltypes.Boolean):
        return None if dialect == "postgresql" else to_bool  # SQLite, MySQL: integers
    if isinstance(t, sqltypes.DateTime):
        return to_datetime
    if isinstance(t, sqltypes.Date):
        return to_date
    if isinstance(t, sqltypes.Time):
        return to_time
    if isinstance(t, _AbstractInterval):
        return to_timedelta if dialect == "postgresql" else to_datetime_delta_sqlite
    if isinstance(t, sqltypes.Float):  # not a Numeric subclass in every SQLAlchemy version
        return to_decimal if getattr(t, "asdecimal", False) else to_float
    if isinstance(t, sqltypes.Numeric):
        return to_decimal if t.asdecimal else None
    if isinstance(t, sqltypes.Uuid) and t.as_uuid:
        return to_uuid
    if isinstance(t, sqltypes._Binary):
        # LargeBinary, and the BINARY, VARBINARY and MySQL BLOB types beside it.
        return to_bytes_b64 if dialect == "postgresql" else to_bytes_hex
    return None


def to_datetime_delta_sqlite(value: Any) -> Any:
    # SQLAlchemy stores an Interval on SQLite as a datetime after the epoch;
    # notify() sends one as seconds.
    if isinstance(value, str):
        return to_datetime(value) - dt.datetime(1970, 1, 1)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    return value
