"""Reading an append-only change log in order, from a remembered position.

A database that keeps its changes in a table (SQLite's change log;
PostgreSQL's journal of durable watches) supplies one function,
``fetch(after, limit)``, returning up to ``limit`` rows
``(position, channel, payload)`` with ``position > after`` in ascending
order.  :class:`JournalReader` owns the position: it reads in batches, keeps
the channels it serves, stamps each payload with its position (``"pos"``),
and reports positions that vanished before it read them.  For a journal of
durable watches it can hand out the rows themselves (``rows=True``): the
dispatcher then decodes each payload once and takes the event's number from
the journal store (``JournalStore.stamp``), so the reading thread builds
nothing per row.

Positions are opaque to the reader: it only passes the last one back to
``fetch`` and compares it with the one it started from.  SQLite's are
integers; PostgreSQL's are snapshots (``SnapshotPosition``), with a
``stamp`` function for the number events carry (the journal id).

A row may come with a ``None`` payload: it is one the caller already
delivered (or must not deliver); the position moves past it silently.

The fetch function must only return rows that are *final*: no row with a
smaller position may appear after it was read.  SQLite commits one writer at
a time, so its sequence is final as soon as it is visible.  PostgreSQL's
journal reads snapshot windows: see ``sqlnotify.dialects.postgresql.journal``.

The reader knows no SQL and no driver, so every dialect shares it.  It is used
by one thread at a time (the listener's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

from ._payload import POS, Notification

__all__ = [
    "Fetch",
    "JournalEvent",
    "JournalReader",
    "Row",
    "with_position",
]

#: A row of a log: ``(position, channel, payload)``.
Row = tuple[Any, str, "str | None"]
#: ``fetch(after, limit)`` -> rows ``(position, channel, payload)``, ascending.
Fetch = Callable[[Any, int], Sequence[Row]]


def with_position(payload: str, position: int) -> str:
    """``payload`` (a JSON object's text) with ``"pos": position`` added."""
    body = payload.rstrip()
    if not body.endswith("}"):
        return payload  # not an object: left for the decoder to reject
    head = body[:-1].rstrip()
    sep = "" if head.endswith("{") else ","
    return f'{head}{sep}"{POS}":{position}}}'


class JournalReader:
    """A position in an ordered log and the logic to read past it.

    :param position: the last position already consumed; reading returns
        rows after it.
    :param channels: the channels to return; rows of other channels are
        skipped (the position still moves past them).  ``None``: all.
    :param contiguous: positions have no holes (each row's position is the
        previous one plus one), so a hole means rows were removed before this
        reader saw them, which is reported through ``on_gap`` and counted.
    :param on_gap: called as ``on_gap(first, last)`` with the missing
        positions, on the reading thread.
    :param batch_size: rows per ``fetch`` call.
    :param stamp: maps a position to the number written as ``"pos"``
        (default: the position itself).
    :param make: builds each item from ``(channel, payload, stamped
        position, position)``; the default is a :class:`Notification` whose
        payload carries ``"pos"``.
    :param rows: hand out the rows ``(position, channel, payload)``
        themselves (those with a payload, of the channels served); ``stamp``
        and ``make`` are then not used.
    """

    def __init__(
        self,
        position: Any,
        channels: Collection[str] | None = None,
        *,
        contiguous: bool = False,
        on_gap: Callable[[int, int], None] | None = None,
        batch_size: int = 1000,
        log: logging.Logger | None = None,
        stamp: Callable[[Any], int] | None = None,
        make: Callable[[str, str, int, Any], Any] | None = None,
        rows: bool = False,
    ) -> None:
        self.position = position
        self.channels = frozenset(channels) if channels is not None else None
        self.contiguous = contiguous
        self.on_gap = on_gap
        self.batch_size = batch_size
        self.log = log or logging.getLogger("sqlnotify")
        self.stamp = stamp
        self.make = make
        self.rows = rows
        #: The last read stopped at its row limit: more rows are waiting.
        self.more = False
        #: How many positions vanished before this reader saw them.
        self.missed = 0
        #: How many holes were found.
        self.gaps = 0

    def read(self, fetch: Fetch, max_rows: int = 10_000) -> list[Any]:
        """Read rows after the position (at most about ``max_rows``) and advance past them."""
        out: list[Any] = []
        append = out.append
        channels = self.channels
        stamp = self.stamp
        make = self.make
        contiguous = self.contiguous
        # Rows handed out as they are: one pass in C over each fetched batch.
        bulk = self.rows and not contiguous
        pos = self.position
        batch = self.batch_size
        seen = 0
        self.more = False
        while True:
            try:
                rows = fetch(pos, batch)
            except Exception:
                if pos == self.position:
                    raise
                # Hand out what was read; the next read meets the error again.
                self.more = True
                break
            if bulk:
                if rows:
                    pos = rows[-1][0]
                    if channels is None:
                        out += [r for r in rows if r[2] is not None]
                    else:
                        out += [r for r in rows if r[2] is not None and r[1] in channels]
            else:
                for row in rows:
                    seq, channel, payload = row
                    if contiguous and seq != pos + 1:
                        self._gap(pos + 1, seq - 1)
                    pos = seq
                    if payload is not None and (channels is None or channel in channels):
                        if self.rows:
                            append(row)
                            continue
                        label = seq if stamp is None else stamp(seq)
                        if make is None:
                            append(Notification(channel, with_position(payload, label)))
                        else:
                            append(make(channel, payload, label, seq))
            seen += len(rows)
            if len(rows) < batch:
                break
            if seen >= max_rows:
                self.more = True
                break
        self.position = pos
        return out

    def _gap(self, first: int, last: int) -> None:
        if last < first:
            return
        count = last - first + 1
        self.gaps += 1
        self.missed += count
        self.log.warning(
            "change log positions %d to %d (%d rows) were removed before this listener read"
            " them; their events are lost (was the listener behind by more than the retention"
            " period?)",
            first,
            last,
            count,
        )
        if self.on_gap is not None:
            try:
                self.on_gap(first, last)
            except Exception:
                self.log.exception("a change log gap handler failed")


# -- journals of durable watches ------------------------------------------------


class JournalEvent(NamedTuple):
    """An event of a durable watch read from the journal: the dispatcher
    decodes ``payload`` and adds ``position`` (``data`` is always ``None``).

    ``token`` is the journal store's position of the event: once every
    receiver of this event and of all before it is done, it is the position
    a consumer may save (opaque; only the store reads it).
    """

    channel: str
    payload: str
    data: dict[str, Any] | None
    position: int
    token: Any = None
