"""What travels from a database to the pipeline: raw notifications and their payload.

A :class:`Notification` is what a source hands the listener: a channel and
the payload text, still encoded.  This module is the one home of the
payload's keys; a payload is the text of one JSON object:

=========  ==========================================================  ============
key        what it holds                                               written by
=========  ==========================================================  ============
``ts``     the trigger's clock, seconds since the epoch (a number)     trigger, notify()
``row``    the row: the key columns and extra columns (an object;      trigger, notify()
           empty for TRUNCATE, which has no row)
``chg``    UPDATE only: the watched columns (keys, extra, trigger     trigger
           columns) whose value changed (``IS DISTINCT FROM``), a list
``old``    UPDATE with ``include_old=True``: the old values of the     trigger
           key and extra columns (an object, encoded like ``row``)
``pos``    the journal or change-log position of a durable event       journal reader
``ovf``    a reference (an integer) to the payload stored in the       overflow trigger
           overflow table; the rest of the payload is then fetched
``trunc``  ``true``: the row was too large, ``row`` holds its keys     trigger
           only (re-read from the table before delivery)
``lost``   ``true``: not even the keys fitted, ``row`` is empty        trigger
``err``    the SQLSTATE of a trigger that could not build the row      trigger
``msg``    that error's message (may quote a value: logged at DEBUG)   trigger
``custom`` ``true``: sent by :meth:`Notifier.notify`, not by a trigger  notify()
``rows``   several rows of one statement, in its order, instead of     per-statement
           ``row`` (a list); each row is a list of its values in the   trigger
           order of the watch's key and extra columns, and for an
           UPDATE then its ``chg`` list, then with ``include_old``
           its old values in the same order
=========  ==========================================================  ============

A payload of exactly ``ts`` and ``row`` (and for an UPDATE ``chg`` and
``old``, taken out first) is a complete row event, the common case the
dispatcher decodes on its fastest path.  A payload of ``ts`` and ``rows``
holds one such event per row: :func:`split_rows` makes their payloads.
:class:`Decoded` carries a payload its source built as a dict, which the
dispatcher takes without a text in between.  :func:`decode_json` reads one
payload text; :func:`encode_custom` writes the payload of ``Notifier.notify()``.
"""

from __future__ import annotations

import functools
import json
import json.scanner
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from .events import _json_default
from .exceptions import SQLNotifyConfigurationError, SQLNotifyPayloadSizeError

__all__ = [
    "CHG",
    "CUSTOM",
    "ERR",
    "LOST",
    "MSG",
    "OLD",
    "OVF",
    "POS",
    "ROW",
    "ROWS",
    "TRUNC",
    "TS",
    "Decoded",
    "Notification",
    "RawNotification",
    "decode_json",
    "encode_custom",
    "split_rows",
]

TS = "ts"
ROW = "row"
POS = "pos"
OVF = "ovf"
TRUNC = "trunc"
LOST = "lost"
ERR = "err"
MSG = "msg"
CUSTOM = "custom"
CHG = "chg"
OLD = "old"
ROWS = "rows"


class Notification(NamedTuple):
    """A raw notification: the channel and the payload text, still encoded."""

    channel: str
    payload: str


class RawNotification(Protocol):
    """Anything with ``channel`` and ``payload`` (psycopg2's ``Notify`` qualifies)."""

    @property
    def channel(self) -> str: ...

    @property
    def payload(self) -> str: ...


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Decoded:
    """A notification whose source holds its payload decoded: ``data``, the dict of the
    keys above that the text would hold.

    The dispatcher takes ``data`` as it is; :attr:`payload`, its JSON text, is
    written only when asked for (a log message, a relay).  Built on the
    listener thread; ``data`` is not changed after it is handed over.
    """

    __slots__ = ("channel", "data")

    def __init__(self, channel: str, data: dict[str, Any]) -> None:
        self.channel = channel
        self.data = data

    @property
    def payload(self) -> str:
        """The payload's text."""
        return _encode(self.data)

    def __repr__(self) -> str:
        return f"Decoded({self.channel!r}, {self.data!r})"


_scan_once: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]
)


def decode_json(text: str) -> Any:
    """``json.loads`` for payloads, without its per-call overhead.

    The scanner decodes the value at index 0; anything it does not take
    whole (leading or trailing text, malformed JSON) goes through
    ``json.loads``, which decodes it or raises its usual error.
    """
    try:
        value, end = _scan_once(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def split_rows(
    data: Mapping[str, Any], columns: Sequence[str], update: bool, old: bool
) -> list[dict[str, Any]]:
    """The single-row payloads (``ts``, ``row`` ...) of a ``rows`` payload, in order.

    ``columns``: the watch's key and extra columns, the order of each row's
    values; ``update``: each row then holds its ``chg`` list, and with ``old``
    its old values.

    :raises ValueError: when a row is not a list of that length.
    """
    rows = data[ROWS]
    if type(rows) is not list:
        raise ValueError(f"'rows' is a {type(rows).__name__}, not a list")
    ts = data.get(TS)
    width = len(columns)
    size = width + (1 + (width if old else 0) if update else 0)
    out = []
    for values in rows:
        if type(values) is not list or len(values) != size:
            raise ValueError(f"a row of 'rows' is not a list of {size} values: {values!r}")
        if not update:
            out.append({TS: ts, ROW: dict(zip(columns, values, strict=True))})
            continue
        item = {TS: ts, ROW: dict(zip(columns, values[:width], strict=True)), CHG: values[width]}
        if old:
            item[OLD] = dict(zip(columns, values[width + 1 :], strict=True))
        out.append(item)
    return out


def encode_custom(
    payload: Mapping[str, Any], channel: str, *, binary: str, limit: int | None
) -> str:
    """The payload text of a custom notification of ``payload`` (a row's values).

    Values JSON cannot hold are written as text (see ``events._json_default``;
    ``binary``: how bytes are written).

    :raises SQLNotifyConfigurationError: for a payload that is not a mapping,
        or holds text that is not valid Unicode.
    :raises SQLNotifyPayloadSizeError: when the text is over ``limit`` bytes.
    """
    if not isinstance(payload, Mapping):
        raise SQLNotifyConfigurationError(
            f"payload must be a mapping of column names to values, not {type(payload).__name__}"
        )
    row = json.dumps(
        dict(payload),
        default=functools.partial(_json_default, binary=binary),
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # A fixed-width timestamp keeps the size of a given payload stable.
    body = f'{{"{TS}":{time.time():.6f},"{ROW}":{row},"{CUSTOM}":true}}'
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SQLNotifyConfigurationError(
            f"payload for channel {channel!r} holds text that is not valid Unicode ({exc.reason})"
        ) from exc
    if limit is not None and size > limit:
        raise SQLNotifyPayloadSizeError(
            f"payload for channel {channel!r} is {size} bytes; the limit is"
            f" {limit} bytes: send less, or pass use_overflow_table=True",
            size=size,
            limit=limit,
        )
    return body
