"""The relay: the journal of durable watches, appended to one Redis stream per watch.

One process reads the database; any number of notifiers on other machines
read Redis (:class:`~sqlnotify.dialects.redis.RedisStreams`).  Start one
relay per database and stream set on two or more machines: one is active
(it holds the relay's consumer lock, a PostgreSQL advisory lock taken by
its listening session), the others stand by and take over within
:attr:`Relay.standby_interval` seconds of the active one's death.

Each journal batch is appended in one pipeline (``XADD`` with ``MAXLEN ~
retention``).  The relay's position is saved as its consumer position in the
database every :attr:`Relay.save_interval` seconds, after :attr:`Relay.batch`
appended events, when it stops, and when Redis fails: not after every batch,
which would cost each event behind it a commit.  Each entry carries the
event's journal position number: a relay taking over, which resumes from the
saved position, skips the events the streams' last ``2 * batch`` entries
already hold (at most that many appended events are unsaved), so no event is
written twice.

While active, the relay holds one PostgreSQL session: the listening one,
which holds the relay's lock, wakes it, and also serves its journal reads
and saves (:meth:`~sqlnotify.dialects.base.Dialect.journal_on`).  Journal
rows that retention removed before the relay read them become a gap entry
in every stream, which each consumer group signals as a ``"retention"`` gap.

A second thread per relay process (``sqlnotify-relay-health``, active or
standing by) measures the relay's lag every :attr:`Relay.publish_interval`
seconds from the database, on a connection of its own, opened only while
needed: while the active relay keeps up, its lag is 0 without a query and the
thread holds no connection.  The lag is the events of the relayed watches
committed after the relay's saved position (what is in the journal and not
yet in the streams), counted up to :attr:`Relay.lag_probe` rows, and the age
of the oldest of them.  It then publishes :meth:`Relay.health` to Redis for
``sqlnotify status --redis``.  Neither waits for the relay's thread, so a
relay blocked on Redis still shows its lag growing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from ._journal import JournalReader
from ._payload import OVF, TS
from ._relay_health import HealthMonitor
from ._watch import Watch
from .dialects.base import JournalStore, OverflowStore, Source
from .dialects.redis.commands import (
    BELL_INFIX,
    BELL_TTL_MS,
    DEFAULT_PREFIX,
    FIELD_PAYLOAD,
    FIELD_POSITION,
    RELAY_LOCK_PREFIX,
    RING_SCRIPT,
    entry_id,
    entry_number,
    gap_fields,
    health_key,
    stream_key,
)
from .exceptions import SQLNotifyConfigurationError, SQLNotifyException
from .notifier import Notifier

__all__ = ["Relay"]


def _row(channel: str, payload: str, stamped: int, token: Any) -> tuple[str, str, int]:
    return channel, payload, stamped


class Relay:
    """Append the events of a notifier's durable watches to Redis Streams.

    :param notifier: a notifier declaring the durable watches to relay (it
        is used for its configuration and triggers, never started).
    :param redis_url: where the streams live (``redis://host:port/db``).
    :param name: the relay's name: relays of one name elect one active
        among them; its position is saved in the database as consumer
        ``relay:<name>``.
    :param retention: entries kept per stream (``XADD MAXLEN ~``); a
        consumer group further behind than that is told by a ``gap`` signal.
    :param batch: most journal rows appended in one transaction.
    :param at_most_once: relay the live events of plain (not durable)
        watches instead, as their notifications arrive: no journal, so an
        event committed while no relay is active (between the active one's
        death and a standby's takeover, or while Redis does not answer) is
        never relayed, and one whose append failed is dropped (counted in
        ``health()["dropped"]``).  Refused with durable watches (their
        guarantee would be lost); without it, plain watches are refused.

    :meth:`run` blocks the calling thread; :meth:`start` runs it on a thread
    of its own (``sqlnotify-relay``) and :meth:`stop` ends it.
    """

    #: Seconds between two tries of a standby to become active.
    standby_interval = 1.0
    #: Most seconds the active relay waits for a wake-up before reading anyway.
    idle_wait = 0.5
    #: Seconds between two publications of :meth:`health` to Redis (for
    #: ``sqlnotify status --redis``); each expires after ten times that.
    publish_interval = 1.0
    #: Most seconds between two saves of the relay's position while it appends
    #: (also saved after ``batch`` appended events, and when idle).
    save_interval = 0.2
    #: Seconds between two checks that retention removed no journal row the
    #: relay had not read (also checked when it becomes active).
    retention_check = 60.0
    #: Most journal rows one lag measurement reads (``lag_events`` stops there,
    #: with ``lag_capped`` true).
    lag_probe = 10_000

    def __init__(
        self,
        notifier: Notifier,
        redis_url: str,
        *,
        name: str = "default",
        stream_prefix: str = DEFAULT_PREFIX,
        retention: int = 1_000_000,
        batch: int = 1000,
        at_most_once: bool = False,
        log: logging.Logger | None = None,
    ) -> None:
        self.notifier = notifier
        self.name = name
        self.prefix = stream_prefix
        self.retention = int(retention)
        self.batch = int(batch)
        self.at_most_once = bool(at_most_once)
        self.log = log or logging.getLogger("sqlnotify.relay")
        self.client: redis.Redis = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=5.0
        )
        self.consumer = RELAY_LOCK_PREFIX + name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: list[Watch] = []
        self._numbers: dict[str, int] = {}
        #: ``True`` while this relay is the active one.
        self.active = False
        #: Entries appended by this relay.
        self.written = 0
        #: Events skipped on takeover (already in the streams).
        self.skipped = 0
        #: Live events dropped (``at_most_once``: their append failed).
        self.dropped = 0
        #: How many times this relay became active.
        self.takeovers = 0
        #: Gaps of the journal carried into the streams (rows pruned unread).
        self.gaps = 0
        self._gap_seen: Any = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._lag_events = 0
        self._lag_capped = False
        self._oldest: float | None = None
        self._measured_at: float | None = None
        # When the active relay's last read found nothing more waiting (monotonic).
        self._caught_up_at: float | None = None
        self._monitor: HealthMonitor | None = None
        self._health_key = health_key(stream_prefix, name, f"{socket.gethostname()}:{os.getpid()}")

    # -- control ----------------------------------------------------------------
    def start(self) -> None:
        """Install the triggers (:meth:`prepare`), then relay on a thread of its own until
        :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.prepare()
        self._stop.clear()
        self._start_monitor()
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="sqlnotify-relay", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the relay thread, waiting at most ``timeout`` seconds for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                self.log.warning("the relay thread did not stop within %.1f s", timeout)
        self._stop_monitor(timeout)

    def _start_monitor(self) -> None:
        if self._monitor is None or not self._monitor.is_alive:
            self._monitor = HealthMonitor(self)
            self._monitor.start_thread()

    def _stop_monitor(self, timeout: float) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.stopping.set()
            monitor.join(timeout)

    def health(self) -> dict[str, Any]:
        """The relay's state: active or standing by, entries written, lag, last error.

        Any thread may call it.  The lag is the last measurement of the
        health thread (every :attr:`publish_interval` seconds, while
        :meth:`start` or :meth:`run` runs):

        ``lag_events``: events of the relayed watches committed in the
        journal after the relay's saved position, not yet in the streams
        (at most :attr:`lag_probe`; ``lag_capped`` says there are more);
        ``lag_seconds``: now minus the time the oldest of them was written
        (its trigger's clock, ``ts``), 0 when none waits;
        ``lag_measured_at``: when the lag was measured (``None``: not yet).
        """
        lag_s = 0.0
        if self._lag_events and self._oldest is not None:
            lag_s = max(0.0, time.time() - self._oldest)
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "active": self.active,
            "written": self.written,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "at_most_once": self.at_most_once,
            "takeovers": self.takeovers,
            "gaps": self.gaps,
            "lag_events": self._lag_events,
            "lag_capped": self._lag_capped,
            "lag_seconds": lag_s,
            "lag_measured_at": self._measured_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "streams": [stream_key(self.prefix, w.channel) for w in self._watches],
        }

    def keeping_up(self) -> bool:
        """``True`` while the active relay appended everything it found within the
        last two :attr:`publish_interval` (its lag is then 0 without a query)."""
        at = self._caught_up_at
        recent = at is not None and time.monotonic() - at < 2 * self.publish_interval
        return self.active and not self.at_most_once and recent

    def measure(self, store: JournalStore) -> None:
        """Measure the lag from the journal through ``store`` (the health thread's)."""
        if self.keeping_up():
            self._lag_events, self._lag_capped, self._oldest = 0, False, None
            self._measured_at = time.time()
            store.close()  # no connection held while nothing lags
            return
        loaded = store.load(self.consumer)
        channels = [w.channel for w in self._watches]
        if loaded is None or not channels or self.at_most_once:
            events: list[str] = []
            capped = False
        else:
            rows = store.read(loaded[0], channels, self.lag_probe)
            events = [p for _, c, p in rows if p is not None and c in channels]
            capped = len(events) >= self.lag_probe
        oldest: float | None = None
        if events:
            try:
                stamp = json.loads(events[0]).get(TS)
                oldest = float(stamp) if stamp is not None else None
            except (ValueError, TypeError, AttributeError):
                oldest = None
            if oldest is None:  # no clock in the payload: counted from now on
                same = self._oldest is not None and self._lag_events > 0
                oldest = self._oldest if same else time.time()
        self._lag_events, self._lag_capped, self._oldest = len(events), capped, oldest
        self._measured_at = time.time()

    # -- the loop -----------------------------------------------------------------
    def prepare(self) -> None:
        """Install the watches' triggers, check that every watch is durable, and
        record the relay's first position (where it never ran).

        :meth:`start` and :meth:`run` call it first, so a configuration
        error is raised to their caller.
        """
        states = self.notifier.install()
        watches = [s.watch for s in states]
        if self.at_most_once:
            durable = [w.describe() for w in watches if w.durable]
            if durable:
                raise SQLNotifyConfigurationError(
                    "at_most_once relays plain watches only (a durable watch's events would"
                    " lose their guarantee; relay them without at_most_once): " + ", ".join(durable)
                )
        plain = [w.describe() for w in watches if not w.durable]
        if plain and not self.at_most_once:
            raise SQLNotifyConfigurationError(
                "the relay reads durable watches only (watch(..., durable=True)), or plain"
                " watches with Relay(..., at_most_once=True): " + ", ".join(plain)
            )
        self._watches = watches
        # A relay's first position is the journal's end when its triggers
        # were installed: what is written before it first becomes active is
        # relayed too.
        store = self.notifier.dialect.journal()
        try:
            store.ensure()
            if store.load(self.consumer) is None:
                store.save(self.consumer, store.start_position())
        finally:
            store.close()

    def run(self, stop: threading.Event | None = None) -> None:
        """Stand by, relay while active, stand by again when the lock is lost (blocks)."""
        self.prepare()
        self._start_monitor()
        try:
            self._loop(stop or self._stop)
        finally:
            self._stop_monitor(10.0)

    def _loop(self, stop: threading.Event) -> None:
        watches = self._watches
        dialect = self.notifier.dialect
        channels = [w.channel for w in watches]
        store = dialect.journal()
        wake_r, wake_w = os.pipe()
        try:
            store.ensure()
            store.close()  # standing by holds no journal connection
            while not stop.is_set():
                source = self._elect(store, channels, stop)
                if source is None:
                    continue
                # The journal is read on the listening session: one backend.
                journal = dialect.journal_on(source)
                try:
                    if self.at_most_once:
                        self._relay_live(source, channels, stop, wake_r)
                    else:
                        self._relay(journal, source, channels, stop, wake_r)
                except Exception as exc:
                    # SourceDisconnected, driver errors of the journal reads
                    # (on the listening session), Redis errors: stand by again.
                    self._error(f"{type(exc).__name__}: {exc}")
                    stop.wait(self.standby_interval)
                finally:
                    self.active = False
                    self._caught_up_at = None
                    journal.close()
                    source.close()
                    store.close()
        finally:
            store.close()
            os.close(wake_r)
            os.close(wake_w)
            self.client.close()

    def publish(self) -> None:
        """Write :meth:`health` to Redis, expiring (the health thread's)."""
        try:
            self.client.set(
                self._health_key,
                json.dumps(self.health(), default=str),
                ex=max(1, int(self.publish_interval * 10)),
            )
        except redis.RedisError as exc:
            self._error(f"could not publish the relay's health: {exc}")

    def _error(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = time.time()
        self.log.warning("relay %r: %s", self.name, text)

    def _elect(
        self, store: JournalStore, channels: Sequence[str], stop: threading.Event
    ) -> Source | None:
        try:
            store.acquire(self.consumer)
            source = self.notifier.dialect.open_source(channels, stop=stop)
        except SQLNotifyException as exc:
            if "already active" not in str(exc):
                self._error(str(exc))
            stop.wait(self.standby_interval)
            return None
        self.active = True
        self.takeovers += 1
        self.log.info("relay %r is active", self.name)
        return source

    def _tails(self, channels: Sequence[str]) -> tuple[dict[str, int], dict[str, set[int]]]:
        # The last entry number of each stream, and the journal numbers of
        # its last entries (those a takeover may read again).
        numbers: dict[str, int] = {}
        recent: dict[str, set[int]] = {}
        for channel in channels:
            key = stream_key(self.prefix, channel)
            # Up to ``2 * batch`` appended events were not saved (see _relay).
            entries: Any = self.client.xrevrange(key, "+", "-", count=2 * self.batch)
            numbers[channel] = entry_number(entries[0][0]) if entries else 0
            recent[channel] = {int(f[FIELD_POSITION]) for _, f in entries} - {0}
        return numbers, recent

    def _relay(
        self,
        store: JournalStore,
        source: Source,
        channels: Sequence[str],
        stop: threading.Event,
        wake_fd: int,
    ) -> None:
        loaded = store.load(self.consumer)
        if loaded is not None:
            position = loaded[0]
        else:
            position = store.start_position()
            store.save(self.consumer, position)
        reader = JournalReader(
            position, channels, stamp=store.stamp, make=_row, batch_size=self.batch
        )
        numbers, recent = self._tails(channels)
        for channel, n in self._numbers.items():
            # Redis lost the streams (restarted): numbering goes on from where
            # this relay was, so consumer groups see the lost range as a gap.
            numbers[channel] = max(numbers.get(channel, 0), n)
        self._numbers = numbers
        self._check_retention(store, position, numbers)
        retention = self.retention
        saved, saved_at, unsaved = position, time.monotonic(), 0
        # The position up to which every event read is in the streams.
        appended = position
        checked_at = saved_at
        fetch = lambda after, limit: store.read(after, channels, limit)  # noqa: E731
        try:
            while not stop.is_set():
                items = reader.read(fetch, self.batch)
                if items:
                    # No MULTI: a batch cut short by a crash is completed by the
                    # takeover, which skips the events already appended.
                    pipe = self.client.pipeline(transaction=False)
                    added = 0
                    touched: set[str] = set()
                    for channel, payload, stamped in items:
                        seen = recent.get(channel)
                        if seen and stamped in seen:
                            self.skipped += 1
                            continue
                        numbers[channel] = n = numbers[channel] + 1
                        key = stream_key(self.prefix, channel)
                        touched.add(key)
                        pipe.xadd(
                            key,
                            {FIELD_PAYLOAD: payload, FIELD_POSITION: stamped},
                            id=entry_id(n),
                            maxlen=retention,
                            approximate=True,
                        )
                        added += 1
                    if added:
                        _ring(pipe, touched)
                        pipe.execute()
                        self.written += added
                        unsaved += added
                appended = reader.position
                now = time.monotonic()
                if reader.position != saved and (
                    unsaved >= self.batch or now - saved_at >= self.save_interval
                ):
                    # Not after every batch: a commit per batch would cost each
                    # event behind it a round trip.  At most ``2 * batch``
                    # appended events are unsaved, which a takeover skips.
                    store.save(self.consumer, reader.position)
                    saved, saved_at, unsaved = reader.position, now, 0
                if now - checked_at >= self.retention_check:
                    checked_at = now
                    self._check_retention(store, reader.position, numbers)
                if not reader.more:
                    recent = {}
                    self._caught_up_at = now
                    wait = self.idle_wait if reader.position == saved else self.save_interval
                    source.wait(min(self.idle_wait, wait), wake_fd)
        except redis.RedisError:
            self._save_last(store, appended, saved)
            raise
        self._save_last(store, appended, saved)

    def _save_last(self, store: JournalStore, appended: Any, saved: Any) -> None:
        # Stopping, or Redis failed (the journal answers): what was appended
        # is not read again by the next relay.
        if appended != saved:
            try:
                store.save(self.consumer, appended)
            except Exception as exc:  # the next relay skips what it reads again
                self.log.debug("could not save the relay's last position: %s", exc)

    def _check_retention(self, store: JournalStore, position: Any, numbers: dict[str, int]) -> None:
        # Journal rows the relay had not read were pruned: the streams get a
        # gap entry, which each consumer group signals as a retention gap.
        pruned_at = store.behind(position)
        if pruned_at is None or pruned_at == self._gap_seen:
            return
        self._gap_seen = pruned_at
        self.gaps += 1
        self._error(
            f"the journal lost events of the relayed watches before the relay read them"
            f" (pruned up to {pruned_at.isoformat()}); consumer groups get a gap"
        )
        pipe = self.client.pipeline(transaction=False)
        fields: Any = gap_fields(pruned_at.timestamp())
        for channel, last in list(numbers.items()):
            numbers[channel] = n = last + 1
            pipe.xadd(
                stream_key(self.prefix, channel),
                fields,
                id=entry_id(n),
                maxlen=self.retention,
                approximate=True,
            )
        _ring(pipe, [stream_key(self.prefix, c) for c in numbers])
        pipe.execute()

    def _relay_live(
        self, source: Source, channels: Sequence[str], stop: threading.Event, wake_fd: int
    ) -> None:
        # At most once: each notification is appended as it arrives; its
        # entry's journal position is 0 (it has none).
        numbers, _ = self._tails(channels)
        for channel, n in self._numbers.items():
            numbers[channel] = max(numbers.get(channel, 0), n)
        self._numbers = numbers
        schemas = {w.channel: w.effective_schema for w in self._watches}
        overflow = self.notifier.dialect.overflow
        while not stop.is_set():
            notes = source.wait(self.idle_wait, wake_fd)
            if not notes:
                continue
            pipe = self.client.pipeline(transaction=False)
            added = 0
            touched: set[str] = set()
            for note in notes:
                channel = note.channel
                if channel not in numbers:
                    continue
                payload = _complete(note.payload, overflow, schemas.get(channel))
                if payload is None:
                    self.dropped += 1
                    continue
                numbers[channel] = n = numbers[channel] + 1
                touched.add(stream_key(self.prefix, channel))
                pipe.xadd(
                    stream_key(self.prefix, channel),
                    {FIELD_PAYLOAD: payload, FIELD_POSITION: 0},
                    id=entry_id(n),
                    maxlen=self.retention,
                    approximate=True,
                )
                added += 1
            if not added:
                continue
            _ring(pipe, touched)
            try:
                pipe.execute()
            except redis.RedisError:
                self.dropped += added
                raise
            self.written += added


def _ring(pipe: Any, streams: Any) -> None:
    """Queue the ringing of every group's bell of ``streams`` behind the appends.

    The bell wakes one waiting consumer per group, where a group-blind
    ``XREAD`` would wake them all (see :data:`~sqlnotify.dialects.redis.commands.RING_SCRIPT`).
    ``EVAL`` with the text: Redis caches the compiled script, and a
    pipeline's ``EVALSHA`` would cost a ``SCRIPT EXISTS`` round trip.
    """
    keys = sorted(streams)
    if keys:
        pipe.execute_command("EVAL", RING_SCRIPT, len(keys), *keys, BELL_INFIX, BELL_TTL_MS)


def _complete(payload: str, overflow: OverflowStore | None, schema: str | None) -> str | None:
    # A payload too large for a notification arrives as a reference to the
    # overflow table: the relay appends the stored payload.
    if f'"{OVF}"' not in payload:
        return payload
    try:
        ref = json.loads(payload).get(OVF)
        if overflow is None or not isinstance(ref, int):
            return payload
        found = overflow.fetch(schema, [ref]).get(ref)
    except Exception as exc:  # a stored payload that cannot be read is dropped
        logging.getLogger("sqlnotify.relay").warning("could not fetch a stored payload: %s", exc)
        return None
    return found[1] if found is not None else None
