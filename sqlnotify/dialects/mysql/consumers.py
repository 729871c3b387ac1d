"""Consumers of the MySQL change log: saved positions, one process per name, retention.

A named consumer's :class:`~.position.LogPosition` is saved as JSON in
``sqlnotify_consumers`` (with its ``low`` mark, which pruning never
passes); one process at a time reads under a name, held by a ``GET_LOCK``
on a connection kept open for the run.  Pruning records the highest id it
removed (``sqlnotify_log_state``), so a reader that finds it lost rows it
had not read reports a gap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from ..._names import digest
from ...exceptions import SQLNotifyListenerError
from . import sql
from .connection import MySQLServer, execute, rowcount
from .position import LogPosition

__all__ = [
    "MySQLConsumers",
    "ensure_log",
    "hold_consumer",
    "log_end",
    "prune_log",
    "pruned_mark",
    "release_consumer",
]


def ensure_log(conn: Any, db: str) -> None:
    """Create the change log and its state table if missing."""
    execute(conn, sql.log_table_sql(db))
    execute(conn, sql.state_table_sql(db))


def oldest_needed(conn: Any, db: str, consumer_expiry: float) -> int | None:
    """The smallest ``low`` of a consumer seen within ``consumer_expiry`` seconds."""
    try:
        rows = execute(conn, sql.oldest_consumer_sql(db), (time.time() - consumer_expiry,))
    except Exception as exc:  # no consumer table yet
        if "doesn't exist" not in str(exc):
            raise
        return None
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def prune_log(
    conn: Any,
    db: str,
    retention: float,
    upto: int,
    consumer_expiry: float,
    *,
    batch: int = 1000,
    budget: float = 0.02,
) -> int:
    """Delete rows older than ``retention`` seconds, up to ``upto`` and none a consumer needs.

    Each batch is its own statement (autocommit); stops after ``budget`` seconds.
    """
    oldest = oldest_needed(conn, db, consumer_expiry)
    if oldest is not None:
        upto = min(upto, oldest)
    cutoff = time.time() - retention
    deleted = 0
    stop = time.monotonic() + budget
    while True:
        rows = execute(conn, sql.prune_bound_sql(db), (upto, cutoff, batch))
        bound = rows[0][0] if rows else None
        if bound is None:
            return deleted
        # The mark first: a reader never misses a removal it should report.
        execute(conn, sql.mark_pruned_sql(db), (int(bound), time.time()))
        n = rowcount(conn, sql.prune_sql(db), (int(bound), cutoff))
        deleted += max(n, 0)
        if n < batch or time.monotonic() >= stop:
            return deleted


def pruned_mark(conn: Any, db: str) -> tuple[int, float] | None:
    """The highest id pruning removed and when; ``None`` if it never removed any."""
    rows = execute(conn, sql.pruned_sql(db))
    return (int(rows[0][0]), float(rows[0][1])) if rows else None


def log_end(conn: Any, db: str) -> LogPosition:
    """The position at the log's end (past rows pruning removed, too)."""
    end = int(execute(conn, sql.end_sql(db))[0][0])
    mark = pruned_mark(conn, db)
    if mark is not None:
        end = max(end, mark[0])
    return LogPosition(end, (), end)


def hold_consumer(server: MySQLServer, key: str, consumer: str, prefix: str = "") -> Any:
    """A connection holding the named lock of ``consumer`` (``key`` names it in its
    database), kept open to keep the lock; raises if another process holds it."""
    conn = server.connect()
    name = f"sqlnotify:{prefix}{digest(key, 40)}"
    try:
        got = execute(conn, sql.GET_LOCK_SQL, (name, 0))[0][0]
    except BaseException:
        conn.close()
        raise
    if got != 1:
        conn.close()
        raise SQLNotifyListenerError(
            f"consumer {consumer!r} is already active in another process; one consumer"
            " name is read by one process at a time (use another name for an independent"
            " reader)"
        )
    return conn


def release_consumer(conn: Any) -> None:
    """Close the connection of :func:`hold_consumer` (which releases the lock); never raises."""
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


class MySQLConsumers:
    """The consumer side of the MySQL change log (``MySQLDialect.journal()``)."""

    def __init__(self, server: MySQLServer, db: str) -> None:
        self._server = server
        self._db = db
        self._lock_conn: Any = None

    def _run(self, sql_text: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._server.connection() as conn:
            return execute(conn, sql_text, params)

    def ensure(self) -> None:
        with self._server.connection() as conn:
            ensure_log(conn, self._db)
            execute(conn, sql.consumers_table_sql(self._db))

    def stamp(self, position: LogPosition) -> int:
        return position.last

    def start_position(self) -> LogPosition:
        with self._server.connection() as conn:
            return log_end(conn, self._db)

    def load(self, consumer: str) -> tuple[LogPosition, dt.datetime] | None:
        rows = self._run(sql.load_consumer_sql(self._db), (consumer,))
        if not rows:
            return None
        text, updated = rows[0]
        return LogPosition.loads(text), dt.datetime.fromtimestamp(updated, dt.timezone.utc)

    def save(self, consumer: str, position: LogPosition) -> None:
        self._run(
            sql.save_consumer_sql(self._db),
            (consumer, position.low, position.high, position.dumps(), time.time()),
        )

    def behind(self, position: LogPosition) -> None:
        """The listener's source reports removed rows itself (``replays_log``)."""
        return None

    def read(self, after: LogPosition, channels: Sequence[str], limit: int) -> list[Any]:
        """Up to ``limit`` rows after ``after`` (ids above its ``high`` only)."""
        wanted = set(channels)
        rows = self._run(sql.fetch_sql(self._db, 0), (after.high, limit))
        out: list[Any] = []
        pos = after
        for row_id, channel, payload in rows:
            pos = pos.after(int(row_id), time.time())
            out.append((pos, channel, payload if channel in wanted else None))
        return out

    def prune(self, retention: float, consumer_expiry: float) -> int:
        """Remove a bounded batch of old rows no known consumer needs."""
        with self._server.connection() as conn:
            return prune_log(conn, self._db, retention, 2**62, consumer_expiry, budget=0.5)

    # -- one process per consumer name ---------------------------------------
    def acquire(self, consumer: str) -> None:
        """Hold ``consumer`` for this process (a named lock on a connection kept open)."""
        self._lock_conn = hold_consumer(self._server, f"{self._db}{chr(31)}{consumer}", consumer)

    def close(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        release_consumer(conn)
