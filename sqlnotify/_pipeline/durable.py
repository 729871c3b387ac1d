"""Which consumer position is safe to save: the furthest one whose events are all handled.

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
import threading
from typing import Any

__all__ = ["Acks"]


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
