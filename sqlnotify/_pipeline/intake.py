"""Between the listener's source and the dispatcher queue (the listener thread's logic).

The :class:`Intake` bounds the queue, signals the listener's connects and
disconnects, sends ``gap`` signals after reconnects and overflows, and
hands the wake-ups of durable watches to its :class:`~.durable.Feed`, which
reads their events from the journal.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import signals
from .._journal import JournalReader
from .._payload import RawNotification
from ..dialects.base import Source
from .dispatcher import Batch, Dispatcher
from .durable import Acks, Feed, Journal
from .route import send_isolated
from .stats import Stats

__all__ = ["GapSender", "Intake"]

GapSender = Callable[[dt.datetime, dt.datetime, tuple[str, ...], str, "int | None"], None]
#: ``drop(channel, reason, payload)``: count, log and signal a dropped notification.
Dropper = Callable[[str, str, "str | None"], None]


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


class Intake:
    """The listener thread's side of delivery; see the module docstring.

    ``max_queue`` bounds the notifications queued for the dispatcher.  When
    the queue is full, the journal of durable watches is read no further
    until there is room, and notifications of other watches wait up to
    ``queue_timeout`` seconds for room, then are dropped (counted, logged,
    and reported by one ``gap`` signal per overflow episode).
    """

    def __init__(
        self,
        *,
        sender: Any,
        dispatcher: Dispatcher,
        stats: Stats,
        log: logging.Logger,
        send_gap: GapSender,
        channels: Sequence[str],
        journal: Journal,
        replays_log: bool,
        consumer: str | None,
        max_queue: int,
        queue_timeout: float,
        retention: float,
        consumer_expiry: float,
        wake_payload: str | None = None,
        drop: Dropper | None = None,
    ) -> None:
        self._sender = sender
        self._dispatcher = dispatcher
        self._stats = stats
        self._log = log
        self._send_gap = send_gap
        self._durable = frozenset(journal.durable)
        self._replays = replays_log
        self._channels = tuple(channels)
        # Channels whose events a disconnect loses (a replayed log loses none).
        self._plain = () if replays_log else tuple(c for c in channels if c not in self._durable)
        self._consumer = consumer
        self._max_queue = max_queue
        self._queue_timeout = queue_timeout
        self._wake_payload = wake_payload
        self._drop = drop
        self.connected = False
        self.since = dt.datetime.now(dt.timezone.utc)
        self.source: Source | None = None
        self._lost_at: float | None = None
        self._log_reader: JournalReader | None = None
        #: Set when the notifier stops: a full queue no longer holds the listener.
        self.stopping = threading.Event()
        self._overflow_start: float | None = None
        self._overflow_count = 0
        self._overflow_channels: set[str] = set()
        store = journal.store
        #: The durable side: journal reads, positions, retention (``None``
        #: without durable watches or a named consumer).
        self.feed: Feed | None = (
            Feed(
                journal,
                store,
                dispatcher=dispatcher,
                log=log,
                consumer=consumer,
                max_queue=max_queue,
                retention=retention,
                consumer_expiry=consumer_expiry,
                stopping=self.stopping,
                gap=self._gap,
            )
            if store is not None
            else None
        )

    @property
    def acks(self) -> Acks | None:
        """Completion of the deliveries of a durable run (see :class:`.durable.Acks`)."""
        feed = self.feed
        return feed.acks if feed is not None else None

    # -- listener callbacks ---------------------------------------------------
    def on_connected(self, reconnect: bool, source: Source) -> None:
        """The listener connected (listener thread): signal it, report a gap, sweep."""
        if reconnect:
            self._stats.reconnects += 1
            self._log.info("listener reconnected")
        send_isolated(signals.listener_connected, self._sender, self._log, reconnect=reconnect)
        now = time.time()
        self.connected = True
        self.since = _utc(now)
        self.source = source
        if reconnect and self._plain:
            start = self._lost_at if self._lost_at is not None else now
            self._gap(start, now, self._plain, "disconnected", None)
        log_reader = source.reader
        if self._replays and isinstance(log_reader, JournalReader):
            self._log_reader = log_reader
            if log_reader.on_gap is None:
                log_reader.on_gap = self._log_gap
        if self.feed is not None:
            self.feed.connected()

    def on_disconnected(self, error: BaseException) -> None:
        """The listener lost its connection (listener thread)."""
        now = time.time()
        self.connected = False
        self.since = _utc(now)
        source = self.source
        alive = source.last_alive if source is not None else None
        self._lost_at = alive if alive is not None else now
        send_isolated(signals.listener_disconnected, self._sender, self._log, error=error)

    def push(self, items: Sequence[RawNotification]) -> None:
        """Queue what the source returned (listener thread)."""
        received_at = time.time()
        d = self._dispatcher
        durable = self._durable
        full = d.depth >= self._max_queue
        if self._replays:
            # The log keeps everything: wait for room rather than drop.
            while full and not self.stopping.is_set():
                full = not d.wait_room(self._max_queue, 0.5)
            d.put(Batch(items, received_at))
            reader = self._log_reader
            if self._consumer is not None and reader is not None and self.feed is not None:
                self.feed.queue_ack(reader.position)
            return
        if not durable:
            if full and not d.wait_room(self._max_queue, self._queue_timeout):
                self._overflowed(items)
                return
            self._overflow_over()
            d.put(Batch(items, received_at))
            return
        if full and any(n.channel not in durable for n in items):
            full = not d.wait_room(self._max_queue, self._queue_timeout)
        out = Batch((), received_at)
        dropped: list[RawNotification] = []
        woken = False
        foreign: list[RawNotification] = []
        for n in items:
            if n.channel in durable:
                # Whatever it says, it only wakes the reader: the journal is the truth.
                woken = True
                if n.payload != self._wake_payload:
                    foreign.append(n)
            elif full:
                dropped.append(n)
            else:
                out.append(n)
        if dropped:
            self._overflowed(dropped)
        elif not full:
            self._overflow_over()
        if out:
            d.put(out)
        if foreign and self._drop is not None:
            d.put_control(lambda: self._foreign(foreign))
        if woken and self.feed is not None:
            found = self.feed.woken()
            source = self.source
            if source is not None:
                source.checked(found)

    def tick(self) -> float | None:
        """Periodic work on the listener thread; return how soon to run again."""
        now = time.monotonic()
        if self._overflow_start is not None and self._dispatcher.depth < self._max_queue:
            self._overflow_over()
        feed = self.feed
        return feed.tick(now) if feed is not None else None

    def _foreign(self, items: Sequence[RawNotification]) -> None:
        # Dispatcher thread.
        assert self._drop is not None
        for n in items:
            self._drop(
                n.channel,
                "not a wake-up of a durable watch (its events come from the journal only)",
                n.payload,
            )

    def close(self, drained: bool) -> None:
        """Save the final position; ``drained``: the dispatcher ran everything queued.

        Call it once the async callbacks were drained: the saved position
        never passes an event one of them did not finish.
        """
        if self.feed is not None:
            self.feed.close()

    def _log_gap(self, first: int, last: int) -> None:
        # A replayed log lost rows before this reader saw them (retention).
        now = time.time()
        acked_at = self.feed.acked_at if self.feed is not None else None
        start = acked_at.timestamp() if acked_at is not None else now
        # ``last < first``: the log lost events it cannot count (a purged binlog).
        count = last - first + 1 if last >= first else None
        self._gap(min(start, now), now, self._channels, "retention", count)

    # -- gaps -----------------------------------------------------------------
    def _gap(
        self, start: float, end: float, channels: tuple[str, ...], reason: str, count: int | None
    ) -> None:
        self._stats.gaps += 1
        s, e = _utc(start), _utc(end)
        self._dispatcher.put_control(lambda: self._send_gap(s, e, channels, reason, count))

    def _overflowed(self, items: Sequence[RawNotification]) -> None:
        if self._overflow_start is None:
            self._overflow_start = time.time()
            self._log.warning(
                "the event queue is full (%d events): dropping notifications of non-durable"
                " watches until the receivers catch up",
                self._max_queue,
            )
        self._overflow_count += len(items)
        self._stats.overflowed += len(items)
        self._overflow_channels.update(n.channel for n in items)

    def _overflow_over(self) -> None:
        start = self._overflow_start
        if start is None:
            return
        count = self._overflow_count
        channels = tuple(sorted(self._overflow_channels))
        self._overflow_start = None
        self._overflow_count = 0
        self._overflow_channels = set()
        self._log.warning("the event queue has room again; %d notifications were dropped", count)
        self._gap(start, time.time(), channels, "overflow", count)
