"""Bounded connections: the first contact with a server, and connections whose every wait ends.

:func:`probe`, before anything else of ``start()``: a psycopg2 connection in
asynchronous mode, driven to the end of the startup exchange under one
deadline, so an address that refuses, never answers or speaks another
protocol gives a clear error within the bound, instead of a blocking connect
that may never return.  :func:`connect_bounded` and :class:`BoundedCursor`
serve sqlnotify's own short queries the same way.
"""

from __future__ import annotations

import select
import time
from collections.abc import Mapping
from typing import Any

from ...exceptions import SQLNotifyListenerError

__all__ = [
    "POOLER_ADVICE",
    "BoundedCursor",
    "connect_bounded",
    "describe_address",
    "pooler_error",
    "probe",
    "refused_by_pgbouncer",
    "wait_fd",
]

#: What to do when sqlnotify's connections go through a transaction pooler.
POOLER_ADVICE = (
    "LISTEN needs a server session of its own, which a transaction pooler hands to"
    " other clients between transactions.  Give the listener a direct connection to"
    " the server with the listener_connect_args option (for example"
    " listener_connect_args={'host': 'db.internal', 'port': 5432}; the engine may keep"
    " using the pooler), or use poll mode (pg_listen=False, durable watches only);"
    " see the documentation's page on poolers"
)


def pooler_error(what: str) -> SQLNotifyListenerError:
    """The error of a notifier whose listener goes through a transaction pooler."""
    return SQLNotifyListenerError(f"{what}.  {POOLER_ADVICE}")


def refused_by_pgbouncer(exc: BaseException) -> SQLNotifyListenerError | None:
    text = str(exc).strip()
    if "unsupported startup parameter" not in text:
        return None
    # PgBouncer's own words: only it answers a startup packet so.
    return pooler_error(
        f"cannot connect to the server: {text} (the address is PgBouncer, which refuses"
        " settings sqlnotify's own sessions give at connect, such as options=)"
    )


def describe_address(dsn: Mapping[str, Any]) -> str:
    """``host:port (database 'db', user 'u')`` for messages, from libpq keywords."""
    host = dsn.get("host") or dsn.get("hostaddr") or "the local socket"
    port = dsn.get("port") or "5432"
    where = f"{host}:{port}" if not str(host).startswith("/") else f"{host} (port {port})"
    return f"{where} (database {dsn.get('dbname')!r}, user {dsn.get('user')!r})"


def probe(dsn: Mapping[str, Any], timeout: float) -> None:
    """Connect to the server once and hang up, all within ``timeout`` seconds.

    :raises SQLNotifyListenerError: naming the address, when the server
        refuses, fails the startup exchange, or does not finish it in time.
    """
    import psycopg2
    import psycopg2.extensions as ext

    address = describe_address(dsn)
    deadline = time.monotonic() + max(0.0, timeout)
    try:
        conn = psycopg2.connect(async_=1, **dsn)
    except psycopg2.Error as exc:
        raise _error(address, exc) from exc
    try:
        while True:
            try:
                state = conn.poll()
            except psycopg2.Error as exc:
                raise _error(address, exc) from exc
            if state == ext.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SQLNotifyListenerError(
                    f"cannot connect to PostgreSQL at {address}: no answer to the startup"
                    f" exchange within {timeout:g}s (start_timeout); is a PostgreSQL server"
                    " listening there, and not another service?"
                )
            poller = select.poll()
            poller.register(
                conn.fileno(), select.POLLOUT if state == ext.POLL_WRITE else select.POLLIN
            )
            poller.poll(min(remaining, 0.5) * 1000.0)
    finally:
        conn.close()


def _error(address: str, exc: BaseException) -> SQLNotifyListenerError:
    text = str(exc).strip()
    reason = (
        " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__
    )
    hint = ""
    lowered = reason.lower()
    if "invalid response" in lowered or "expected authentication" in lowered:
        hint = "; the service at that address does not speak PostgreSQL's protocol"
    elif "refused" in lowered:
        hint = "; is the server running, and are host and port right?"
    return SQLNotifyListenerError(f"cannot connect to PostgreSQL at {address}: {reason}{hint}")


def wait_fd(fd: int, timeout: float, *, write: bool = False) -> bool:
    """Wait until ``fd`` is readable (or writable); ``False`` on timeout.

    ``select.poll`` rather than ``select.select``: it works for descriptors
    above ``FD_SETSIZE`` (1024), which busy applications reach.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000.0))


def _wait(conn: Any, deadline: float) -> None:
    import psycopg2.extensions as ext

    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            conn.close()
            raise TimeoutError("the server did not answer in time")
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLOUT if state == ext.POLL_WRITE else select.POLLIN)
        poller.poll(remaining * 1000.0)


def connect_bounded(dsn: dict[str, Any], timeout: float) -> Any:
    """An asynchronous-mode psycopg2 connection whose every wait is bounded."""
    import psycopg2

    try:
        conn = psycopg2.connect(async_=1, **dsn)
        try:
            _wait(conn, time.monotonic() + timeout)
        except BaseException:
            conn.close()
            raise
    except psycopg2.Error as exc:
        refused = refused_by_pgbouncer(exc)
        if refused is not None:
            raise refused from exc
        raise
    return conn


class BoundedCursor:
    """A cursor whose ``execute`` waits for the answer at most ``timeout`` seconds."""

    def __init__(self, conn: Any, timeout: float) -> None:
        self._conn = conn
        self._cur = conn.cursor()
        self._timeout = timeout

    def execute(self, sql: str, params: Any = None) -> None:
        self._cur.execute(sql, params)
        _wait(self._conn, time.monotonic() + self._timeout)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()  # type: ignore[no-any-return]
