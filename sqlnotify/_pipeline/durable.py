"""Durable delivery: opening the journal of a run, and which position is safe to save.

:func:`open_journal` wires one start to the dialect's journal store: which
channels are read from the journal, where reading resumes (a named
consumer's saved position), and the reader the intake sweeps with.

:class:`Acks` decides which consumer position is safe to save: the furthest
one whose events are all handled.

A durable consumer's position comes from the journal (or SQLite's change
log) one batch at a time, as an opaque token; the dispatcher runs the batch's
sync receivers, then reaches the batch's mark.  Sync receivers are done by
then, but ``async def`` callbacks only were handed to the event loop.  So
every async callback a delivery starts gets a delivery sequence number
(:meth:`Acks.begin`), finished with :meth:`Acks.done` on the loop; a mark
remembers the last number handed out before it, and its token becomes the
safe position once every number up to that one is done.

A callback abandoned at stop (cancelled, or never run) or dropped by a full
queue is never done: the safe position stays before its batch, and the
batch comes again to the same consumer after a restart.  One dropped while
the notifier runs (:meth:`Acks.hold`) keeps the position where it is until
the notifier stops; tracking ends there, so nothing piles up meanwhile.
Tokens are never compared, only kept in delivery order, so any position
type works.

Threads: :meth:`begin` and :meth:`mark` run on the dispatcher thread (the
order of deliveries), :meth:`done` on the loop's thread, :attr:`safe` is read
on the listener's; a lock covers the state they share.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Sequence
from typing import Any

from .._journal import JournalEvent, JournalReader
from .._watch import Watch
from ..dialects.base import Dialect, JournalStore
from ..exceptions import SQLNotifyException

__all__ = ["Acks", "Journal", "open_journal"]


def _journal_event(channel: str, payload: str, position: int, token: Any) -> JournalEvent:
    return JournalEvent(channel, payload, None, position, token)


@dataclasses.dataclass
class Journal:
    """What one run reads durably: see :func:`open_journal`."""

    #: The channels whose events come from the journal (wake-ups only on the wire).
    durable: list[str]
    #: The journal store (``None``: nothing durable, no named consumer).
    store: JournalStore | None = None
    #: The journal's reader (only with durable channels on a notifying database).
    reader: JournalReader | None = None
    #: The position reading starts after.
    position: Any = None
    #: When that position was saved (a named consumer's), else ``None``.
    position_time: dt.datetime | None = None
    #: Where a replayed change log's source resumes (``None``: from its start).
    resume_at: Any = None


def open_journal(
    dialect: Dialect, watches: Sequence[Watch], consumer: str | None, log: logging.Logger
) -> Journal:
    """Open what the durable watches of one run (or a named consumer) read from.

    :raises SQLNotifyException: when the journal cannot be opened, or the
        consumer is held by another process.
    """
    durable = [w.channel for w in watches if w.durable]
    store = reader = None
    position: Any = None
    position_time = None
    replays = dialect.capabilities.replays_log
    if replays:
        # Every watch is read from a change log (SQLite): all are durable,
        # and a named consumer resumes from its saved position.
        durable = []
    if (replays and consumer is not None) or (durable and not replays):
        store = dialect.journal()
        try:
            store.ensure()
            if consumer is not None:
                store.acquire(consumer)
            loaded = store.load(consumer) if consumer else None
            if loaded is not None:
                position, position_time = loaded
            else:
                position = store.start_position()
                if consumer is not None:
                    store.save(consumer, position)
        except Exception as exc:
            store.close()
            if isinstance(exc, SQLNotifyException):
                raise
            raise SQLNotifyException(f"could not open the journal: {exc}") from exc
    if durable and store is not None:
        reader = JournalReader(
            position, None, batch_size=5000, log=log, stamp=store.stamp, make=_journal_event
        )
    return Journal(
        durable=durable,
        store=store,
        reader=reader,
        position=position,
        position_time=position_time,
        resume_at=position if replays else None,
    )


class Acks:
    """Completion of the async callbacks of durable deliveries; see the module docstring.

    :param position: the position already saved (safe from the start).
    """

    __slots__ = ("_finished", "_lock", "_marks", "_next", "_open", "held", "safe")

    def __init__(self, position: Any) -> None:
        self._lock = threading.Lock()
        self._next = 0
        # Numbers handed out and not done, oldest first; those done out of
        # order wait in ``_finished`` until everything before them is.
        self._open: collections.deque[int] = collections.deque()
        self._finished: set[int] = set()
        self._marks: collections.deque[tuple[int, Any]] = collections.deque()
        #: The furthest position whose events' receivers have all finished.
        self.safe: Any = position
        #: A delivery will never finish: :attr:`safe` stays until the notifier stops.
        self.held = False

    def begin(self) -> int:
        """A number for one async callback of the delivery under way (dispatcher thread)."""
        with self._lock:
            if self.held:
                return 0
            self._next = seq = self._next + 1
            self._open.append(seq)
        return seq

    def done(self, seq: int) -> None:
        """The callback numbered ``seq`` finished (returned or raised)."""
        with self._lock:
            opened = self._open
            if self.held:
                return
            if not opened or seq != opened[0]:
                self._finished.add(seq)
                return
            opened.popleft()
            finished = self._finished
            while opened and opened[0] in finished:
                finished.discard(opened.popleft())
            if self._marks:
                self._advance()

    def mark(self, token: Any) -> None:
        """Every event before this point was delivered; ``token`` is the position after them."""
        with self._lock:
            if self.held:
                return
            if not self._open:
                self.safe = token
                self._marks.clear()
            else:
                self._marks.append((self._next, token))

    def hold(self, seq: int) -> None:
        """The callback numbered ``seq`` will never run (dropped): stop tracking here."""
        if not seq:
            return
        with self._lock:
            self.held = True
            self._open.clear()
            self._finished.clear()
            self._marks.clear()

    def _advance(self) -> None:
        marks = self._marks
        oldest = self._open[0] if self._open else None
        while marks and (oldest is None or marks[0][0] < oldest):
            self.safe = marks.popleft()[1]

    @property
    def settled(self) -> bool:
        """``True`` when no async callback of a delivery is unfinished."""
        return not self._open and not self.held

    @property
    def unfinished(self) -> int:
        """How many async callbacks of deliveries are not done."""
        return len(self._open)
