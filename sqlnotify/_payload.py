"""What travels from a database to the pipeline: raw notifications and their payload.

A :class:`Notification` is what a source hands the listener: a channel and
the payload text, still encoded.  This module is the one home of the
payload's keys; a payload is the text of one JSON object:

=========  ==========================================================  ============
key        what it holds                                               written by
=========  ==========================================================  ============
``ts``     the trigger's clock, seconds since the epoch (a number)     trigger, notify()
``row``    the row: the key columns and extra columns (an object)      trigger, notify()
``pos``    the journal or change-log position of a durable event       journal reader
``ovf``    a reference (an integer) to the payload stored in the       overflow trigger
           overflow table; the rest of the payload is then fetched
``trunc``  ``true``: the row was too large, ``row`` holds its keys     trigger
           only (re-read from the table before delivery)
``lost``   ``true``: not even the keys fitted, ``row`` is empty        trigger
``err``    the SQLSTATE of a trigger that could not build the row      trigger
``msg``    that error's message (may quote a value: logged at DEBUG)   trigger
``custom`` ``true``: sent by :meth:`Notifier.notify`, not by a trigger  notify()
=========  ==========================================================  ============

A payload of exactly ``ts`` and ``row`` is a complete row event, the common
case the dispatcher decodes on its fastest path.  :func:`decode_json` reads
one payload text.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

__all__ = [
    "CUSTOM",
    "ERR",
    "LOST",
    "MSG",
    "OVF",
    "POS",
    "ROW",
    "TRUNC",
    "TS",
    "Notification",
    "RawNotification",
    "custom_payload",
    "decode_json",
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


def custom_payload(epoch: float, row_json: str) -> str:
    """The payload of a custom notification: ``row_json`` is the row's JSON text."""
    # A fixed-width timestamp keeps the size of a given payload stable.
    return f'{{"{TS}":{epoch:.6f},"{ROW}":{row_json},"{CUSTOM}":true}}'
