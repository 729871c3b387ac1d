"""The counters a notifier's threads keep, and the lag window of :meth:`Notifier.health`."""

from __future__ import annotations

import threading
from collections.abc import Sequence

__all__ = ["Stats", "percentile"]


class Stats:
    """Counters kept by the notifier's threads.

    Counters written from more than one thread (``receiver_errors``,
    ``async_abandoned``, ``stream_dropped``, ``async_dropped``: the
    dispatcher and an event loop) are updated under ``lock``; the others
    have a single writer.
    """

    #: Every counter, in the order :meth:`snapshot` lists them.
    COUNTERS = (
        "received",
        "dispatched",
        "dropped",
        "receiver_errors",
        "reconnects",
        "truncated",
        "gaps",
        "overflowed",
        "duplicates",
        "overflow_fetched",
        "hydrated",
        "async_abandoned",
        "stream_dropped",
        "async_dropped",
    )
    __slots__ = ("lock", *COUNTERS)

    received: int
    dispatched: int
    dropped: int
    receiver_errors: int
    reconnects: int
    truncated: int
    gaps: int
    overflowed: int
    duplicates: int
    overflow_fetched: int
    hydrated: int
    async_abandoned: int
    stream_dropped: int
    async_dropped: int

    def __init__(self) -> None:
        self.lock = threading.Lock()
        for name in self.COUNTERS:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        """Every counter's current value."""
        return {name: getattr(self, name) for name in self.COUNTERS}


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of values sorted ascending."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
