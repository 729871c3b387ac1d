"""Reading the relay's streams through a consumer group (the listener thread's side).

:class:`RedisSource` is the listener thread's connection: each
:meth:`~RedisSource.wait` claims pending entries of dead consumers
(``XAUTOCLAIM``) when due, waits in ``BLPOP`` on its group's bells (at most
:attr:`RedisSource.block` seconds), then reads with :data:`READ_SCRIPT` (the
group's last delivered ID and ``XREADGROUP`` in one atomic step, so a
trimmed range is told exactly), queued behind the ``BLPOP`` in one
pipeline: one round trip per wake-up.  The relay rings each group's bell
after appending (:data:`RING_SCRIPT`), and a bell's element wakes exactly
one waiting consumer of the group: a group of several consumers shares the
waiting as it shares the events (a group-blind ``XREAD`` would wake every
one of them for every entry).  A read that filled its count rings again,
for the next consumer; a wait that times out reads too.

:class:`Ledger` remembers the entries delivered and not acknowledged, each
under a local sequence number (the consumer's position).
:class:`RedisAcks` is the consumer's :class:`~sqlnotify.dialects.base.JournalStore`:
saving a position acknowledges (``XACK``) every entry up to it, which the
pipeline does only once every receiver of those events finished.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from ..._journal import JournalEvent, JournalReader, Row
from ...exceptions import SQLNotifyException, SQLNotifyListenerError
from ..base import RawNotification, Source, SourceDisconnected
from .commands import (
    BELL_INFIX,
    BELL_TTL_MS,
    FIELD_GAP,
    FIELD_PAYLOAD,
    FIELD_POSITION,
    LEASE_REFRESH_SCRIPT,
    LEASE_RELEASE_SCRIPT,
    READ_SCRIPT,
    bell_key,
    entry_number,
)

__all__ = ["Lease", "Ledger", "RedisAcks", "RedisSource", "ensure_groups"]


class Lease:
    """One process's hold on a consumer name in a group: a Redis key with a TTL.

    :meth:`acquire` takes it (``SET NX PX``) or raises when another process
    holds it; the listener thread :meth:`refresh`-es it at every read, at
    most every third of :attr:`ttl`; :meth:`release` deletes it if still
    ours.  A process that dies without releasing frees the name after
    ``ttl`` seconds.
    """

    def __init__(self, client: redis.Redis, key: str, consumer: str, ttl: float) -> None:
        self._client = client
        self.key = key
        self.consumer = consumer
        self.ttl = float(ttl)
        #: What this process writes into the key (host, pid and a random part).
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._refresh = client.register_script(LEASE_REFRESH_SCRIPT)
        self._release = client.register_script(LEASE_RELEASE_SCRIPT)
        self._next = 0.0
        #: ``True`` while this process holds the name.
        self.held = False
        self._wanted = False

    def _take(self) -> bool:
        got = bool(self._refresh(keys=[self.key], args=[self.token, int(self.ttl * 1000)]))
        self._next = time.monotonic() + self.ttl / 3
        self.held = got
        return got

    def acquire(self) -> None:
        """Take the name (any thread); raise :class:`SQLNotifyListenerError` if another has it."""
        self._wanted = True
        try:
            got = self._take()
            holder = None if got else str(self._client.get(self.key))
        except redis.RedisError as exc:
            raise SQLNotifyListenerError(f"could not take the consumer's lease: {exc}") from exc
        if not got:
            raise SQLNotifyListenerError(
                f"consumer {self.consumer!r} is already active in another process ({holder});"
                " one consumer name in a group is read by one process at a time (give each"
                f" process its own name; a dead one frees it within {self.ttl:g} s)"
            )

    def refresh(self) -> None:
        """Extend the lease when due (listener thread); raise if another process took it."""
        if not self._wanted or time.monotonic() < self._next:
            return
        if not self._take():
            raise SourceDisconnected(
                f"consumer {self.consumer!r} lost its lease to another process"
                f" ({self._client.get(self.key)!s})"
            )

    def release(self) -> None:
        """Free the name if this process holds it (errors are ignored: it expires)."""
        self._wanted = False
        if not self.held:
            return
        self.held = False
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError:
            pass


class Ledger:
    """Delivered entries not yet acknowledged, in delivery order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[tuple[int, str, str]] = collections.deque()
        # The journal number of each entry not yet acknowledged, by sequence number.
        self._numbers: dict[int, int] = {}
        #: The last local sequence number handed out.
        self.last = 0
        #: The sequence and journal numbers of the last entry acknowledged.
        self.acked = (0, 0)

    def add(self, key: str, entry: str, number: int = 0) -> int:
        """Remember one delivered entry (``number``: its journal number); return its
        sequence number."""
        with self._lock:
            self.last = seq = self.last + 1
            self._items.append((seq, key, entry))
            self._numbers[seq] = number
        return seq

    def number(self, seq: int) -> int:
        """The journal number of the entry ``seq`` (of the last one acknowledged up to it)."""
        with self._lock:
            found = self._numbers.get(seq)
            if found is not None:
                return found
            return self.acked[1] if seq >= self.acked[0] else 0

    def take(self, upto: int) -> dict[str, list[str]]:
        """Forget the entries numbered up to ``upto``; return them by stream."""
        out: dict[str, list[str]] = {}
        with self._lock:
            items = self._items
            while items and items[0][0] <= upto:
                seq, key, entry = items.popleft()
                out.setdefault(key, []).append(entry)
                self.acked = (seq, self._numbers.pop(seq, 0))
        return out

    def clear(self) -> None:
        """Forget everything (the streams' groups are gone)."""
        with self._lock:
            self._items.clear()
            self._numbers.clear()

    def __len__(self) -> int:
        return len(self._items)


def ensure_groups(client: redis.Redis, keys: Sequence[str], group: str, start: str) -> None:
    """Create the consumer group on every stream (and the stream) where missing."""
    for key in keys:
        try:
            client.xgroup_create(key, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class RedisSource(Source):
    """One consumer of the streams ``keys`` in ``group`` (listener thread only).

    :param channels: the watch channel of each stream, in the same order.
    :param claim_idle: seconds after which another consumer's pending entry
        is claimed by this one.
    """

    #: Most seconds one blocking read waits (``Notifier.stop`` waits at most this).
    block = 0.25
    #: Most entries one read returns per stream.
    count = 500

    def __init__(
        self,
        client: redis.Redis,
        keys: Sequence[str],
        channels: Sequence[str],
        *,
        group: str,
        consumer: str,
        ledger: Ledger,
        claim_idle: float,
        log: logging.Logger,
        reader: JournalReader,
        seen: dict[str, int],
        lease: Lease | None = None,
    ) -> None:
        self._client = client
        self._lease = lease
        self._keys = list(keys)
        self._channel = dict(zip(keys, channels, strict=True))
        self._group = group
        self._consumer = consumer
        self._ledger = ledger
        self._claim_idle_ms = max(1, int(claim_idle * 1000))
        self._claim_every = max(0.05, claim_idle / 2)
        self._next_claim = 0.0
        self._log = log
        self._script = client.register_script(READ_SCRIPT)
        self._args: list[str | int] = [group, consumer, self.count, BELL_INFIX, BELL_TTL_MS]
        self._bells = [bell_key(key, group) for key in keys]
        #: Rung wake-ups whose read found nothing (another consumer had read it).
        self.empty_reads = 0
        #: The last entry number this consumer knows its group got, by stream.
        self._seen = seen
        for key in keys:
            seen.setdefault(key, 0)
        self.reader = reader
        self.last_alive = time.time()
        #: Entries claimed from other consumers.
        self.claimed = 0
        self._conn: Any = None

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        try:
            if self._lease is not None:
                self._lease.refresh()
            out = self._claim() if time.monotonic() >= self._next_claim else []
            if out:
                out += self._read()
            else:
                out = self._wait_and_read(timeout)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise SourceDisconnected(f"Redis refused a read: {exc}") from exc
            self._regroup()
            return []
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._drop()
            raise SourceDisconnected(f"lost the Redis connection: {exc}") from exc
        self.last_alive = time.time()
        return out

    def _connection(self) -> Any:
        # The listener thread keeps one pooled connection for its reads: a
        # pipeline object per wake-up (checkout, health poll, release) cost
        # about as much CPU again as the round trip itself.
        if self._conn is None:
            self._conn = self._client.connection_pool.get_connection()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._client.connection_pool.release(conn)

    def _regroup(self) -> None:
        # The group (or the stream) vanished: Redis restarted or the stream
        # was deleted.  Entries not acknowledged are gone with it.
        self._log.warning("the consumer group %r vanished from Redis; recreating it", self._group)
        self._ledger.clear()
        ensure_groups(self._client, self._keys, self._group, "0")

    def _wait_and_read(self, timeout: float) -> list[JournalEvent]:
        # One round trip: BLPOP blocks this connection until the relay rings
        # one of the group's bells (or the block ends), and Redis runs the
        # read script queued behind it right after.  The script runs after a
        # timeout too: a stream that started over (Redis and the relay
        # restarted), or entries appended by a relay that rings no bell.
        block = max(0.001, min(timeout, self.block))
        keys = self._keys
        conn = self._connection()
        wait = ("BLPOP", *self._bells, f"{block:.3f}")
        read = ("EVALSHA", self._script.sha, len(keys), *keys, *self._args)
        conn.send_packed_command(conn.pack_commands([wait, read]))
        rung = False
        try:
            rung = conn.read_response() is not None  # None: the block ended
        except redis.ResponseError:
            pass  # the script's reply tells what is wrong
        try:
            replies = conn.read_response()
        except redis.exceptions.NoScriptError:
            return self._read()  # Redis restarted: the script is loaded again
        out = self._handle(replies)
        if rung and not out:
            self.empty_reads += 1
        return out

    def _read(self) -> list[JournalEvent]:
        return self._handle(self._script(keys=self._keys, args=self._args))

    def _handle(self, replies: Any) -> list[JournalEvent]:
        out: list[JournalEvent] = []
        for key, (last_id, entries) in zip(self._keys, replies, strict=True):
            group_last = entry_number(last_id)
            seen = self._seen[key]
            if entries:
                first = entry_number(entries[0][0])
                known = max(seen, group_last)
                if first > known + 1:
                    self._gap(key, known + 1, first - 1)
                elif first <= seen and group_last < seen:
                    # The stream started over (Redis lost it and the relay too).
                    self._gap(key, first, first)
                self._seen[key] = entry_number(entries[-1][0])
                self._deliver(key, entries, out)
            elif group_last > seen:
                self._seen[key] = group_last
        return out

    def _deliver(self, key: str, entries: Sequence[Any], out: list[JournalEvent]) -> None:
        channel = self._channel[key]
        add = self._ledger.add
        append = out.append
        for entry, raw in entries:
            if not raw:
                continue  # deleted while pending
            # A script's reply lists [field, value, ...]; XAUTOCLAIM's is a dict.
            fields = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw
            number = int(fields[FIELD_POSITION])
            seq = add(key, entry, number)
            payload = fields.get(FIELD_PAYLOAD)
            if payload is None:
                if FIELD_GAP in fields:
                    self._lost(key, entry, fields[FIELD_GAP])
                continue  # acknowledged with the events after it
            append(JournalEvent(channel, payload, None, number, seq))
        if out:
            self.reader.position = self._ledger.last  # type: ignore[union-attr]

    def _claim(self) -> list[JournalEvent]:
        self._next_claim = time.monotonic() + self._claim_every
        out: list[JournalEvent] = []
        for key in self._keys:
            reply = self._client.xautoclaim(
                key, self._group, self._consumer, self._claim_idle_ms, "0-0", count=self.count
            )
            entries = reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                self._log.warning(
                    "%d pending entries of %s were trimmed before they were handled",
                    len(deleted),
                    key,
                )
            live = [e for e in entries if e[1]]
            if live:
                self.claimed += len(live)
                self._log.info("claimed %d pending entries of %s", len(live), key)
                self._deliver(key, live, out)
        return out

    def _lost(self, key: str, entry: str, lost_until: str) -> None:
        # The relay's journal lost events before the relay read them: their
        # number is unknown (a gap "from first to last" with last < first).
        self._log.warning(
            "entry %s of %s: the journal lost events before the relay read them"
            " (the newest lost was written at %s)",
            entry,
            key,
            lost_until,
        )
        on_gap = self.reader.on_gap if self.reader is not None else None
        if on_gap is not None:
            on_gap(1, 0)

    def _gap(self, key: str, first: int, last: int) -> None:
        self._log.warning(
            "entries %d to %d of %s were removed before group %r read them",
            first,
            last,
            key,
            self._group,
        )
        on_gap = self.reader.on_gap if self.reader is not None else None
        if on_gap is not None:
            on_gap(first, last)

    def close(self) -> None:
        # The dialect owns the client; the read connection goes back to its pool.
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.connection_pool.release(conn)


class RedisAcks:
    """The consumer's position store: saving a position acknowledges entries up to it."""

    def __init__(
        self, client: redis.Redis, group: str, ledger: Ledger, lease: Lease | None = None
    ) -> None:
        self._client = client
        self._group = group
        self._ledger = ledger
        self._lease = lease
        #: Entries acknowledged.
        self.acked = 0

    def ensure(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise SQLNotifyException(f"Redis does not answer: {exc}") from exc

    def acquire(self, consumer: str) -> None:
        """Take the consumer name's lease (raises when another process holds it)."""
        if self._lease is not None:
            self._lease.acquire()

    def start_position(self) -> int:
        return self._ledger.last

    def read(self, after: Any, channels: Sequence[str], limit: int) -> Sequence[Row]:
        return []

    def stamp(self, position: Any) -> int:
        # The journal number of the entry at this consumer's position.
        return self._ledger.number(int(position))

    def load(self, consumer: str) -> tuple[Any, dt.datetime] | None:
        return None

    def save(self, consumer: str, position: Any) -> None:
        done = self._ledger.take(int(position))
        if not done:
            return
        pipe = self._client.pipeline(transaction=False)
        for key, entries in done.items():
            pipe.xack(key, self._group, *entries)
        pipe.execute()
        self.acked += sum(len(e) for e in done.values())

    def behind(self, position: Any) -> dt.datetime | None:
        return None

    def prune(self, retention: float, consumer_expiry: float) -> int:
        return 0

    def close(self) -> None:
        if self._lease is not None:
            self._lease.release()
