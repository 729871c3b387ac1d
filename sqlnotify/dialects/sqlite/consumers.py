"""Consumers of a SQLite change log: saved positions, one process per name, retention.

SQLite's change log is already a journal: every watch is read from it in
order, and the listener's position survives reconnects.  This adds what a
named consumer needs: its position saved in the database file (table
``sqlnotify_consumers``), so a restarted process resumes; a lock file, so
one process at a time reads under one name; and the oldest position a
known consumer still needs, which pruning never passes (:func:`prune_upto`).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..._names import digest
from ...exceptions import SQLNotifyListenerError
from .connection import DatabaseFile
from .sql import CONSUMERS_SQL, END_SQL, FETCH_SQL, LOAD_SQL, LOG_TABLE, OLDEST_SQL, SAVE_SQL

__all__ = ["SQLiteConsumers", "oldest_needed", "prune_upto"]


def oldest_needed(conn: Any, consumer_expiry: float, missing: type[Exception]) -> int | None:
    """The smallest position held by a consumer seen within ``consumer_expiry`` seconds.

    ``missing`` is the driver's error for a missing table (no consumer yet).
    """
    try:
        row = conn.execute(OLDEST_SQL, (time.time() - consumer_expiry,)).fetchone()
    except missing:
        return None
    return int(row[0]) if row and row[0] is not None else None


def prune_upto(conn: Any, position: int, consumer_expiry: float, missing: type[Exception]) -> int:
    """The last position pruning may remove: at most ``position``, none a known consumer needs."""
    oldest = oldest_needed(conn, consumer_expiry, missing)
    return position if oldest is None else min(position, oldest)


class SQLiteConsumers:
    """The consumer side of a SQLite change log (used through ``SQLiteDialect.journal()``)."""

    def __init__(self, database: DatabaseFile) -> None:
        self._db = database
        self._lock_fd: int | None = None

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        db = self._db
        with db.connection() as conn:
            return db.retry(lambda: fn(conn))

    def ensure(self) -> None:
        self._run(lambda conn: conn.execute(CONSUMERS_SQL))

    def stamp(self, position: int) -> int:
        return position

    def start_position(self) -> int:
        def q(conn: Any) -> int:
            try:
                row = conn.execute(END_SQL, (LOG_TABLE,)).fetchone()
            except self._db.driver.OperationalError:
                return 0  # no AUTOINCREMENT table yet: nothing was ever logged
            return int(row[0]) if row else 0

        return int(self._run(q))

    def load(self, consumer: str) -> tuple[int, dt.datetime] | None:
        row = self._run(lambda conn: conn.execute(LOAD_SQL, (consumer,)).fetchone())
        if row is None:
            return None
        return int(row[0]), dt.datetime.fromtimestamp(row[1], dt.timezone.utc)

    def save(self, consumer: str, position: int) -> None:
        self._run(lambda conn: conn.execute(SAVE_SQL, (consumer, position, time.time())))

    def behind(self, position: int) -> None:
        """SQLite finds removed rows by the holes they leave; nothing to look up."""
        return None

    def read(
        self, after: int, channels: Sequence[str], limit: int
    ) -> list[tuple[int, str, str | None]]:
        """Up to ``limit`` change-log rows after ``after``; other channels' rows only move on.

        The listener's source reads the log itself (``replays_log``); this is
        the same read for a caller without a source.
        """
        wanted = set(channels)

        def q(conn: Any) -> list[tuple[int, str, str | None]]:
            try:
                rows = conn.execute(FETCH_SQL, (after, limit)).fetchall()
            except self._db.driver.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return []  # nothing was ever logged
            return [(seq, ch, payload if ch in wanted else None) for seq, ch, payload in rows]

        result: list[tuple[int, str, str | None]] = self._run(q)
        return result

    def prune(self, retention: float, consumer_expiry: float) -> int:
        """The listener's source prunes the change log itself."""
        return 0

    # -- one process per consumer name ---------------------------------------
    def acquire(self, consumer: str) -> None:
        """Lock ``consumer`` for this process (a lock file next to the database)."""
        import fcntl

        path = f"{self._db.path}-sqlnotify-{digest(consumer, 12)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SQLNotifyListenerError(
                f"consumer {consumer!r} is already active in another process; one consumer"
                " name is read by one process at a time (use another name for an independent"
                " reader)"
            ) from exc
        self._lock_fd = fd

    def close(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the lock
