"""Durable delivery: the journal of a run, reading it, and which position is safe to save.

:func:`open_journal` wires one start to the dialect's journal store: which
channels are read from the journal, where reading resumes (a named
consumer's saved position), and the reader.  :class:`Feed` is the intake's
durable side on the listener thread: it reads the journal into the
dispatcher queue, saves the consumer's position, and prunes.

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
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._backfill import DONE, BackfillRequest, relation_of, unwrap
from .._journal import JournalReader
from .._watch import Watch
from ..dialects.base import BackfillStore, Dialect, JournalStore
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyException
from .backfill import Backfill, Job
from .dispatcher import Dispatcher, JournalBatch

__all__ = ["Acks", "Feed", "GapQueue", "Journal", "open_journal"]

#: ``gap(start, end, channels, reason, count)``: times in seconds since the epoch.
GapQueue = Callable[[float, float, tuple[str, ...], str, "int | None"], None]


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
    #: The backfills of this run not yet done.
    backfills: list[Job] = dataclasses.field(default_factory=list)


def open_journal(
    dialect: Dialect,
    watches: Sequence[Watch],
    consumer: str | None,
    log: logging.Logger,
    backfills: Sequence[tuple[Watch, BackfillRequest]] = (),
) -> Journal:
    """Open what the durable watches of one run (or a named consumer) read from.

    ``backfills``: the watches whose tables are backfilled, resumed where a
    named consumer's saved backfill stopped (a finished one is not redone).

    :raises SQLNotifyException: when the journal cannot be opened, or the
        consumer is held by another process.
    :raises SQLNotifyConfigurationError: for a backfill of a watch that is
        not durable, or on a database without backfills.
    """
    durable = [w.channel for w in watches if w.durable]
    store = reader = None
    position: Any = None
    position_time = None
    replays = dialect.capabilities.replays_log
    jobs: list[Job] = []
    for watch, _ in backfills:
        if replays or not dialect.capabilities.durable or not watch.durable:
            raise SQLNotifyConfigurationError(
                f"backfill() of {watch.describe()} needs a durable watch"
                " (watch(..., durable=True)) on PostgreSQL"
            )
        if watch.condition is not None:
            raise SQLNotifyConfigurationError(
                f"backfill() reads every row of the table, and {watch.describe()} has a"
                " where= condition: backfill through a watch of the table without one"
            )
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
            jobs = _backfill_jobs(store, watches, consumer, position, backfills, log)
        except Exception as exc:
            store.close()
            if isinstance(exc, SQLNotifyException):
                raise
            raise SQLNotifyException(f"could not open the journal: {exc}") from exc
    if durable and store is not None:
        reader = JournalReader(position, None, batch_size=5000, log=log, rows=True)
    return Journal(
        durable=durable,
        store=store,
        reader=reader,
        position=position,
        position_time=position_time,
        resume_at=position if replays else None,
        backfills=jobs,
    )


def _backfill_jobs(
    store: JournalStore,
    watches: Sequence[Watch],
    consumer: str | None,
    position: Any,
    backfills: Sequence[tuple[Watch, BackfillRequest]],
    log: logging.Logger,
) -> list[Job]:
    jobs: list[Job] = []
    if not backfills:
        return jobs
    if not isinstance(store, BackfillStore):
        raise SQLNotifyConfigurationError("this database's journal cannot backfill")
    for watch, request in backfills:
        relation = relation_of(watch)
        channels = tuple(w.channel for w in watches if w.durable and relation_of(w) == relation)
        state = store.backfill_load(consumer, watch) if consumer is not None else None
        if state is not None and state.phase == DONE:
            log.debug("backfill of %s: done earlier by consumer %r", relation, consumer)
            continue
        if state is None:
            state = store.backfill_begin(watch, channels, position)
            log.info("backfill of %s: ~%s rows to read", relation, state.total)
        else:
            log.info("backfill of %s resumes after %d rows (%s)", relation, state.rows, state.phase)
        jobs.append(Job(watch, channels, request, state, relation))
    return jobs


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


class Feed:
    """The durable side of the intake (listener thread): journal reads, positions, retention.

    For durable watches a notification is only a wake-up: what is delivered
    is read from the journal (:meth:`sweep`, one read per batch of
    wake-ups), and nothing in a payload can add, skip or suppress an event.
    A named consumer's position is saved every :attr:`SAVE_INTERVAL`
    seconds: always one the journal store handed out and :class:`Acks`
    found safe, never one built here.  Retention passes remove journal rows
    nobody needs and report a gap when this reader fell behind them.

    :param gap: ``gap(start, end, channels, reason, count)`` queues a gap signal.
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
        journal: Journal,
        store: JournalStore,
        *,
        dispatcher: Dispatcher,
        log: logging.Logger,
        consumer: str | None,
        max_queue: int,
        retention: float,
        consumer_expiry: float,
        stopping: threading.Event,
        gap: GapQueue,
    ) -> None:
        self._dispatcher = dispatcher
        self._log = log
        self._reader = reader = journal.reader
        #: The journal store.
        self.store = store
        self._channels = tuple(journal.durable)
        self._consumer = consumer
        self._max_queue = max_queue
        self._retention = retention
        self._consumer_expiry = consumer_expiry
        self._stopping = stopping
        self._gap = gap
        #: A journal read is due: a wake-up came, a read stopped at its
        #: limit or failed, or the listener (re)connected.
        self.pending = reader is not None
        #: Completion of deliveries: the furthest position whose receivers,
        #: async callbacks included, have all finished.
        self.acks = Acks(reader.position if reader is not None else None)
        #: When the dispatcher last reached a position's mark.
        self.acked_at: dt.datetime | None = journal.position_time
        self._saved: Any = self.acked
        self._retention_seen: dt.datetime | None = None
        now = time.monotonic()
        self._last_sweep = 0.0
        self._last_save = now
        self._last_prune = now
        self._sweep_failed = 0.0
        self.prune_passes = 0
        # The last read stopped inside a window (at its row limit).
        self._in_window = False
        #: The backfills of this run (``None``: none, or all done earlier).
        self.backfill: Backfill | None = None
        if journal.backfills and isinstance(store, BackfillStore):
            self.backfill = Backfill(journal.backfills, store, dispatcher, log, store.stamp)
            self.pending = True

    @property
    def acked(self) -> Any:
        """The position a consumer may save now (``None`` before any)."""
        return self.acks.safe

    def connected(self) -> None:
        """The listener (re)connected: check retention and read what is new."""
        if self._reader is not None:
            self.pending = True
            self.check_retention()
            self.sweep()

    def woken(self) -> bool:
        """A wake-up of a durable watch arrived: read the journal; ``True`` if it had events."""
        self.pending = True
        return self.sweep()

    def queue_ack(self, position: Any) -> None:
        """Mark ``position`` done once the dispatcher reaches this point of its queue."""
        self._dispatcher.put_control(lambda p=position: self._ack(p))  # type: ignore[misc]

    def tick(self, now: float) -> float | None:
        """Periodic work: save, read, prune when due; return how soon to run again."""
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
            self.sweep()
        if now - self._last_prune >= self.PRUNE_INTERVAL:
            self._last_prune = now
            self.check_retention()
            if self.prune() >= self.PRUNE_BATCHES * self.PRUNE_BATCH:
                # A backlog: come back in a second rather than a minute.
                self._last_prune = now - self.PRUNE_INTERVAL + 1.0
            self.prune_passes += 1
        return self.SWEEP_INTERVAL if self.pending else None

    def _fetch(self, after: Any, limit: int) -> Sequence[Any]:
        rows = self.store.read(after, self._channels, limit)
        backfill = self.backfill
        if backfill is not None and backfill.streaming:
            return backfill.filter(rows)
        return rows

    def _token(self, position: Any) -> Any:
        backfill = self.backfill
        return position if backfill is None else backfill.mark(position)

    def _pages(self, backfill: Backfill) -> bool:
        """Read backfill pages while the queue has room, for a bounded time."""
        reader = self._reader
        assert reader is not None
        d = self._dispatcher
        deadline = time.monotonic() + backfill.TIME_BUDGET
        found = False
        try:
            while (
                backfill.paging
                and d.depth < self._max_queue
                and not self._stopping.is_set()
                and time.monotonic() < deadline
            ):
                if self._consumer is not None and self.acked != self._saved:
                    # The pages delivered since the last one: a crash redelivers
                    # about one page, not a second's worth.
                    self._save(self.acked)
                backfill.step(reader.position, self.queue_ack)
                found = True
        except Exception as exc:
            if self._last_sweep - self._sweep_failed >= 10.0:
                self._sweep_failed = self._last_sweep
                self._log.warning("could not read a backfill page (will retry): %s", exc)
        return found

    def sweep(self) -> bool:
        """Read the journal into the dispatcher queue while there is room; ``True`` if
        events were read."""
        reader = self._reader
        assert reader is not None
        d = self._dispatcher
        stamp = self.store.stamp
        self._last_sweep = time.monotonic()
        backfill = self.backfill
        found = False
        if backfill is not None and backfill.paging:
            self.pending = True
            found = self._pages(backfill)
            if backfill.paging:
                return found
        # A sweep that continues a window left in parts by an earlier one ends
        # at that window's snapshot, older than the wake-ups that led here:
        # then one more read, from a new snapshot, so that no commit is left
        # waiting for a wake-up that was already spent.
        again = self._in_window
        try:
            stopping = self._stopping
            while self.pending and d.depth < self._max_queue and not stopping.is_set():
                before = reader.position
                room = max(1, self._max_queue - d.depth)
                items = reader.read(self._fetch, min(room, self.SWEEP_ROWS))
                if items:
                    found = True
                    d.put(JournalBatch(items, time.time(), stamp))
                if reader.position != before:
                    self.queue_ack(self._token(reader.position))
                self._in_window = reader.more
                if not reader.more:
                    if again and reader.position != before:
                        again = False
                        continue
                    self.pending = False
                    if backfill is not None and backfill.streaming:
                        backfill.streamed()
                        self.queue_ack(self._token(reader.position))
                    break
        except Exception as exc:
            if self._last_sweep - self._sweep_failed >= 10.0:
                self._sweep_failed = self._last_sweep
                self._log.warning("could not read the journal (will retry): %s", exc)
        return found

    def _ack(self, position: Any) -> None:
        # Dispatcher thread: every event up to ``position`` went through the
        # sync receivers; it is safe once their async callbacks are done too.
        self.acks.mark(position)
        self.acked_at = dt.datetime.now(dt.timezone.utc)

    def _save(self, key: Any) -> None:
        self._last_save = time.monotonic()
        if key is None or self._consumer is None:
            return
        try:
            self.store.save(self._consumer, key)
            self._saved = key
        except Exception as exc:
            self._log.warning("could not save the position of consumer %r: %s", self._consumer, exc)

    def check_retention(self) -> None:
        """Report a gap when rows this reader had not read were removed."""
        reader, store = self._reader, self.store
        if reader is None:
            return
        try:
            pruned_at = store.behind(unwrap(reader.position))
        except Exception as exc:
            self._log.warning("could not read the journal's retention mark: %s", exc)
            return
        if pruned_at is None or pruned_at == self._retention_seen:
            return
        self._retention_seen = pruned_at
        start = self.acked_at or pruned_at
        self._log.warning(
            "%s fell behind the journal's retention: events from %s to %s were removed"
            " before it read them",
            f"consumer {self._consumer!r}" if self._consumer else "this notifier",
            start.isoformat(),
            pruned_at.isoformat(),
        )
        self._gap(start.timestamp(), pruned_at.timestamp(), self._channels, "retention", None)

    def prune(self) -> int:
        """Remove journal rows past retention that no known consumer needs (bounded)."""
        total = 0
        try:
            for _ in range(self.PRUNE_BATCHES):
                n = self.store.prune(self._retention, self._consumer_expiry)
                total += n
                if n < self.PRUNE_BATCH:
                    break
        except Exception as exc:
            self._log.warning("could not prune the journal: %s", exc)
        if total:
            self._log.info("pruned %d journal rows", total)
        return total

    def close(self) -> None:
        """Save the final position and close the store (after the async callbacks drained)."""
        if self._consumer is not None and self.acked != self._saved:
            self._save(self.acked)
        self.store.close()
