"""Row events' rows as the payload the watch's trigger would have written.

Used by the listener thread only (the binlog source).  Keys as in
:mod:`sqlnotify._payload`; values encoded as the trigger encodes them:
decimals and dates as text, binary as upper-case hex, JSON embedded, MariaDB's
UUID in its text form.  Delivery and typed values do not depend on the source.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import types as sqltypes

from ..._payload import CHG, OLD, ROW, TS
from ..._watch import Watch

__all__ = ["RowShape", "column_kind"]


def column_kind(type_: Any) -> str:
    """How the trigger encodes a column of this SQLAlchemy type: json, binary, uuid or plain."""
    t = type_
    while isinstance(t, sqltypes.TypeDecorator) and not isinstance(t, sqltypes.Interval):
        t = t.impl_instance if hasattr(t, "impl_instance") else t.impl
    if isinstance(t, sqltypes.JSON):
        return "json"
    if isinstance(t, (sqltypes.LargeBinary, sqltypes._Binary)):
        return "binary"
    if isinstance(t, sqltypes.Uuid):
        return "uuid"
    return "plain"


#: Types a plain column's value keeps in the payload.
_AS_IS = frozenset({int, float, str})


def _uuid_text(raw: bytes) -> str:
    """MariaDB's ``UUID`` column from its stored form (time-based RFC UUIDs, version 1,
    are kept with their time fields swapped, so they sort by time)."""
    if raw[0] >> 4 == 1 and raw[8] & 0x80:
        raw = raw[4:8] + raw[2:4] + raw[0:2] + raw[8:]
    return str(uuid.UUID(bytes=raw))


def _plain(value: Any) -> Any:
    """A value of a JSON document as JSON holds it (the reader may give bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _value(value: Any, kind: str) -> Any:
    """One column's value as the trigger writes it into the payload."""
    if value is None or (type(value) in _AS_IS and kind == "plain"):
        return value
    if kind == "binary":
        raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
        return raw.hex().upper()
    if kind == "uuid" and isinstance(value, bytes) and len(value) == 16:
        return _uuid_text(value)
    if kind == "json":
        return json.loads(value) if isinstance(value, (str, bytes)) else _plain(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return str(value)
    if isinstance(value, dt.timedelta):
        total = int(value.total_seconds())
        sign = "-" if total < 0 else ""
        hours, rest = divmod(abs(total), 3600)
        micro = f".{value.microseconds:06d}" if value.microseconds and total >= 0 else ""
        return f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}{micro}"
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class RowShape:
    """One watch of a table: how a row of its row events becomes the watch's payload."""

    __slots__ = ("channel", "columns", "kinds", "plain", "watch")

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.channel = watch.channel
        self.columns = tuple(watch.payload_columns)
        self.kinds = {c: column_kind(watch.column_types.get(c)) for c in self.columns}
        #: Every column's value goes into the payload as the reader gives it.
        self.plain = all(kind == "plain" for kind in self.kinds.values())

    def body(
        self,
        ts: float,
        row: Mapping[str, Any],
        before: Mapping[str, Any] | None = None,
        *,
        exact: bool = False,
    ) -> dict[str, Any] | None:
        """The dict the trigger's payload text holds for this row (``None``: the trigger
        would not fire).

        ``row`` is the new row (the old one for DELETE); ``before`` the old row of an
        UPDATE.  ``exact``: the values are ints, floats, strings or ``None`` already (the
        row decoder's), so plain columns are taken as they are.
        """
        watch = self.watch
        body: dict[str, Any] = {TS: ts, ROW: self._image(row, exact)}
        if before is not None:
            if watch.trigger_columns and all(
                before.get(c) == row.get(c) for c in watch.trigger_columns
            ):
                return None
            body[CHG] = [c for c in watch.compared_columns if before.get(c) != row.get(c)]
            if watch.include_old:
                body[OLD] = self._image(before, exact)
        return body

    def _image(self, row: Mapping[str, Any], exact: bool) -> dict[str, Any]:
        if exact and self.plain:
            return {c: row.get(c) for c in self.columns}
        kinds = self.kinds
        return {c: _value(row.get(c), kinds[c]) for c in self.columns}
