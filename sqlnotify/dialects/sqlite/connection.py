"""The database file: its path, the SQLite module, and the connections to it.

sqlnotify's connections are made with the same SQLite module as the
application's engine (:func:`driver_for`).  :class:`DatabaseFile` keeps
one shared connection for installation, ``notify()`` and the consumer
positions, and opens the listener's own (:meth:`DatabaseFile.connect`).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from ...exceptions import SQLNotifyConfigurationError, SQLNotifyException, SQLNotifyListenerError
from .sql import BEGIN_SQL, COMMIT_SQL, ROLLBACK_SQL

__all__ = ["DatabaseFile", "database_path", "driver_for", "is_busy"]


def driver_for(engine: sa.Engine) -> Any:
    """The SQLite module the engine's driver uses (``sqlite3`` or ``pysqlite3``).

    sqlnotify's own connections must use the same copy of the SQLite library
    as the application: two copies in one process do not see each other's
    POSIX locks, which corrupts databases (see "How To Corrupt An SQLite
    Database File", section 2.2.1).  To run everything on the recent SQLite
    of ``pysqlite3``, create the engine with ``module=pysqlite3.dbapi2``.
    """
    dbapi = getattr(engine.dialect, "loaded_dbapi", None)
    module = getattr(dbapi, "sqlite", dbapi)  # aiosqlite's adapter keeps the module here
    name = getattr(module, "__name__", "")
    if name.split(".")[0] in ("sqlite3", "pysqlite3") and hasattr(module, "connect"):
        return module
    import sqlite3

    return sqlite3


def is_busy(exc: BaseException) -> bool:
    """Whether an SQLite error means "locked by another connection, try again"."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


_MEMORY_HINT = (
    "sqlnotify needs an SQLite database file: an in-memory database cannot be seen by the"
    " listener's own connection. Use a file URL such as 'sqlite:///app.db' (a file in a"
    " temporary directory works well for tests)"
)


def database_path(url: sa.URL) -> str:
    """The absolute file path of an SQLite URL; refuses in-memory databases."""
    database = url.database or ""
    uri = str(url.query.get("uri", "")).lower() in ("true", "1") or database.startswith("file:")
    if uri and "memory" in str(url.query.get("mode", "")):
        raise SQLNotifyConfigurationError(f"{_MEMORY_HINT}; got {url!s}")
    if uri:
        parts = urllib.parse.urlsplit(database)
        params = urllib.parse.parse_qs(parts.query)
        if "memory" in params.get("mode", []):
            raise SQLNotifyConfigurationError(f"{_MEMORY_HINT}; got {url!s}")
        database = urllib.parse.unquote(parts.path if parts.scheme == "file" else database)
    if database in ("", ":memory:"):
        raise SQLNotifyConfigurationError(f"{_MEMORY_HINT}; got {url!s}")
    return os.path.abspath(database)


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: S110 - closing is best effort
            pass


class DatabaseFile:
    """One SQLite database file, reached through ``driver`` (the application's SQLite module).

    :meth:`connection` lends the shared connection to one thread at a time;
    statements on it wait up to ``busy_timeout`` seconds for a lock.
    """

    def __init__(self, path: str, driver: Any, busy_timeout: float) -> None:
        self.path = path
        self.driver = driver
        self.busy_timeout = busy_timeout
        self._conn: Any = None
        self._closer = weakref.finalize(self, _close_quietly, None)
        self._lock = threading.Lock()

    def connect(self, busy_timeout: float) -> Any:
        """A new autocommit connection to the database file (any thread may use it)."""
        try:
            conn = self.driver.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except self.driver.Error as exc:
            raise SQLNotifyListenerError(
                f"cannot open the SQLite database {self.path}: {exc}"
            ) from exc
        return conn

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """The shared connection; the driver's errors become :class:`SQLNotifyException`."""
        with self._lock:
            if self._conn is None:
                self._conn = self.connect(self.busy_timeout)
                # A notifier used only to install (never started, never
                # stopped) still closes its connection once it is dropped.
                self._closer = weakref.finalize(self, _close_quietly, self._conn)
            try:
                yield self._conn
            except self.driver.Error as exc:
                if is_busy(exc):
                    raise SQLNotifyException(
                        f"{self.path} stayed locked by another connection for"
                        f" {self.busy_timeout:g}s ({exc}); try again, or raise the"
                        " sqlite_busy_timeout option"
                    ) from exc
                raise SQLNotifyException(f"SQLite error on {self.path}: {exc}") from exc

    def retry(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` again while the database is busy, up to the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except self.driver.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def transaction(self, conn: Any, work: Callable[[], Any]) -> Any:
        """Run ``work`` in a write transaction on ``conn``, retried while the database is busy."""

        def attempt() -> Any:
            conn.execute(BEGIN_SQL)
            try:
                result = work()
            except BaseException:
                conn.execute(ROLLBACK_SQL)
                raise
            conn.execute(COMMIT_SQL)
            return result

        return self.retry(attempt)

    def close(self) -> None:
        """Close the shared connection (the next use opens a new one)."""
        with self._lock:
            if self._conn is not None:
                self._closer()
                self._conn = None

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connection without touching it."""
        # SQLite forbids using a connection in a child that the parent opened;
        # the child opens its own when it needs one.
        if self._conn is not None:
            self._closer.detach()
        self._conn = None
        self._lock = threading.Lock()
