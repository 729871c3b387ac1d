"""Poll mode: no LISTEN, the journal of durable watches read at an adaptive interval.

LISTEN needs a server session of its own, which a transaction pooler
(PgBouncer, Supavisor, pgcat in transaction mode) never gives.  In poll mode
the listener holds a plain connection (through the pooler is fine) and
:class:`PollSource` hands the pipeline a wake-up of every durable channel
whenever a read of the journal is due; the journal itself is the truth, as
with LISTEN.  The pauses come from :class:`~sqlnotify._pacer.Pacer`: short
after a read found events or the notifier's own engine committed, doubling
up to the poll interval while nothing happens.

A named consumer is one process's at a time.  LISTEN mode holds a session
advisory lock for it, which a transaction pooler would leave on a server
session it hands to others; poll mode holds a lease row instead
(``sqlnotify_leases``, beside the journal): taken when the source connects,
renewed with each liveness round trip (every :attr:`PollSource.ALIVE_INTERVAL`
seconds, for :attr:`PollSource.LEASE_TTL` seconds), deleted when it closes.
A source that finds its lease taken over stops reading and reconnects, as
a LISTEN source does when it loses its connection, and the listener retries
it with backoff until the other holder lets go.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..._names import pyformat_safe
from ..._pacer import Pacer
from ..._payload import Notification, RawNotification
from ...exceptions import SQLNotifyListenerError
from ..base import Source, SourceDisconnected
from .probe import BoundedCursor, connect_bounded, describe_address
from .sql import (
    ALIVE_SQL,
    IN_RECOVERY_SQL,
    LEASE_HOLDER_SQL,
    LEASE_RELEASE_SQL,
    LEASE_TAKE_SQL,
)

__all__ = ["PollSource"]


class _PollPacer(Pacer):
    # A check is a query: after a commit of the notifier's own engine (the
    # hook runs just before the commit lands), a few quick ones, not SQLite's
    # sub-millisecond series.
    WAKE_STEPS = (0.0005, 0.002, 0.008, 0.032)


class PollSource(Source):
    """Wake-ups of the durable channels at the :class:`Pacer`'s pace (listener thread).

    ``channels`` are the durable watches' channels; ``wake_payload`` the
    payload the pipeline takes as a wake-up; ``lease`` the qualified leases
    table and the consumer name, for a named consumer.  The class attributes
    are the bounds; tests may lower them.
    """

    #: Bound on connecting and on each round trip.
    CONNECT_TIMEOUT = 15.0
    #: Check the connection with a round trip after this many seconds.
    ALIVE_INTERVAL = 5.0
    #: How long a consumer's lease outlives its holder's last renewal.
    LEASE_TTL = 30.0

    def __init__(
        self,
        dsn: dict[str, Any],
        channels: Sequence[str],
        *,
        wake_payload: str,
        interval: float,
        min_interval: float,
        stop: threading.Event,
        lease: tuple[str, str] | None = None,
    ) -> None:
        import psycopg2

        self._lease: tuple[str, str] | None = None
        #: This source's name in the leases table: host, process, and a token.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

        self._stop = stop
        if stop.is_set():
            raise SQLNotifyListenerError("the listener is stopping")
        try:
            conn = connect_bounded(dsn, self.CONNECT_TIMEOUT)
        except (psycopg2.Error, TimeoutError) as exc:
            raise SQLNotifyListenerError(
                f"cannot connect the poller to {describe_address(dsn)}: {exc}"
            ) from exc
        self._conn = conn
        try:
            cur = self._cursor()
            cur.execute(IN_RECOVERY_SQL)
            if cur.fetchone()[0]:
                raise SQLNotifyListenerError(
                    "the poller's server is in recovery (a read replica or standby): the"
                    " journal is written on the primary; connect to the primary"
                )
            if lease is not None:
                self._lease = (pyformat_safe(lease[0]), lease[1])
                self._renew()
        except psycopg2.Error as exc:
            self.close()
            raise SQLNotifyListenerError(f"the poller's first round trip failed: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._wakes: list[RawNotification] = [Notification(c, wake_payload) for c in channels]
        #: The schedule of checks (its attributes are the schedules).
        self.pacer: Pacer = _PollPacer(min_interval, interval, watching=False)
        self._due = time.monotonic()  # read once at once
        self._alive_at = self._due
        self.last_alive = time.time()
        self._poller = select.poll()
        self._poller_wake = -1

    def _cursor(self) -> BoundedCursor:
        return BoundedCursor(self._conn, self.CONNECT_TIMEOUT)

    def _renew(self) -> None:
        """Take or renew the consumer's lease; raise when another holder has it."""
        assert self._lease is not None
        table, consumer = self._lease
        cur = self._cursor()
        params = {"name": consumer, "holder": self.holder, "ttl": self.LEASE_TTL}
        cur.execute(LEASE_TAKE_SQL.format(leases=table), params)
        if cur.fetchone() is not None:
            return
        cur.execute(LEASE_HOLDER_SQL.format(leases=table), (consumer,))
        row = cur.fetchone()
        holder, left = row if row is not None else ("another process", 0.0)
        raise SQLNotifyListenerError(
            f"consumer {consumer!r} is already active in another process ({holder}, whose"
            f" lease runs {max(left, 0.0):.0f}s more unless renewed); one consumer name is"
            " read by one process at a time (use another name for an independent reader)"
        )

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        now = time.monotonic()
        if now - self._alive_at >= self.ALIVE_INTERVAL:
            self._alive_at = now
            try:
                if self._lease is None:
                    self._cursor().execute(ALIVE_SQL)
                else:
                    self._renew()
            except Exception as exc:  # psycopg2.Error, TimeoutError, OSError, lease lost
                raise SourceDisconnected(str(exc) or type(exc).__name__) from exc
            self.last_alive = time.time()
        pause = max(0.0, min(timeout, self._due - now))
        if pause > 0.0:
            if self._poller_wake != wake_fd:
                self._poller = select.poll()
                self._poller.register(wake_fd, select.POLLIN)
                self._poller_wake = wake_fd
            if self._poller.poll(pause * 1000.0):
                # The notifier's own engine committed: check at once, then
                # quickly for a while (the commit may still be landing).  An
                # empty return lets the listener drain the wake pipe first.
                self.pacer.woke()
                self._due = time.monotonic() + self.pacer.pause(self.pacer.max_poll)
                return ()
            if time.monotonic() < self._due:
                return ()  # the listener's own timeout ended the wait
        pacer = self.pacer
        self._due = time.monotonic() + pacer.pause(pacer.max_poll)
        return self._wakes

    def checked(self, found: bool) -> None:
        pacer = self.pacer
        if found:
            pacer.found()
        else:
            pacer.slept()
        self._due = time.monotonic() + pacer.pause(pacer.max_poll)

    def close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None and not self._conn.closed:
            try:
                self._cursor().execute(
                    LEASE_RELEASE_SQL.format(leases=lease[0]), (lease[1], self.holder)
                )
            except Exception:  # noqa: S110 - the lease expires by itself
                pass
        try:
            self._conn.close()
        except Exception:  # noqa: S110 - closing a broken connection
            pass
