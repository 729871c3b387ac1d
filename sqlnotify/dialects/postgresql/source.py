"""The LISTEN socket: a psycopg2 connection in asynchronous mode.

Every step (connect, LISTEN, the liveness probe) is a non-blocking call
followed by a bounded ``poll()``: a dead or silent server is noticed on a
timeout, not only when data arrives.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..._names import quote_ident
from ...exceptions import SQLNotifyListenerError
from ..base import RawNotification, Source, SourceDisconnected
from .probe import BoundedCursor, connect_bounded, pooler_error, refused_by_pgbouncer, wait_fd
from .sql import (
    BACKEND_PID_SQL,
    CHANNEL_LOCKS_SQL,
    CONSUMER_LOCK_SQL,
    LISTEN_SQL,
    PING_SQL,
    QUEUE_USAGE_SQL,
    RECOVERY_AND_PID_SQL,
)

__all__ = ["PostgresSource"]

#: While connecting, check this often whether the listener is stopping.
STOP_CHECK = 0.2


def _connect_error(exc: BaseException) -> SQLNotifyListenerError:
    return refused_by_pgbouncer(exc) or SQLNotifyListenerError(
        f"cannot connect the listener: {exc}"
    )


class PostgresSource(Source):
    """A psycopg2 connection in asynchronous mode that LISTENs on every channel.

    The class attributes are the liveness bounds; tests may lower them.
    """

    #: Send a probe after this many seconds without any data from the server.
    IDLE_PROBE_INTERVAL = 5.0
    #: Declare the connection dead when a probe gets no answer for this long.
    PROBE_TIMEOUT = 5.0
    #: Bound on connecting, LISTEN and the ready round trip.
    CONNECT_TIMEOUT = 15.0
    #: While more data is already waiting, keep reading up to this many
    #: notifications before handing them over (one handoff per batch).
    MAX_BATCH = 2000
    #: Bound on the ready round trip alone: a healthy server answers in
    #: milliseconds; a connection that cannot LISTEN never does.
    PING_TIMEOUT = 5.0
    #: Read ``pg_notification_queue_usage()`` at least this often (seconds).
    QUEUE_CHECK_INTERVAL = 30.0
    #: Warn when the server's notification queue is fuller than this.
    QUEUE_WARN_LEVEL = 0.5

    def __init__(
        self,
        dsn: dict[str, Any],
        channels: Sequence[str],
        *,
        log: Any = None,
        lock: tuple[int, str] | None = None,
        stop: threading.Event,
        channel_locks: Sequence[tuple[int, int]] = (),
    ) -> None:
        import psycopg2
        import psycopg2.extensions as ext

        self._ext = ext
        self._log = log
        self._stop = stop
        #: Server notification queue usage (0..1) at the last check, or ``None``.
        self.queue_usage: float | None = None
        self._queue_warned = 0.0
        self._ping = f"sqlnotify_ping_{os.getpid()}_{id(self):x}"
        deadline = time.monotonic() + self.CONNECT_TIMEOUT
        try:
            conn = psycopg2.connect(async_=1, **dsn)
        except psycopg2.Error as exc:
            raise _connect_error(exc) from exc
        self._conn = conn
        self._dsn = dsn
        try:
            try:
                self._complete(deadline)
            except psycopg2.Error as exc:
                raise _connect_error(exc) from exc
            self._fd = conn.fileno()
            cur = conn.cursor()
            self._cursor = cur
            cur.execute(RECOVERY_AND_PID_SQL)
            self._complete(deadline)
            recovery, pid = cur.fetchone()
            if recovery:
                raise SQLNotifyListenerError(
                    "the listener's server is in recovery (a read replica or standby):"
                    " notifications are only sent on the primary; connect to the primary"
                )
            if pid != conn.info.backend_pid:
                # The process id the connection was given is not the server's:
                # a pooler answered.  In session mode LISTEN works; find out
                # before any session lock is taken (a transaction pooler would
                # leave it on a server session it hands to others).
                self._check_pooler(pid, deadline)
            if lock is not None:
                cur.execute(CONSUMER_LOCK_SQL, (lock[0],))
                self._complete(deadline)
                if not cur.fetchone()[0]:
                    raise SQLNotifyListenerError(
                        f"consumer {lock[1]!r} is already active in another process; one"
                        " consumer name is read by one process at a time (use another name"
                        " for an independent reader)"
                    )
            if channel_locks:
                # Shared, never waited for: they tell cleanups this channel is live.
                cur.execute(
                    CHANNEL_LOCKS_SQL,
                    ([c for c, _ in channel_locks], [k for _, k in channel_locks]),
                )
                self._complete(deadline)
            listens = "".join(
                LISTEN_SQL.format(channel=quote_ident(c)) for c in (*channels, self._ping)
            )
            cur.execute(listens)
            self._complete(deadline)
            cur.execute(PING_SQL, (self._ping,))
            self._complete(deadline)
            self._await_ping(min(deadline, time.monotonic() + self.PING_TIMEOUT))
        except BaseException:
            self.close()
            raise
        self._last_data = time.monotonic()
        self._last_check = self._last_data
        self.last_alive = time.time()
        self._probe_deadline: float | None = None
        self._poller: select.poll | None = None
        self._poller_wake = -1
        self._data_poller = select.poll()
        self._data_poller.register(self._fd, select.POLLIN)
        self.backend_pid: int = conn.info.backend_pid

    def _check_pooler(self, pid: int, deadline: float) -> None:
        """Raise :func:`pooler_error` unless this pooled connection keeps its session."""
        cur = self._cursor
        cur.execute(LISTEN_SQL.format(channel=quote_ident(self._ping)))
        self._complete(deadline)
        cur.execute(BACKEND_PID_SQL)
        self._complete(deadline)
        if cur.fetchone()[0] != pid:
            raise pooler_error(
                "the listener connects through a connection pooler in transaction mode"
                " (PgBouncer, Supavisor, pgcat, ...): its session changed between two"
                " transactions"
            )
        # A notification from another client reaches a session that keeps
        # its LISTEN; behind a transaction pooler it reaches nobody, or the
        # sender itself (when handed the listening server session).
        other = connect_bounded(self._dsn, max(0.1, deadline - time.monotonic()))
        try:
            sender = BoundedCursor(other, max(0.1, deadline - time.monotonic()))
            sender.execute(PING_SQL, (self._ping,))
            echoed = any(n.channel == self._ping for n in other.notifies)
        finally:
            other.close()
        if echoed:
            raise pooler_error(
                "the listener connects through a connection pooler in transaction mode"
                " (PgBouncer, Supavisor, pgcat, ...): its LISTEN was found on another"
                " client's session"
            )
        self._await_ping(min(deadline, time.monotonic() + self.PING_TIMEOUT))

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise SQLNotifyListenerError("the listener is stopping")

    def _complete(self, deadline: float) -> None:
        """Drive the pending asynchronous operation to completion within ``deadline``."""
        ext = self._ext
        conn = self._conn
        while True:
            state = conn.poll()
            if state == ext.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SQLNotifyListenerError("the server did not answer the listener in time")
            wait_fd(conn.fileno(), min(remaining, STOP_CHECK), write=state == ext.POLL_WRITE)
            self._check_stop()

    def _await_ping(self, deadline: float) -> None:
        conn = self._conn
        while True:
            for n in conn.notifies:
                if n.channel == self._ping:
                    conn.notifies = [x for x in conn.notifies if x.channel != self._ping]
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise pooler_error(
                    "LISTEN does not work on the listener's connection: a notification"
                    f" sent to it did not come back within {self.PING_TIMEOUT:g}s (is it"
                    " a connection pooler in transaction mode, such as PgBouncer?)"
                )
            wait_fd(self._fd, min(remaining, STOP_CHECK))
            self._check_stop()
            conn.poll()

    def connection(self) -> Any:
        """The listening connection, idle, for statements of the thread that owns this
        source (a relay's journal reads, see ``PostgresJournal.borrow``).

        A liveness probe in flight is answered first; notifications that
        arrive during those statements are returned by the next :meth:`wait`.
        """
        if self._probe_deadline is not None:
            try:
                self._complete(self._probe_deadline)
            except SQLNotifyListenerError as exc:
                raise SourceDisconnected(str(exc)) from exc
            self._probe_deadline = None
            self._queue_checked(self._cursor.fetchone())
        return self._conn

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        conn = self._conn
        ext = self._ext
        if conn.notifies:
            timeout = 0.0  # already read (by a statement on this connection)
        now = time.monotonic()
        probe = self._probe_deadline
        if probe is None and (
            now - self._last_data >= self.IDLE_PROBE_INTERVAL
            or now - self._last_check >= self.QUEUE_CHECK_INTERVAL
        ):
            self._last_check = now
            try:
                self._cursor.execute(QUEUE_USAGE_SQL)
            except Exception as exc:
                raise SourceDisconnected(str(exc)) from exc
            probe = self._probe_deadline = now + self.PROBE_TIMEOUT
        if probe is not None:
            timeout = max(0.0, min(timeout, probe - now))
        try:
            poller = self._poller
            if poller is None or self._poller_wake != wake_fd:
                poller = self._poller = select.poll()
                poller.register(self._fd, select.POLLIN)
                poller.register(wake_fd, select.POLLIN)
                self._poller_wake = wake_fd
            ready = poller.poll(timeout * 1000.0)
            data = any(fd == self._fd for fd, _ in ready)
            if probe is not None or data:
                state = conn.poll()
                more = self._data_poller.poll
                limit = self.MAX_BATCH
                while state == ext.POLL_OK and len(conn.notifies) < limit and more(0):
                    state = conn.poll()
                self._last_data = time.monotonic()
                if data:
                    self.last_alive = time.time()
                if probe is not None and state == ext.POLL_OK:
                    self._probe_deadline = None
                    self._queue_checked(self._cursor.fetchone())
            elif conn.closed:
                raise SourceDisconnected("connection closed")
        except SourceDisconnected:
            raise
        except Exception as exc:  # psycopg2.OperationalError, InterfaceError, OSError
            raise SourceDisconnected(str(exc) or type(exc).__name__) from exc
        if self._probe_deadline is not None and time.monotonic() >= self._probe_deadline:
            raise SourceDisconnected(
                f"the server did not answer a liveness probe within {self.PROBE_TIMEOUT:g}s"
            )
        notifies = conn.notifies
        if not notifies:
            return ()
        conn.notifies = []
        return notifies  # type: ignore[no-any-return]

    def _queue_checked(self, row: Any) -> None:
        if not row or row[0] is None:
            return
        usage = self.queue_usage = float(row[0])
        now = time.monotonic()
        warn = usage >= self.QUEUE_WARN_LEVEL and now - self._queue_warned >= 60.0
        if warn and self._log is not None:
            self._queue_warned = now
            self._log.warning(
                "the server's notification queue is %.0f%% full: a listening session is"
                " not consuming (or a transaction holds it back); at 100%% every"
                " NOTIFY fails",
                usage * 100,
            )

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: S110 - closing a broken connection
            pass

    def abandon(self) -> None:
        # Point the child's copy of the socket's descriptor at a dead socket:
        # the child lets go of the parent's connection, and anything libpq
        # might still write in the child (a Terminate) goes nowhere.  The
        # descriptor number stays taken, so nothing else reuses it.
        try:
            fd = self._conn.fileno()
        except Exception:
            return
        a, b = socket.socketpair()
        try:
            os.dup2(a.fileno(), fd, inheritable=False)
        except OSError:
            pass
        finally:
            a.close()
            b.close()
