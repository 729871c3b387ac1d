"""Between the listener's source and the dispatcher queue (the listener thread's logic).

The :class:`Intake` bounds the queue, sends ``gap`` signals after
reconnects and overflows, and drives the journal of durable watches.  For
those a notification is only a wake-up: what is delivered is read from the
journal (one read per batch of wake-ups), and nothing in a payload can add,
skip or suppress an event.  It also saves the consumer's position: always
one the journal store handed out, never one built here.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import signals
from .._journal import JournalReader, JournalStore
from .._payload import RawNotification
from ..dialects.base import Source
from .delivery import send_isolated
from .dispatcher import Dispatcher
from .durable import Acks
from .stats import Stats

__all__ = ["Batch", "GapSender", "Intake"]

GapSender = Callable[[dt.datetime, dt.datetime, tuple[str, ...], str, "int | None"], None]
#: ``drop(channel, reason, payload)``: count, log and signal a dropped notification.
Dropper = Callable[[str, str, "str | None"], None]


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


class Batch(list[Any]):
    """A list of notifications with the wall-clock time the listener received them."""

    __slots__ = ("received_at",)

    def __init__(self, items: Sequence[Any] = (), received_at: float = 0.0) -> None:
        super().__init__(items)
        self.received_at = received_at


class Intake:
    """The listener thread's side of delivery; see the module docstring.

    ``max_queue`` bounds the notifications queued for the dispatcher.  When
    the queue is full, the journal of durable watches is read no further
    until there is room, and notifications of other watches wait up to
    ``queue_timeout`` seconds for room, then are dropped (counted, logged,
    and reported by one ``gap`` signal per overflow episode).
    """

    #: Seconds between journal reads while something is pending.
    SWEEP_INTERVAL = 0.2
    #: Rows handed to the dispatcher at a time while catching up, so that it
    #: works on one part while the next is read.
    SWEEP_ROWS = 5000
    #: Seconds between saves of a consumer's position (and heartbeat bound).
    SAVE_INTERVAL = 1.0
    HEARTBEAT_INTERVAL = 60.0
    #: Seconds between retention passes (each removes a bounded batch).
    PRUNE_INTERVAL = 60.0
    PRUNE_BATCHES = 10
    PRUNE_BATCH = 1000

    def __init__(
        self,
        *,
        sender: Any,
        dispatcher: Dispatcher,
        stats: Stats,
        log: logging.Logger,
        send_gap: GapSender,
        channels: Sequence[str],
        durable_channels: Sequence[str],
        replays_log: bool,
        reader: JournalReader | None,
        store: JournalStore | None,
        consumer: str | None,
        position_time: dt.datetime | None,
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
        self._durable = frozenset(durable_channels)
        self._replays = replays_log
        self._channels = tuple(channels)
        # Channels whose events a disconnect loses (a replayed log loses none).
        self._plain = () if replays_log else tuple(c for c in channels if c not in self._durable)
        self._reader = reader
        #: A journal read is due: a wake-up came, a read stopped at its
        #: limit or failed, or the listener (re)connected.
        self.pending = reader is not None
        self._store = store
        #: The journal store of durable watches (``None`` without them).
        self.store = store
        self._read_channels = tuple(durable_channels)
        self._consumer = consumer
        self._max_queue = max_queue
        self._queue_timeout = queue_timeout
        self._retention = retention
        self._consumer_expiry = consumer_expiry
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
        #: Completion of deliveries: the furthest position whose receivers,
        #: async callbacks included, have all finished (see :mod:`.durable`).
        self.acks: Acks | None = (
            Acks(reader.position if reader is not None else None) if store is not None else None
        )
        self._acked_at: dt.datetime | None = position_time
        self._saved: Any = self.acked
        self._retention_seen: dt.datetime | None = None
        now = time.monotonic()
        self._last_sweep = 0.0
        self._last_save = now
        self._last_prune = now
        self._sweep_failed = 0.0
        self.prune_passes = 0

    @property
    def acked(self) -> Any:
        """The position a consumer may save now (``None`` before any)."""
        acks = self.acks
        return acks.safe if acks is not None else None

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
        if self._reader is not None:
            self.pending = True
            self._check_retention()
            self._sweep()

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
            if self._consumer is not None and reader is not None:
                position = reader.position
                d.put_control(lambda p=position: self._ack(p))  # type: ignore[misc]
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
        if woken:
            self.pending = True
            self._sweep()

    def tick(self) -> float | None:
        """Periodic work on the listener thread; return how soon to run again."""
        now = time.monotonic()
        if self._overflow_start is not None and self._dispatcher.depth < self._max_queue:
            self._overflow_over()
        if self._consumer is not None:
            acked = self.acked
            due = now - self._last_save >= (
                self.SAVE_INTERVAL if acked != self._saved else self.HEARTBEAT_INTERVAL
            )
            if due:
                self._save(acked)
        if self._reader is None:
            return None
        if self.pending and now - self._last_sweep >= self.SWEEP_INTERVAL:
            self._sweep()
        if now - self._last_prune >= self.PRUNE_INTERVAL:
            self._last_prune = now
            self._check_retention()
            if self.prune() >= self.PRUNE_BATCHES * self.PRUNE_BATCH:
                # A backlog: come back in a second rather than a minute.
                self._last_prune = now - self.PRUNE_INTERVAL + 1.0
            self.prune_passes += 1
        return self.SWEEP_INTERVAL if self.pending else None

    # -- durable --------------------------------------------------------------
    def _foreign(self, items: Sequence[RawNotification]) -> None:
        # Dispatcher thread.
        assert self._drop is not None
        for n in items:
            self._drop(
                n.channel,
                "not a wake-up of a durable watch (its events come from the journal only)",
                n.payload,
            )

    def _fetch(self, after: Any, limit: int) -> Sequence[Any]:
        store = self._store
        assert store is not None
        return store.read(after, self._read_channels, limit)

    def _sweep(self) -> None:
        reader = self._reader
        assert reader is not None
        d = self._dispatcher
        self._last_sweep = time.monotonic()
        try:
            stopping = self.stopping
            while self.pending and d.depth < self._max_queue and not stopping.is_set():
                before = reader.position
                room = max(1, self._max_queue - d.depth)
                items = reader.read(self._fetch, min(room, self.SWEEP_ROWS))
                if items:
                    d.put(Batch(items, time.time()))
                if reader.position != before:
                    position = reader.position
                    d.put_control(lambda p=position: self._ack(p))  # type: ignore[misc]
                if not reader.more:
                    self.pending = False
                    break
        except Exception as exc:
            if self._last_sweep - self._sweep_failed >= 10.0:
                self._sweep_failed = self._last_sweep
                self._log.warning("could not read the journal (will retry): %s", exc)

    def _ack(self, position: Any) -> None:
        # Dispatcher thread: every event up to ``position`` went through the
        # sync receivers; it is safe once their async callbacks are done too.
        if self.acks is not None:
            self.acks.mark(position)
        self._acked_at = dt.datetime.now(dt.timezone.utc)

    def _save(self, key: Any) -> None:
        self._last_save = time.monotonic()
        if key is None or self._store is None or self._consumer is None:
            return
        try:
            self._store.save(self._consumer, key)
            self._saved = key
        except Exception as exc:
            self._log.warning("could not save the position of consumer %r: %s", self._consumer, exc)

    def _check_retention(self) -> None:
        reader, store = self._reader, self._store
        if reader is None or store is None:
            return
        try:
            pruned_at = store.behind(reader.position)
        except Exception as exc:
            self._log.warning("could not read the journal's retention mark: %s", exc)
            return
        if pruned_at is None or pruned_at == self._retention_seen:
            return
        self._retention_seen = pruned_at
        start = self._acked_at or pruned_at
        self._log.warning(
            "%s fell behind the journal's retention: events from %s to %s were removed"
            " before it read them",
            f"consumer {self._consumer!r}" if self._consumer else "this notifier",
            start.isoformat(),
            pruned_at.isoformat(),
        )
        self._gap(start.timestamp(), pruned_at.timestamp(), tuple(self._durable), "retention", None)

    def prune(self) -> int:
        """Remove journal rows past retention that no known consumer needs (bounded)."""
        if self._store is None:
            return 0
        total = 0
        try:
            for _ in range(self.PRUNE_BATCHES):
                n = self._store.prune(self._retention, self._consumer_expiry)
                total += n
                if n < self.PRUNE_BATCH:
                    break
        except Exception as exc:
            self._log.warning("could not prune the journal: %s", exc)
        if total:
            self._log.info("pruned %d journal rows", total)
        return total

    def close(self, drained: bool) -> None:
        """Save the final position; ``drained``: the dispatcher ran everything queued.

        Call it once the async callbacks were drained: the saved position
        never passes an event one of them did not finish.
        """
        if self._consumer is not None and self.acked != self._saved:
            self._save(self.acked)
        if self._store is not None:
            self._store.close()

    def _log_gap(self, first: int, last: int) -> None:
        # A replayed log lost rows before this reader saw them (retention).
        now = time.time()
        start = self._acked_at.timestamp() if self._acked_at is not None else now
        self._gap(min(start, now), now, self._channels, "retention", last - first + 1)

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
