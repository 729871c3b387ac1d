"""Where a reader is in the MySQL change log, although ids are not commit order.

``AUTO_INCREMENT`` hands out ids when rows are inserted, not when their
transactions commit: id 7 may become visible after id 8, or never (rolled
back).  A reader that only remembered "everything up to 8" would skip a
late 7 for good.  A :class:`LogPosition` therefore remembers, below its
``high`` mark, the *pending* ranges: ids it has not seen, each with the
time (the reader's clock) it first noticed the hole.

Which holes are final?  The statement that took an id inserts the id's
row at once, and an uncommitted row is locked by its transaction until it
commits or rolls back.  So once a hole is a moment old, a locking read of
it with ``NOWAIT`` tells: it fails at once while a writer still holds one
of its ids; when it succeeds, every id of the hole was committed (the next
read returns it) or rolled back (it never appears), and the reader drops
the hole after that read (:mod:`.source`).  The reader never skips a late
commit, and pays for it only while holes are pending.

This module holds no SQL: :class:`LogPosition` is plain data, saved as
JSON for named consumers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["LogPosition", "Pending"]

#: ``(first, last, seen_at)``: ids not yet seen and when the hole was noticed.
Pending = tuple[int, int, float]


@dataclasses.dataclass(frozen=True)
class LogPosition:
    """Everything up to ``high`` was read, except the ``pending`` ranges.

    ``last`` is the id of the row this position was made for (the number
    an event carries as ``event.position``).
    """

    high: int
    pending: tuple[Pending, ...] = ()
    last: int = 0

    @property
    def low(self) -> int:
        """Every id up to this one was read or is final (pruning may remove up to it)."""
        return self.pending[0][0] - 1 if self.pending else self.high

    def after(self, row_id: int, seen_at: float) -> LogPosition:
        """The position once row ``row_id`` was read (its holes noticed at ``seen_at``)."""
        if row_id > self.high:
            pending = self.pending
            if row_id > self.high + 1:
                pending = (*pending, (self.high + 1, row_id - 1, seen_at))
            return LogPosition(row_id, pending, row_id)
        out: list[Pending] = []
        for first, last, at in self.pending:
            if first <= row_id <= last:
                if first < row_id:
                    out.append((first, row_id - 1, at))
                if row_id < last:
                    out.append((row_id + 1, last, at))
            else:
                out.append((first, last, at))
        return LogPosition(self.high, tuple(out), row_id)

    def settle(self, before: float) -> LogPosition:
        """Without the holes noticed before ``before`` (their transactions are all over)."""
        kept = tuple(p for p in self.pending if p[2] >= before)
        return self if len(kept) == len(self.pending) else LogPosition(self.high, kept, self.last)

    def trim(self, most: int) -> tuple[LogPosition, int]:
        """At most ``most`` pending ranges (the oldest dropped); and how many were dropped."""
        extra = len(self.pending) - most
        if extra <= 0:
            return self, 0
        return LogPosition(self.high, self.pending[extra:], self.last), extra

    def params(self) -> list[Any]:
        """The fetch's parameters before its limit: ``high``, then each pending range."""
        out: list[Any] = [self.high]
        for first, last, _ in self.pending:
            out += [first, last]
        return out

    def dumps(self) -> str:
        return json.dumps({"high": self.high, "pending": [list(p) for p in self.pending]})

    @classmethod
    def loads(cls, text: str) -> LogPosition:
        data = json.loads(text)
        pending: Sequence[Sequence[Any]] = data.get("pending", ())
        return cls(
            int(data["high"]),
            tuple((int(a), int(b), float(t)) for a, b, t in pending),
            int(data["high"]),
        )
