"""Consumers of a SQLite change log: saved positions, one process per name, retention.

SQLite's change log is already a journal: every watch is read from it in
order, and the listener's position survives reconnects.  This adds what a
named consumer needs: its position saved in the database file (table
``sqlnotify_consumers``), so a restarted process resumes; a lock file, so
one process at a time reads under one name; and the oldest position a
known consumer still needs, which pruning never passes.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._names import digest
from ..exceptions import SQLNotifyListenerError

if TYPE_CHECKING:
    from .sqlite import SQLiteDialect

__all__ = ["SQLiteJournal"]

CONSUMERS_SQL = """\
CREATE TABLE IF NOT EXISTS "sqlnotify_consumers" (
    "name" TEXT PRIMARY KEY,
    "seq" INTEGER NOT NULL,
    "updated" REAL NOT NULL
)"""
SAVE_SQL = """\
INSERT INTO "sqlnotify_consumers" ("name", "seq", "updated") VALUES (?, ?, ?)
ON CONFLICT ("name") DO UPDATE
SET "seq" = max("seq", excluded."seq"), "updated" = excluded."updated"
"""
LOAD_SQL = 'SELECT "seq", "updated" FROM "sqlnotify_consumers" WHERE "name" = ?'
OLDEST_SQL = 'SELECT min("seq") FROM "sqlnotify_consumers" WHERE "updated" > ?'
END_SQL = "SELECT seq FROM sqlite_sequence WHERE name = 'sqlnotify_log'"
READ_SQL = (
    'SELECT "seq", "channel", "payload" FROM "sqlnotify_log"'
    ' WHERE "seq" > ? ORDER BY "seq" LIMIT ?'
)


def oldest_needed(conn: Any, consumer_expiry: float, missing: type[Exception]) -> int | None:
    """The smallest position held by a consumer seen within ``consumer_expiry`` seconds.

    ``missing`` is the driver's error for a missing table (no consumer yet).
    """
    try:
        row = conn.execute(OLDEST_SQL, (time.time() - consumer_expiry,)).fetchone()
    except missing:
        return None
    return int(row[0]) if row and row[0] is not None else None


class SQLiteJournal:
    """The consumer side of a SQLite change log (used through ``SQLiteDialect.journal()``)."""

    def __init__(self, dialect: SQLiteDialect) -> None:
        self._dialect = dialect
        self._lock_fd: int | None = None

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        dialect = self._dialect
        with dialect._connection() as conn:
            return dialect._retry(lambda: fn(conn))

    def ensure(self) -> None:
        self._run(lambda conn: conn.execute(CONSUMERS_SQL))

    def stamp(self, position: int) -> int:
        return position

    def start_position(self) -> int:
        def q(conn: Any) -> int:
            try:
                row = conn.execute(END_SQL).fetchone()
            except self._dialect.driver.OperationalError:
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
                rows = conn.execute(READ_SQL, (after, limit)).fetchall()
            except self._dialect.driver.OperationalError as exc:
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

        path = f"{self._dialect.path}-sqlnotify-{digest(consumer, 12)}.lock"
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
