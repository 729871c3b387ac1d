"""The relay: the journal of durable watches, appended to one Redis stream per watch.

One process reads the database; any number of notifiers on other machines
read Redis (:class:`~sqlnotify.dialects.redis.RedisStreams`).  Start one
relay per database and stream set on two or more machines: one is active
(it holds the relay's consumer lock, a PostgreSQL advisory lock taken by
its listening session), the others stand by and take over within
:attr:`Relay.standby_interval` seconds of the active one's death.

Each journal batch is appended in one ``MULTI``/``EXEC`` (``XADD`` with
``MAXLEN ~ retention``), then its position is saved as the relay's consumer
position in the database.  Each entry carries the event's journal position
number: a relay taking over, which resumes from the saved position, skips
the events the streams' last entries already hold, so no event is written
twice.
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
from ._watch import Watch
from .dialects.base import JournalStore, Source, SourceDisconnected
from .dialects.redis.commands import (
    DEFAULT_PREFIX,
    FIELD_PAYLOAD,
    FIELD_POSITION,
    RELAY_LOCK_PREFIX,
    entry_id,
    entry_number,
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

    def __init__(
        self,
        notifier: Notifier,
        redis_url: str,
        *,
        name: str = "default",
        stream_prefix: str = DEFAULT_PREFIX,
        retention: int = 1_000_000,
        batch: int = 1000,
        log: logging.Logger | None = None,
    ) -> None:
        self.notifier = notifier
        self.name = name
        self.prefix = stream_prefix
        self.retention = int(retention)
        self.batch = int(batch)
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
        #: How many times this relay became active.
        self.takeovers = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._last_commit: float | None = None
        self._lag_events = 0
        self._health_key = health_key(stream_prefix, name, f"{socket.gethostname()}:{os.getpid()}")
        self._published = 0.0

    # -- control ----------------------------------------------------------------
    def start(self) -> None:
        """Install the triggers (:meth:`prepare`), then relay on a thread of its own until
        :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.prepare()
        self._stop.clear()
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

    def health(self) -> dict[str, Any]:
        """The relay's state: active or standing by, entries written, lag, last error.

        ``lag_events``: journal rows read and not yet appended;
        ``lag_seconds``: since the last append when rows are waiting, else 0.
        """
        lag_s = 0.0
        if self._lag_events and self._last_commit is not None:
            lag_s = max(0.0, time.time() - self._last_commit)
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "active": self.active,
            "written": self.written,
            "skipped": self.skipped,
            "takeovers": self.takeovers,
            "lag_events": self._lag_events,
            "lag_seconds": lag_s,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "streams": [stream_key(self.prefix, w.channel) for w in self._watches],
        }

    # -- the loop -----------------------------------------------------------------
    def prepare(self) -> None:
        """Install the watches' triggers, check that every watch is durable, and
        record the relay's first position (where it never ran).

        :meth:`start` and :meth:`run` call it first, so a configuration
        error is raised to their caller.
        """
        states = self.notifier.install()
        watches = [s.watch for s in states]
        plain = [w.describe() for w in watches if not w.durable]
        if plain:
            raise SQLNotifyConfigurationError(
                "the relay reads durable watches only (watch(..., durable=True)): "
                + ", ".join(plain)
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
        self._loop(stop or self._stop)

    def _loop(self, stop: threading.Event) -> None:
        watches = self._watches
        dialect = self.notifier.dialect
        channels = [w.channel for w in watches]
        store = dialect.journal()
        wake_r, wake_w = os.pipe()
        try:
            store.ensure()
            while not stop.is_set():
                source = self._elect(store, channels, stop)
                if source is None:
                    continue
                try:
                    self._relay(store, source, channels, stop, wake_r)
                except (SourceDisconnected, SQLNotifyException, redis.RedisError, OSError) as exc:
                    self._error(f"{type(exc).__name__}: {exc}")
                    stop.wait(self.standby_interval)
                finally:
                    self.active = False
                    source.close()
                    store.close()
        finally:
            store.close()
            os.close(wake_r)
            os.close(wake_w)
            self.client.close()

    def _publish(self) -> None:
        now = time.monotonic()
        if now - self._published < self.publish_interval:
            return
        self._published = now
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
        self._publish()
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
            entries: Any = self.client.xrevrange(key, "+", "-", count=self.batch)
            numbers[channel] = entry_number(entries[0][0]) if entries else 0
            recent[channel] = {int(f[FIELD_POSITION]) for _, f in entries}
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
        reader = JournalReader(position, channels, stamp=store.stamp, make=_row)
        numbers, recent = self._tails(channels)
        for channel, n in self._numbers.items():
            # Redis lost the streams (restarted): numbering goes on from where
            # this relay was, so consumer groups see the lost range as a gap.
            numbers[channel] = max(numbers.get(channel, 0), n)
        self._numbers = numbers
        retention = self.retention
        saved = position
        while not stop.is_set():
            items = reader.read(lambda after, limit: store.read(after, channels, limit), self.batch)
            self._lag_events = len(items)
            if items:
                pipe = self.client.pipeline(transaction=True)
                added = 0
                for channel, payload, stamped in items:
                    seen = recent.get(channel)
                    if seen and stamped in seen:
                        self.skipped += 1
                        continue
                    numbers[channel] = n = numbers[channel] + 1
                    pipe.xadd(
                        stream_key(self.prefix, channel),
                        {FIELD_PAYLOAD: payload, FIELD_POSITION: stamped},
                        id=entry_id(n),
                        maxlen=retention,
                        approximate=True,
                    )
                    added += 1
                if added:
                    pipe.execute()
                    self.written += added
                self._last_commit = time.time()
                self._lag_events = 0
            if reader.position != saved:
                store.save(self.consumer, reader.position)
                saved = reader.position
            self._publish()
            if not reader.more:
                recent = {}
                source.wait(self.idle_wait, wake_fd)
