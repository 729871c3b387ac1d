"""The SQLite listener's source: notices commits and reads the change log.

Used by the listener thread only.  ``PRAGMA data_version`` tells cheaply
whether another connection committed; only then are the log rows after the
reader's position fetched.  Between checks the source sleeps on a file watch
of the file each commit writes, or polls (see :mod:`.wake`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..._journal import JournalReader
from ..._pacer import Pacer
from ...exceptions import SQLNotifyListenerError
from ..base import RawNotification, Source, SourceDisconnected
from .connection import DatabaseFile, is_busy
from .consumers import prune_upto
from .options import SQLiteOptions
from .sql import (
    BUSY_TIMEOUT_SQL,
    DATA_VERSION_SQL,
    END_SQL,
    FETCH_SQL,
    GENERATION_SQL,
    JOURNAL_MODE_SQL,
    LOG_TABLE,
    PRUNE_SQL,
)
from .wake import FileWatch

__all__ = ["LogCursor", "SQLiteSource", "prune_log"]


def prune_log(
    conn: Any, retention: float, upto: int | None, *, batch: int = 1000, budget: float = 0.02
) -> int:
    """Delete rows older than ``retention`` seconds (and at most ``upto``), batch by batch.

    Each batch is its own short transaction; stops after ``budget`` seconds.
    Raises the driver's ``OperationalError`` when the database is busy.
    """
    cutoff = time.time() - retention
    limit = upto if upto is not None else 2**62
    deleted = 0
    stop = time.monotonic() + budget
    while True:
        n: int = conn.execute(PRUNE_SQL, (batch, cutoff, limit)).rowcount
        deleted += max(n, 0)
        if n < batch or time.monotonic() >= stop:
            return deleted


@dataclasses.dataclass
class LogCursor:
    """Where the listener is in the change log; it survives reconnects.

    ``reader`` holds the position (``None`` until the first source of a run
    makes one); ``generation`` marks the copy of the log it reads, so a
    source that finds the log recreated starts the new one from its start.
    """

    reader: JournalReader | None = None
    generation: str | None = None


class SQLiteSource(Source):
    """The listener's connection: notices commits and reads the change log.

    The class attributes tune the waiting; tests and benchmarks may change them.
    """

    #: The change log's reader (its position survives reconnects).
    reader: JournalReader

    #: First pause of the polling fallback after activity; it doubles up to
    #: the ``sqlite_poll_interval`` option while nothing happens.
    MIN_POLL = 0.001
    #: Listener reads wait this long for a lock before trying again later.
    READ_BUSY_TIMEOUT = 0.1
    #: Rows handed to the dispatcher per wait at most.
    MAX_ROWS = 10_000
    #: Time spent pruning per turn at most.
    PRUNE_BUDGET = 0.02

    def __init__(
        self,
        database: DatabaseFile,
        options: SQLiteOptions,
        channels: Sequence[str],
        cursor: LogCursor,
        *,
        log: logging.Logger,
        consumer_expiry: float,
        start_position: Callable[[int], int],
        on_gap: Callable[[int, int], None] | None,
    ) -> None:
        """Open the listener's connection and find where to read.

        ``cursor`` carries the last source's place in the log (a fresh start,
        with no reader yet, begins at ``start_position(end)``); this source
        reads on from there and keeps it up to date.
        """
        self._path = database.path
        self._log = log
        self._error = database.driver.Error
        self._operational = database.driver.OperationalError
        self._consumer_expiry = consumer_expiry
        self._retention = options.retention
        self._prune_every = min(60.0, max(0.05, options.retention / 4))
        self._next_prune = time.monotonic() + min(1.0, self._prune_every)
        conn = database.connect(self.READ_BUSY_TIMEOUT)
        self._conn = conn
        self._inotify: FileWatch | None = None
        try:
            execute = conn.execute
            try:
                # The version first: a commit landing between the two reads is
                # then seen as a change and read, never skipped.
                self._version = execute(DATA_VERSION_SQL).fetchone()[0]
                row = execute(END_SQL, (LOG_TABLE,)).fetchone()
                end = row[0] if row else 0
                row = execute(GENERATION_SQL, (LOG_TABLE,)).fetchone()
                found = row[0] if row else None
                reader = cursor.reader
                if reader is None:
                    reader = JournalReader(
                        start_position(end),
                        channels,
                        contiguous=True,
                        on_gap=on_gap,
                        log=log,
                    )
                elif cursor.generation is not None and found != cursor.generation:
                    log.warning(
                        "the change log of %s was recreated while the listener was away;"
                        " reading the new one from its start (events written to the old"
                        " one meanwhile are lost)",
                        self._path,
                    )
                    reader.position = 0
                cursor.generation = found
                execute(FETCH_SQL, (reader.position, 1)).fetchall()
                mode = str(execute(JOURNAL_MODE_SQL).fetchone()[0]).lower()
            except self._error as exc:
                raise SQLNotifyListenerError(
                    f"the listener cannot read the change log of {self._path}: {exc}"
                ) from exc
            self.reader = reader
            self.journal_mode = mode
            if options.inotify:
                self._inotify = self._watch(mode)
        except BaseException:
            self.close()
            raise
        self._fetch_sql = FETCH_SQL
        # Read once before trusting data_version: a resumed consumer's
        # backlog was committed before this connection opened.
        self._more = True
        self._recheck = True
        self.pacer = Pacer(self.MIN_POLL, options.poll_interval, watching=self._inotify is not None)
        #: How often the database was busy (locked by a writer) for this source.
        self.busy = 0
        # The position survives reconnects: a new connection resumes where
        # this one stops, so nothing is skipped.
        cursor.reader = reader

    def _watch(self, mode: str) -> FileWatch | None:
        # A commit writes the WAL (WAL mode) or the database file itself;
        # SQLite names the WAL after the real file when the path is a symlink.
        path = os.path.realpath(self._path) + ("-wal" if mode == "wal" else "")
        try:
            return FileWatch(path)
        except ImportError:
            self._log.debug("inotify_simple is not installed: the SQLite listener polls")
        except OSError as exc:
            self._log.info(
                "cannot watch %s with inotify (%s): the SQLite listener polls", path, exc
            )
        return None

    @property
    def uses_inotify(self) -> bool:
        """Whether the source sleeps on inotify (else it polls)."""
        return self._inotify is not None

    def _fetch(self, after: int, limit: int) -> Sequence[tuple[int, str, str]]:
        rows: Sequence[tuple[int, str, str]] = self._conn.execute(
            self._fetch_sql, (after, limit)
        ).fetchall()
        return rows

    def _check(self) -> list[RawNotification]:
        """Read new rows if another connection committed since the last check."""
        if not self._more:
            version = self._conn.execute(DATA_VERSION_SQL).fetchone()[0]
            if version == self._version:
                return []
            self._version = version
        reader = self.reader
        items = reader.read(self._fetch, self.MAX_ROWS)
        self._more = reader.more
        return items

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        try:
            return self._wait(timeout, wake_fd)
        except self._operational as exc:
            if is_busy(exc):
                # A writer holds a lock SQLite makes readers wait for (only
                # outside WAL mode, or during recovery): try again shortly.
                self._log.debug("the SQLite listener found the database busy: %s", exc)
                self.busy += 1
                self._recheck = True
                self.pacer.woke()
                return ()
            raise SourceDisconnected(f"SQLite error: {exc}") from exc
        except self._error as exc:
            raise SourceDisconnected(f"SQLite error: {exc}") from exc

    def _wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        pacer = self.pacer
        if self._recheck:
            # The last wait found changes (or failed): more may have landed
            # since.  After an empty check, checking again at once is wasted.
            items = self._check()
            if items or self._more:
                pacer.found()
                return items
            self._recheck = False
        now = time.monotonic()
        if now >= self._next_prune:
            self._prune(now)
        ino = self._inotify
        fds = [wake_fd] if ino is None else [wake_fd, ino.fd]
        ready, _, _ = select.select(fds, [], [], pacer.pause(timeout))
        if ino is not None and ino.fd in ready and not ino.drain():
            self._log.info("the SQLite listener lost its inotify watch; polling instead")
            ino.close()
            self._inotify = None
            pacer.watching = False
        items = self._check()
        if items:
            self._recheck = True
            pacer.found()
        elif ready:
            pacer.woke()
        else:
            pacer.slept()
        return items

    def _prune(self, now: float) -> None:
        # Pruning can wait: while a writer holds the lock, give up at once
        # instead of keeping the listener from its reads.
        conn = self._conn
        conn.execute(BUSY_TIMEOUT_SQL.format(milliseconds=0))
        try:
            deleted = prune_log(
                conn,
                self._retention,
                prune_upto(conn, self.reader.position, self._consumer_expiry, self._operational),
                budget=self.PRUNE_BUDGET,
            )
        except self._operational as exc:
            if not is_busy(exc):
                raise
            self.busy += 1
            self._next_prune = now + min(1.0, self._prune_every)
            return
        finally:
            conn.execute(BUSY_TIMEOUT_SQL.format(milliseconds=int(self.READ_BUSY_TIMEOUT * 1000)))
        if deleted:
            self._log.debug("pruned %d change log rows", deleted)
        # More to do (the budget ran out): come back soon.
        self._next_prune = now + (0.25 if deleted >= 1000 else self._prune_every)

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        try:
            self._conn.close()
        except Exception:  # noqa: S110 - closing a broken connection
            pass
