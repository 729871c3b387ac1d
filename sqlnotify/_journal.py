"""Reading a change journal in order, from a position, without skipping anything.

A durable watch's trigger appends each event to a journal table in the
writer's own transaction.  A :class:`JournalReader` (on the listener thread)
walks that table in key order from its cursor, batch by batch, through a
:class:`JournalStore` the dialect supplies (the SQL differs; the walk does
not).

Keys are tuples of integers.  The store guarantees that every row whose key
is below the *horizon* it returns is final: no row with a smaller key can be
committed later.  The reader only moves its cursor through final rows, so it
never steps over a row that commits afterwards.  PostgreSQL keys are
``(transaction id, journal id)`` with the horizon at the oldest running
transaction; SQLite keys are ``(rowid,)``, final as soon as visible, since
SQLite commits one writer at a time.

Events can also arrive early (a live notification carrying the payload):
the reader remembers their positions until its cursor passes them, so the
journal walk does not deliver them twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple, Protocol

__all__ = ["JournalBatch", "JournalEvent", "JournalReader", "JournalRow", "JournalStore", "Key"]

Key = tuple[int, ...]


class JournalRow(NamedTuple):
    """One journal row: its key, its position (unique id), channel and payload."""

    key: Key
    position: int
    channel: str
    payload: str | None


class JournalEvent(NamedTuple):
    """A notification whose payload came from (or was checked against) the journal.

    ``data`` is the decoded payload when the listener already parsed it
    (``None`` otherwise); ``position`` is the journal position.
    """

    channel: str
    payload: str
    data: dict[str, object] | None
    position: int


@dataclasses.dataclass
class JournalBatch:
    """What one read returns.

    ``rows`` in key order, all below ``horizon``; ``now``: a key such that
    every row committed before the read is at or below it (used to know when
    a catch-up after a disconnect is complete).
    """

    rows: Sequence[JournalRow]
    horizon: Key
    now: Key


class JournalStore(Protocol):
    """The dialect's side: the SQL of one journal."""

    def start_key(self) -> tuple[Key, Callable[[Key], bool] | None]:
        """The cursor of a new reader, and an optional test for rows before it to skip."""
        ...

    def read(
        self, after: Key, channels: Sequence[str], limit: int, known: Collection[int] = ()
    ) -> JournalBatch:
        """Up to ``limit`` rows of ``channels`` with ``after < key < horizon``.

        Rows whose position is in ``known`` (already delivered) may come
        without their payload (``None``), which saves moving it again.
        """
        ...

    def load(self, consumer: str) -> tuple[Key, dt.datetime] | None:
        """A consumer's saved position and when it was saved; ``None`` if unknown."""
        ...

    def save(self, consumer: str, key: Key) -> None:
        """Store a consumer's position (never moving it backwards)."""
        ...

    def pruned(self) -> tuple[Key, dt.datetime] | None:
        """The newest key retention removed and that row's time; ``None`` if none was."""
        ...

    def prune(self, retention: float, consumer_expiry: float) -> int:
        """Remove a bounded batch of rows no known consumer needs; return how many."""
        ...


class JournalReader:
    """A cursor over a :class:`JournalStore`; used by the listener thread only.

    ``target`` is the key the horizon must pass before the reader has seen
    everything it knows exists (live events taken early or skipped, or the
    end of the journal at a reconnect); ``None`` when nothing is pending.
    """

    #: Rows per read.
    BATCH = 5000
    #: Positions of early events remembered at most; past this, live
    #: payloads are no longer taken and the walk delivers them instead.
    MAX_AHEAD = 100_000

    def __init__(
        self,
        store: JournalStore,
        channels: Sequence[str],
        cursor: Key,
        skip: Callable[[Key], bool] | None = None,
    ) -> None:
        self.store = store
        self.channels = list(channels)
        self.cursor: Key = cursor
        self._skip = skip
        self._ahead: set[Key] = set()
        self.target: Key | None = None
        self._want_now = True
        self.duplicates = 0

    @property
    def pending(self) -> bool:
        """``True`` while a read is needed to deliver everything known to exist."""
        return self._want_now or self.target is not None

    def catch_up(self) -> None:
        """Ask the next read to cover everything committed until then (after a reconnect)."""
        self._want_now = True

    def _need(self, key: Key) -> None:
        if self.target is None or key > self.target:
            self.target = key

    def live(self, key: Key, take: bool) -> bool | None:
        """Decide about a live notification: ``True`` deliver it now, ``False`` drop it
        as a duplicate, ``None`` leave it to the journal walk.

        ``take`` is ``False`` when the caller cannot accept the payload now
        (queue full, payload not in the notification).
        """
        if key <= self.cursor or key in self._ahead:
            self.duplicates += 1
            return False
        self._need(key)
        if not take or len(self._ahead) >= self.MAX_AHEAD:
            return None
        self._ahead.add(key)
        return True

    def read(self) -> tuple[list[JournalEvent], bool]:
        """Read one batch; return the events to deliver and whether more remain."""
        ahead = self._ahead
        known = [k[-1] for k in ahead] if ahead else ()
        batch = self.store.read(self.cursor, self.channels, self.BATCH, known)
        if known and any(r.payload is None and r.key not in ahead for r in batch.rows):
            # A position matched but not its key (a foreign notification): read whole.
            batch = self.store.read(self.cursor, self.channels, self.BATCH)
        if self._want_now:
            self._want_now = False
            self._need(batch.now)
        if self.target is not None and self.target > batch.now:
            # Every real event committed before this read is at or below ``now``:
            # anything beyond came from a foreign notification.
            self.target = batch.now
            ahead.difference_update([k for k in ahead if k > batch.now])
        skip = self._skip
        out: list[JournalEvent] = []
        for key, position, channel, payload in batch.rows:
            if key in ahead:
                ahead.discard(key)
                continue
            if skip is not None and skip(key):
                continue
            if payload is None:  # cannot happen for a row not delivered early
                raise RuntimeError(f"journal row {position} came without its payload")
            out.append(JournalEvent(channel, payload, None, position))
        if batch.rows:
            self.cursor = batch.rows[-1].key
        more = len(batch.rows) >= self.BATCH
        if not more:
            if ahead:  # early events below the horizon not in the journal were foreign
                ahead.difference_update([k for k in ahead if k < batch.horizon])
            if self.target is not None and batch.horizon > self.target:
                self.target = None
        return out, more

    def settle(self) -> None:
        """Move the cursor over rows already delivered early, stopping at the first other.

        For a clean stop: once the dispatcher has drained, the early events
        are through their receivers, and the saved position can pass them.
        """
        while self._ahead:
            known = [k[-1] for k in self._ahead]
            batch = self.store.read(self.cursor, self.channels, self.BATCH, known)
            for row in batch.rows:
                if row.key in self._ahead:
                    self._ahead.discard(row.key)
                elif self._skip is None or not self._skip(row.key):
                    return
                self.cursor = row.key
            if len(batch.rows) < self.BATCH:
                return

    def jump(self, key: Key) -> None:
        """Move the cursor forward to ``key`` (rows before it are gone)."""
        self.cursor = max(self.cursor, key)
