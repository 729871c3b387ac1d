"""Backfill ("snapshot, then stream"): the data a backfill's reader and its store share.

A backfill delivers the rows a table holds, read in key order in pages, as
:attr:`~sqlnotify.events.Operation.SNAPSHOT` events, then continues with the
durable journal from the consumer's position when the backfill began.  Each
page is read in a transaction of its own, whose snapshot the store uses to
find the journal events that page already showed: those are suppressed
when the journal is read, every later one is delivered.

:class:`BackfillState` is how far one table's backfill got; the store saves
it (with the consumer's journal position, in one transaction) when a
:class:`BackfillMark` is saved as the consumer's position.  The pipeline only
reads the counters and the phase; the rest is the store's.

No SQL and no driver here: the pipeline and the dialects both import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "BackfillMark",
    "BackfillRequest",
    "BackfillState",
    "Page",
    "Progress",
    "relation_of",
    "unwrap",
]

#: ``progress(done, total_estimate)``: rows delivered so far, and the table's
#: estimated row count (``None`` when unknown).
Progress = Callable[[int, "int | None"], None]

#: Pages still to read.
PAGES = "pages"
#: Every page was read: the journal's first window after them is read with suppression.
STREAM = "stream"
#: Finished: nothing left to suppress.
DONE = "done"


@dataclasses.dataclass(frozen=True)
class BackfillRequest:
    """What ``Notifier.backfill()`` asked for one watch."""

    page_size: int = 5000
    progress: Progress | None = None


@dataclasses.dataclass(frozen=True)
class BackfillState:
    """How far one table's backfill got (immutable; each page makes a new one).

    ``start`` is the consumer's journal position when the backfill began (a
    store token); ``after`` the key of the last row read, as text values in
    key order (``None`` before the first page); ``suppress`` the journal ids
    the pages read so far already showed; ``cut`` the journal id of the last
    TRUNCATE of the table a page found (delivered before that page's rows):
    the journal's events before it are obsolete.
    """

    start: Any
    after: tuple[str | None, ...] | None = None
    rows: int = 0
    pages: int = 0
    total: int | None = None
    suppress: frozenset[int] = frozenset()
    phase: str = PAGES
    cut: int = 0

    def to_json(self, position: Callable[[Any], Any]) -> dict[str, Any]:
        """The state as JSON data; ``position`` turns ``start`` into JSON data."""
        return {
            "start": position(self.start),
            "after": None if self.after is None else list(self.after),
            "rows": self.rows,
            "pages": self.pages,
            "total": self.total,
            "suppress": sorted(self.suppress),
            "phase": self.phase,
            "cut": self.cut,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], position: Callable[[Any], Any]) -> BackfillState:
        """The inverse of :meth:`to_json` (``ValueError`` when malformed)."""
        try:
            after = data["after"]
            phase = data["phase"]
            if phase not in (PAGES, STREAM, DONE):
                raise ValueError(f"unknown phase {phase!r}")
            return cls(
                start=position(data["start"]),
                after=None if after is None else tuple(after),
                rows=int(data["rows"]),
                pages=int(data["pages"]),
                total=None if data["total"] is None else int(data["total"]),
                suppress=frozenset(int(i) for i in data["suppress"]),
                phase=phase,
                cut=int(data.get("cut", 0)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a backfill state: {data!r}") from exc


class Page(NamedTuple):
    """One page read: each row's payload, the state after it, and ``before``: journal
    rows ``(position, channel, payload)`` to deliver first (a TRUNCATE the page's
    snapshot shows)."""

    payloads: list[str]
    state: BackfillState
    before: list[tuple[Any, str, str]]


class BackfillMark(NamedTuple):
    """A consumer position that also records backfills: ``(relation, state)`` pairs.

    Handed to :class:`~sqlnotify._pipeline.durable.Acks` like any position;
    the store saves ``position`` as the consumer's and each state with it.
    """

    position: Any
    states: tuple[tuple[str, BackfillState], ...]


def unwrap(token: Any) -> Any:
    """The journal position of ``token`` (a position, or a :class:`BackfillMark`)."""
    return token.position if type(token) is BackfillMark else token


def relation_of(watch: Any) -> str:
    """The name a backfill is filed under: ``schema.table`` of a watch."""
    schema = watch.effective_schema
    return f"{schema}.{watch.table}" if schema else str(watch.table)
