"""Reading an append-only change log in order, from a remembered position.

A database that keeps its changes in a table (SQLite's change log;
PostgreSQL's journal of durable watches) supplies one function,
``fetch(after, limit)``, returning up to ``limit`` rows
``(position, channel, payload)`` with ``position > after`` in ascending
order.  :class:`JournalReader` owns the position: it reads in batches, keeps
the channels it serves, stamps each payload with its position (``"pos"``),
and reports positions that vanished before it read them.

Positions are integers.  A dialect whose natural key is wider packs it into
one integer that orders the same way (PostgreSQL: transaction id and journal
id), and gives a ``stamp`` function for the number events carry.

A row may come with a ``None`` payload: it is one the caller already
delivered (or must not deliver); the position moves past it silently.

The fetch function must only return rows that are *final*: no row with a
smaller position may appear after it was read.  SQLite commits one writer at
a time, so its sequence is final as soon as it is visible.  PostgreSQL's is
not (sequence numbers are taken in statement order, not commit order), so
its fetch stops at a horizon: see :class:`EarlyEvents` and
``sqlnotify.dialects.postgresql_journal``.

The reader knows no SQL and no driver, so every dialect shares it.  It is used
by one thread at a time (the listener's).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple, Protocol

from .dialects.base import Notification

__all__ = [
    "EarlyEvents",
    "Fetch",
    "JournalBatch",
    "JournalEvent",
    "JournalReader",
    "JournalStore",
    "with_position",
]

#: ``fetch(after, limit)`` -> rows ``(position, channel, payload)``, ascending.
Fetch = Callable[[int, int], Sequence[tuple[int, str, "str | None"]]]


def with_position(payload: str, position: int) -> str:
    """``payload`` (a JSON object's text) with ``"pos": position`` added."""
    body = payload.rstrip()
    if not body.endswith("}"):
        return payload  # not an object: left for the decoder to reject
    head = body[:-1].rstrip()
    sep = "" if head.endswith("{") else ","
    return f'{head}{sep}"pos":{position}}}'


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
        position)``; the default is a :class:`Notification` whose payload
        carries ``"pos"``.
    """

    def __init__(
        self,
        position: int,
        channels: Collection[str] | None = None,
        *,
        contiguous: bool = False,
        on_gap: Callable[[int, int], None] | None = None,
        batch_size: int = 1000,
        log: logging.Logger | None = None,
        stamp: Callable[[int], int] | None = None,
        make: Callable[[str, str, int], Any] | None = None,
    ) -> None:
        self.position = position
        self.channels = frozenset(channels) if channels is not None else None
        self.contiguous = contiguous
        self.on_gap = on_gap
        self.batch_size = batch_size
        self.log = log or logging.getLogger("sqlnotify")
        self.stamp = stamp
        self.make = make
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
            for seq, channel, payload in rows:
                if self.contiguous and seq != pos + 1:
                    self._gap(pos + 1, seq - 1)
                pos = seq
                if payload is not None and (channels is None or channel in channels):
                    label = seq if stamp is None else stamp(seq)
                    if make is None:
                        append(Notification(channel, with_position(payload, label)))
                    else:
                        append(make(channel, payload, label))
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


# -- journals with a live path (PostgreSQL's durable watches) -------------------


class JournalEvent(NamedTuple):
    """An event of a durable watch: a live one the listener already decoded
    (``data``), or one read from the journal (``data`` is ``None``: the
    dispatcher decodes ``payload`` and adds ``position``).
    """

    channel: str
    payload: str
    data: dict[str, Any] | None
    position: int


@dataclasses.dataclass
class JournalBatch:
    """What one read of a horizon-bound journal returns.

    ``rows`` ``(position, channel, payload)`` in order, all below ``horizon``
    (every row below it is final); ``now``: a position such that every row
    committed before the read is at or below it.
    """

    rows: Sequence[tuple[int, str, str | None]]
    horizon: int
    now: int


class JournalStore(Protocol):
    """A dialect's journal of durable watches, with consumers' saved positions."""

    def start_position(self) -> tuple[int, Callable[[int], bool] | None]:
        """The position of a new reader, and an optional test for rows after it to skip."""
        ...

    def read(
        self, after: int, channels: Sequence[str], limit: int, known: Collection[int] = ()
    ) -> JournalBatch:
        """Up to ``limit`` rows of ``channels`` after ``after`` and below the horizon.

        Rows whose position is in ``known`` may come without their payload.
        """
        ...

    def stamp(self, position: int) -> int:
        """The number an event at ``position`` carries as ``event.position``."""
        ...

    def load(self, consumer: str) -> tuple[int, dt.datetime] | None:
        """A consumer's saved position and when it was saved; ``None`` if unknown."""
        ...

    def save(self, consumer: str, position: int) -> None:
        """Store a consumer's position (never moving it backwards)."""
        ...

    def pruned(self) -> tuple[int, dt.datetime] | None:
        """The newest position retention removed and that row's time; ``None`` if none."""
        ...

    def prune(self, retention: float, consumer_expiry: float) -> int:
        """Remove a bounded batch of rows no known consumer needs; return how many."""
        ...

    def close(self) -> None:
        """Release connections and locks."""
        ...


class EarlyEvents:
    """Live events delivered before the journal walk reached them.

    A durable watch's notification carries its payload and journal position,
    so the listener delivers it at once; the journal walk, which only moves
    through final rows, meets it later and must not deliver it again.  This
    remembers those positions until the walk passes them, and what the walk
    still has to reach (``target``) before everything known to exist was
    seen.  Used by the listener thread only.

    :param skip: rows for which it returns ``True`` are passed over silently
        (events committed before a new reader started).
    """

    #: Positions remembered at most; past this, live payloads are left to the walk.
    LIMIT = 100_000

    def __init__(self, skip: Callable[[int], bool] | None = None) -> None:
        self.ahead: set[int] = set()
        self.target: int | None = None
        self._skip = skip
        self._want_now = True

    @property
    def pending(self) -> bool:
        """``True`` while a read is needed to deliver everything known to exist."""
        return self._want_now or self.target is not None

    def catch_up(self) -> None:
        """Ask the next read to cover everything committed until then (after a reconnect)."""
        self._want_now = True

    def _need(self, position: int) -> None:
        if self.target is None or position > self.target:
            self.target = position

    def live(self, position: int, walked: int, take: bool) -> bool | None:
        """Decide about a live event: ``True`` deliver it now, ``False`` it is a
        duplicate, ``None`` leave it to the walk.

        ``walked`` is the reader's position; ``take`` is ``False`` when the
        caller cannot accept the payload now (queue full, or the notification
        carried no payload).
        """
        if position <= walked or position in self.ahead:
            return False
        self._need(position)
        if not take or len(self.ahead) >= self.LIMIT:
            return None
        self.ahead.add(position)
        return True

    def screen(self, batch: JournalBatch, limit: int) -> list[tuple[int, str, str | None]]:
        """Blank the payloads of rows delivered early or skipped; track the horizon."""
        ahead = self.ahead
        if self._want_now:
            self._want_now = False
            self._need(batch.now)
        if self.target is not None and self.target > batch.now:
            # Every real event committed before the read is at or below ``now``:
            # anything beyond came from a foreign notification.
            self.target = batch.now
            ahead.difference_update([p for p in ahead if p > batch.now])
        skip = self._skip
        rows = batch.rows
        out = list(rows) if not ahead and skip is None else self._blank(rows, skip)
        if len(rows) < limit:
            # Everything below the horizon was read.
            if ahead:
                ahead.difference_update([p for p in ahead if p < batch.horizon])
            if self.target is not None and batch.horizon > self.target:
                self.target = None
        return out

    def _blank(
        self, rows: Sequence[tuple[int, str, str | None]], skip: Callable[[int], bool] | None
    ) -> list[tuple[int, str, str | None]]:
        ahead = self.ahead
        out: list[tuple[int, str, str | None]] = []
        for position, channel, payload in rows:
            if position in ahead:
                ahead.discard(position)
                out.append((position, channel, None))
            elif skip is not None and skip(position):
                out.append((position, channel, None))
            else:
                out.append((position, channel, payload))
        return out

    def settle(self, batch: JournalBatch) -> tuple[int | None, bool]:
        """The furthest position the rows delivered early let a reader pass, for a clean stop.

        Returns the new position (or ``None``) and whether to read on.
        """
        reached = None
        for position, _, _ in batch.rows:
            if position in self.ahead:
                self.ahead.discard(position)
            elif self._skip is None or not self._skip(position):
                return reached, False
            reached = position
        return reached, bool(batch.rows) and bool(self.ahead)
