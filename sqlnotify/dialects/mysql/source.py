"""The MySQL listener's source: polls the change log adaptively, never skipping a late commit.

Used by the listener thread only.  Each check is one indexed query: rows
after the position's ``high`` mark, plus the ids still pending below it
(see :mod:`.position`).  While holes older than :attr:`MySQLSource.SETTLE`
are pending, a locking read with ``NOWAIT`` probes them a few times a second
(a writer still holding one makes it fail at once), to learn which are
final.  Between checks the source sleeps on the listener's wake-up
descriptor, for a pause that starts near a millisecond after activity and
doubles up to ``mysql_poll_interval`` while idle.  Idle, the statements a
turn sends besides its check (pruning, a probe) lengthen the following
pauses, so an idle listener sends one statement per poll interval at most.
"""

from __future__ import annotations

import dataclasses
import logging
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..._journal import JournalReader
from ..._pacer import Pacer
from ...exceptions import SQLNotifyListenerError
from ..base import RawNotification, Source, SourceDisconnected
from . import sql
from .connection import MySQLServer, execute
from .consumers import log_end, prune_log, pruned_mark
from .options import MySQLOptions
from .position import LogPosition

__all__ = ["LogCursor", "MySQLSource"]


class _Counted:
    """A connection that counts the statements sent through it (each opens a cursor)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements = 0

    def cursor(self) -> Any:
        self.statements += 1
        return self._conn.cursor()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@dataclasses.dataclass
class LogCursor:
    """Where the listener is in the change log; it survives reconnects."""

    reader: JournalReader | None = None


class MySQLSource(Source):
    """The listener's connection to the change log."""

    reader: JournalReader

    #: First pause after activity.
    MIN_POLL = 0.001
    #: Rows handed to the dispatcher per wait at most.
    MAX_ROWS = 10_000
    #: Pending ranges kept at most (the oldest are dropped beyond, with a warning).
    MAX_PENDING = 200
    #: A hole is probed only this long after it was noticed: the id's row is
    #: inserted (and locked) by the statement that took the id, within this time.
    SETTLE = 1.0
    #: Time spent pruning per turn at most.
    PRUNE_BUDGET = 0.02

    def __init__(
        self,
        server: MySQLServer,
        db: str,
        options: MySQLOptions,
        channels: Sequence[str],
        cursor: LogCursor,
        *,
        log: logging.Logger,
        consumer_expiry: float,
        on_gap: Callable[[int, int], None] | None,
    ) -> None:
        self._log = log
        self._db = db
        self._error = server.Error
        self._options = options
        self._consumer_expiry = consumer_expiry
        self._prune_every = min(60.0, max(0.05, options.retention / 4))
        self._next_prune = time.monotonic() + min(1.0, self._prune_every)
        self._next_probe = 0.0
        self._operational = server.OperationalError
        self._owed = 0.0
        try:
            self._conn = _Counted(server.connect())
        except self._error as exc:
            raise SourceDisconnected(f"cannot connect to MySQL: {exc}") from exc
        try:
            execute(self._conn, sql.READ_COMMITTED_SQL)
            reader = cursor.reader
            if reader is None:
                reader = JournalReader(
                    log_end(self._conn, db),
                    channels,
                    on_gap=on_gap,
                    log=log,
                    stamp=lambda p: int(p.last),
                )
            execute(self._conn, sql.fetch_sql(db, 0), (0, 1))
        except self._error as exc:
            self.close()
            raise SQLNotifyListenerError(
                f"the listener cannot read the MySQL change log: {exc}"
            ) from exc
        self.reader = reader
        cursor.reader = reader
        self.last_alive = time.time()
        self.pacer = Pacer(self.MIN_POLL, options.poll_interval, watching=False)
        self._recheck = True
        self._fetches = 0
        # Checked at the first read, once the intake listens for gaps.
        self._pruned_checked = False

    def _check_pruned(self, reader: JournalReader) -> None:
        """Report the rows pruning removed before this reader read them (a gap)."""
        mark = pruned_mark(self._conn, self._db)
        pos: LogPosition = reader.position
        if mark is None:
            return
        upto = mark[0]
        lost_pending = [p for p in pos.pending if p[0] <= upto]
        if upto > pos.high or lost_pending:
            first = lost_pending[0][0] if lost_pending else pos.high + 1
            reader.position = LogPosition(
                max(pos.high, upto), tuple(p for p in pos.pending if p[0] > upto), pos.last
            )
            if reader.on_gap is not None:
                reader.on_gap(first, upto)

    # -- reading ------------------------------------------------------------------
    def _settled_before(self, pos: LogPosition) -> float | None:
        """Holes noticed before this (client) time are final (see :mod:`.position`).

        ``None``: no hole is old enough, or a writer still holds one of them.
        Probed *before* the read that re-reads the holes: a transaction that
        commits in between is read.
        """
        if not pos.pending:
            return None
        now = time.monotonic()
        if now < self._next_probe:
            return None
        self._next_probe = now + self.SETTLE / 4
        cutoff = time.time() - self.SETTLE
        old = [p for p in pos.pending if p[2] < cutoff]
        if not old:
            return None
        params: list[Any] = []
        for first, last, _ in old:
            params += [first, last]
        try:
            execute(self._conn, sql.probe_sql(self._db, len(old)), params)
        except self._operational as exc:
            if exc.args and exc.args[0] in sql.LOCKED_ERRORS:
                return None  # a writer still holds one: wait
            raise
        return cutoff

    def _fetch(self, after: LogPosition, limit: int) -> list[tuple[Any, str, str | None]]:
        before = self._settled_before(after) if self._fetches == 0 else None
        self._fetches += 1
        start, dropped = after.trim(self.MAX_PENDING)
        if dropped:
            self._log.warning(
                "the MySQL listener gave up waiting for %d ranges of change-log ids (more than"
                " %d pending): a transaction still open on them would be missed",
                dropped,
                self.MAX_PENDING,
            )
        rows = execute(
            self._conn,
            sql.fetch_sql(self._db, len(start.pending)),
            (*start.params(), limit),
        )
        out: list[tuple[Any, str, str | None]] = []
        pos = start
        seen_at: float | None = None
        for row_id, channel, payload in rows:
            rid = int(row_id)
            if rid > pos.high + 1 and seen_at is None:
                seen_at = time.time()
            pos = pos.after(rid, seen_at if seen_at is not None else 0.0)
            out.append((pos, channel, payload))
        final = pos if before is None else pos.settle(before)
        if final is not pos or (start is not after and not out):
            # Holes found final (or given up): move the position with a row of no payload.
            out.append((final, "", None))
        return out

    def _check(self) -> list[RawNotification]:
        if not self._pruned_checked:
            self._check_pruned(self.reader)
            self._pruned_checked = True
        self._fetches = 0
        items: list[RawNotification] = self.reader.read(self._fetch, self.MAX_ROWS)
        self.last_alive = time.time()
        return items

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        try:
            return self._wait(timeout, wake_fd)
        except self._error as exc:
            raise SourceDisconnected(f"MySQL error: {exc}") from exc

    def _wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        pacer = self.pacer
        if self._recheck:
            items = self._check()
            if items or self.reader.more:
                pacer.found()
                return items
            self._recheck = False
        sent = self._conn.statements
        now = time.monotonic()
        if now >= self._next_prune:
            self._prune(now)
        pause = pacer.pause(timeout)
        idle = pause >= pacer.max_poll
        if idle and self._owed > 0:
            # The statements an idle turn sent besides its check (pruning, the
            # pruned mark, hole probes) are paid for with longer pauses: idle,
            # the listener sends one statement per poll interval at most.
            longer = min(timeout, pause + self._owed)
            self._owed -= longer - pause
            pause = longer
        ready, _, _ = select.select([wake_fd], [], [], pause)
        items = self._check()
        if idle and not items:
            self._owed += max(0, self._conn.statements - sent - 1) * pacer.max_poll
        if items:
            self._recheck = True
            pacer.found()
        elif ready:
            pacer.woke()
        else:
            pacer.slept()
        return items

    def _prune(self, now: float) -> None:
        pos: LogPosition = self.reader.position
        deleted = prune_log(
            self._conn,
            self._db,
            self._options.retention,
            pos.low,
            self._consumer_expiry,
            budget=self.PRUNE_BUDGET,
        )
        if deleted:
            self._log.debug("pruned %d change log rows", deleted)
        # Other listeners prune too (up to their own positions).
        self._pruned_checked = False
        self._next_prune = now + (0.25 if deleted >= 1000 else self._prune_every)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: S110 - closing a broken connection
            pass
