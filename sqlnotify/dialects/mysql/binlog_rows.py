"""Row events of simple tables decoded from their bytes (the binlog source's fast path).

Used by the listener thread only.  The ``mysql-replication`` reader decodes
any column type, at a cost of some hundred microseconds of Python per event.
A table whose columns are all integers, floats, doubles or ``VARCHAR`` in
a UTF-8 or ASCII-compatible character set (the common case of a watched
table) is decoded here in one pass over the event's bytes, into the same
row dictionaries the reader builds (``values``; ``before_values`` and
``after_values`` for an UPDATE), with the same Python values.  Anything
else (another type, a column without its name, a partial row image, bytes
that do not decode) returns ``None``: the reader decodes that event.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

__all__ = ["RowDecoder", "plan_of"]

#: Row event types (v1 and v2) and the operation each records.
OPS = {
    0x17: "insert",
    0x1E: "insert",
    0x18: "update",
    0x1F: "update",
    0x19: "delete",
    0x20: "delete",
}
_V2 = frozenset({0x1E, 0x1F, 0x20})
_UPDATE = frozenset({0x18, 0x1F})
_HEADER = 20  # the OK byte and the 19-byte event header

# MySQL field types (``FIELD_TYPE``) decoded here: (signed, unsigned) struct codes.
_FIXED: dict[int, tuple[struct.Struct, struct.Struct]] = {
    1: (struct.Struct("<b"), struct.Struct("<B")),  # TINY
    2: (struct.Struct("<h"), struct.Struct("<H")),  # SHORT
    3: (struct.Struct("<i"), struct.Struct("<I")),  # LONG
    8: (struct.Struct("<q"), struct.Struct("<Q")),  # LONGLONG
    4: (struct.Struct("<f"), struct.Struct("<f")),  # FLOAT
    5: (struct.Struct("<d"), struct.Struct("<d")),  # DOUBLE
}
_VARCHAR = 15
#: Python codecs whose decoding of any byte string agrees with the reader's.
_CODECS = frozenset({"utf8", "utf-8", "utf8mb4", "ascii", "latin1", "latin-1", "cp1252"})

#: One column: its name, then a fixed-size struct or ``None`` with the
#: length prefix's size and the text codec.
Column = tuple[str, "struct.Struct | None", int, str]


def plan_of(table: Any, encoding: Callable[[str], str]) -> list[Column] | None:
    """How to decode a mapped table's rows, or ``None`` when it has a column not handled here.

    ``encoding``: the reader's own mapping of a character set name to a codec.
    """
    plan: list[Column] = []
    for column in table.columns:
        name = getattr(column, "name", None)
        if not name:
            return None
        kind = column.type
        if kind in _FIXED:
            plan.append((str(name), _FIXED[kind][1 if column.unsigned else 0], 0, ""))
        elif kind == _VARCHAR:
            charset = column.character_set_name
            codec = "utf-8" if charset is None else str(encoding(charset)).lower()
            if codec not in _CODECS:
                return None
            plan.append((str(name), None, 2 if column.max_length > 255 else 1, codec))
        else:
            return None
    return plan


class RowDecoder:
    """Decodes the row events of tables with a plan (see :func:`plan_of`)."""

    def __init__(self, checksum: bool) -> None:
        self._tail = 4 if checksum else 0

    def rows(self, data: bytes, plan: list[Column]) -> list[dict[str, Any]] | None:
        """The rows of the row event in ``data`` (the packet); ``None``: the reader decodes it."""
        kind = data[5]
        at = _HEADER + 8  # table id, flags
        if kind in _V2:
            at += int.from_bytes(data[at : at + 2], "little")  # the extra data, its length included
        width = data[at]
        if width >= 251 or width != len(plan):
            return None
        at += 1
        size = (width + 7) // 8
        full = (1 << width) - 1
        update = kind in _UPDATE
        # Every column present (MySQL sets the last byte's unused bits too).
        if int.from_bytes(data[at : at + size], "little") & full != full:
            return None  # a partial row image
        at += size
        if update:
            if int.from_bytes(data[at : at + size], "little") & full != full:
                return None
            at += size
        end = 1 + int.from_bytes(data[10:14], "little") - self._tail
        if end > len(data):
            return None
        out: list[dict[str, Any]] = []
        try:
            while at < end:
                values, at = _image(data, at, plan, size)
                if update:
                    after, at = _image(data, at, plan, size)
                    out.append({"before_values": values, "after_values": after})
                else:
                    out.append({"values": values})
        except (struct.error, UnicodeDecodeError, IndexError):
            return None
        if at != end:
            return None
        return out


def _image(data: bytes, at: int, plan: list[Column], size: int) -> tuple[dict[str, Any], int]:
    nulls = int.from_bytes(data[at : at + size], "little")
    at += size
    values: dict[str, Any] = {}
    bit = 1
    for name, fixed, prefix, codec in plan:
        if nulls & bit:
            values[name] = None
        elif fixed is not None:
            values[name] = fixed.unpack_from(data, at)[0]
            at += fixed.size
        else:
            length = int.from_bytes(data[at : at + prefix], "little")
            at += prefix
            stop = at + length
            if stop > len(data):
                raise IndexError("a value runs past the event")
            values[name] = data[at:stop].decode(codec)
            at = stop
        bit <<= 1
    return values, at
