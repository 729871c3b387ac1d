"""The PostgreSQL journal of durable watches: tables, reads, positions, retention.

Reads follow PgQ's snapshot windows.  A reader's position is a snapshot
(``xmin:xmax:xip``, see :class:`SnapshotPosition`): every journal row whose
transaction is visible in it has been consumed, and no other.  A read takes
the current snapshot and returns the rows visible in it and not in the
previous one, ordered by journal id (a later writer of the same row waited
for the first writer's commit, so it always got the larger id).  They are
found with two index scans on ``xid``: the range ``[previous xmax, current
xmax)`` and the exact list of the previous snapshot's in-progress
transactions.  A transaction left open anywhere on the server delays only its
own rows, and widens no scan.

Rows are appended by the watches' trigger functions, which run as the role
that installed them (``SECURITY DEFINER``, pinned ``search_path``): writers
need no privilege on these tables.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..._backfill import BackfillMark, BackfillRequest, BackfillState, Page, relation_of
from ..._names import digest, pyformat_safe, qualified
from ..._watch import Watch
from ...exceptions import SQLNotifyException
from .backfill import TablePages
from .probe import BoundedCursor, connect_bounded
from .sql import (
    BACKFILL_ASYNC_COMMIT_SQL,
    BACKFILL_LOAD_SQL,
    BACKFILL_SAVE_SQL,
    BACKFILLS_DDL,
    BACKFILLS_EXIST_SQL,
    BACKFILLS_TABLE,
    COLUMNS_SQL,
    CONSUMERS_TABLE,
    CURRENT_SCHEMA_SQL,
    CURRENT_SNAPSHOT_SQL,
    EXECUTE_WINDOW_AT_SQL,
    EXECUTE_WINDOW_NEW_SQL,
    INSTALL_LOCK_KEY,
    JOURNAL_LOCK_TIMEOUT_SQL,
    JOURNAL_PRUNE_SQL,
    JOURNAL_SESSION_SQL,
    JOURNAL_TABLE,
    LEASES_TABLE,
    LOAD_SQL,
    MIGRATE_SQL,
    PARAM_XACT_LOCK_SQL,
    SAVE_SQL,
    TRY_XACT_LOCK_SQL,
    WINDOW_AT,
    WINDOW_NEW,
    WINDOW_SQL,
    journal_ddl,
    window_query,
)

__all__ = ["PostgresJournal", "SnapshotPosition", "parse_snapshot"]

#: Name of the consumers row that records how far retention pruned.
PRUNED = ".pruned"
PRUNE_LOCK_KEY = int(digest("sqlnotify.prune", 15), 16)
CONSUMER_LOCK_SALT = "sqlnotify.consumer:"


@functools.lru_cache(maxsize=256)
def parse_snapshot(text: str) -> tuple[int, int, frozenset[int]]:
    """``(xmin, xmax, in-progress xids)`` of a ``pg_snapshot``'s text form."""
    try:
        xmin_s, xmax_s, xip_s = text.split(":")
        return int(xmin_s), int(xmax_s), frozenset(int(x) for x in xip_s.split(",") if x)
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"not a pg_snapshot ('xmin:xmax:xip,...'): {text!r}") from exc


class _Parts(NamedTuple):
    snapshot: str
    window: str | None = None
    after: int = 0


class SnapshotPosition(_Parts):
    """How far a reader of the journal got: an opaque, ordered token.

    ``snapshot``: every row whose transaction is visible in it was consumed.
    While a window is read in several pages, ``window`` is the window's end
    snapshot and ``after`` the journal id of the last row consumed in it
    (rows of the window are consumed in id order).  Between windows
    ``window`` is ``None`` and ``after`` only remembers the id of the last
    event, for display.

    Positions of one reader only grow; comparing two tells which is further.
    One is built for every row read, so the constructor does not check its
    arguments: :meth:`parse` does, for stored ones.
    """

    __slots__ = ()

    @classmethod
    def parse(cls, snapshot: str, window: str | None, after: int) -> SnapshotPosition:
        """A position from stored parts, checked (``ValueError`` when malformed)."""
        parse_snapshot(snapshot)
        if window is not None:
            parse_snapshot(window)
        return cls(snapshot, window, int(after))

    def sees(self, xid: int) -> bool:
        """Whether rows of transaction ``xid`` are consumed (visible in ``snapshot``)."""
        xmin, xmax, xip = parse_snapshot(self.snapshot)
        return xid < xmin or (xid < xmax and xid not in xip)

    def key(self) -> tuple[int, int, int, int, int]:
        """What positions are ordered by."""
        xmin, xmax, xip = parse_snapshot(self.snapshot)
        # Snapshots only grow: a later one has a larger xmax, or the same
        # xmax with fewer transactions still in progress.
        inside = self.window is not None
        return (xmax, xmin, -len(xip), int(inside), self.after if inside else 0)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SnapshotPosition):
            return NotImplemented
        return self.key() < other.key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, SnapshotPosition):
            return NotImplemented
        return self.key() <= other.key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, SnapshotPosition):
            return NotImplemented
        return self.key() > other.key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, SnapshotPosition):
            return NotImplemented
        return self.key() >= other.key()

    def __str__(self) -> str:
        if self.window is None:
            return self.snapshot
        return f"{self.snapshot}>{self.window}@{self.after}"


_new_position = tuple.__new__


def _position_json(position: SnapshotPosition) -> list[Any]:
    return [position.snapshot, position.window, position.after]


def _position_parse(data: Any) -> SnapshotPosition:
    snapshot, window, after = data
    return SnapshotPosition.parse(snapshot, window, after)


Rows = list[tuple[SnapshotPosition, str, "str | None"]]


class PostgresJournal:
    """A :class:`~sqlnotify.dialects.base.JournalStore` over one schema's journal tables.

    Holds one autocommit psycopg2 connection of its own (opened on first
    use, reopened after an error), used by the listener thread, and by the
    thread calling ``Notifier.stop`` once the listener has ended; or, after
    :meth:`borrow`, runs on a connection it is lent (the relay's listening
    session).
    """

    CONNECT_TIMEOUT = 5
    STATEMENT_TIMEOUT_MS = 15_000
    #: Client-side bound on each statement: a server (or network path) that
    #: stops answering cannot hold the listener thread longer than this.
    QUERY_TIMEOUT = 20.0
    #: Rows one query asks for at least.  A window larger than a read's
    #: limit is read from this many rows kept in memory, so a long catch-up
    #: scans its window a few times, not once per read.
    PAGE = 50_000

    def __init__(
        self,
        dsn: dict[str, Any],
        schema: str | None,
        on_acquire: Callable[[int, str], None] | None = None,
        *,
        pooled: bool = False,
    ) -> None:
        self._on_acquire = on_acquire
        #: Connected through a transaction pooler: no session state (no
        #: startup ``options``, no PREPARE); the reads are plain statements.
        self.pooled = pooled
        self.dsn = dict(dsn)
        self.dsn["connect_timeout"] = str(self.CONNECT_TIMEOUT)
        self.dsn.setdefault("tcp_user_timeout", "15000")
        if not pooled:
            # A read is a few index probes: planning it again each time costs more
            # than running it, and parallel workers would cost milliseconds to start.
            self.dsn["options"] = (
                self.dsn.get("options", "")
                + f" -c statement_timeout={self.STATEMENT_TIMEOUT_MS}"
                + " -c plan_cache_mode=force_generic_plan -c max_parallel_workers_per_gather=0"
            ).strip()
        self.schema = schema
        names = {
            "journal": pyformat_safe(qualified(schema, JOURNAL_TABLE)),
            "consumers": pyformat_safe(qualified(schema, CONSUMERS_TABLE)),
        }
        # PREPARE runs without parameters: its names are not %-escaped.
        raw = {
            "journal": qualified(schema, JOURNAL_TABLE),
            "consumers": qualified(schema, CONSUMERS_TABLE),
        }
        self._prepare = ";\n".join(
            [
                WINDOW_SQL.format(name=WINDOW_NEW, extra="", cur="pg_current_snapshot()", **raw),
                WINDOW_SQL.format(name=WINDOW_AT, extra=", pg_snapshot", cur="$6", **raw),
            ]
        )
        self._save = SAVE_SQL.format(**names)
        self._load_sql = LOAD_SQL.format(**names)
        self._prune = JOURNAL_PRUNE_SQL.format(**names)
        self._migrate = MIGRATE_SQL.format(**names)
        self._plain = (
            window_query(names["journal"], at=False),
            window_query(names["journal"], at=True),
        )
        self._backfills = pyformat_safe(qualified(schema, BACKFILLS_TABLE))
        self._pages: dict[str, TablePages] = {}
        #: The backfill states last written, by relation (unchanged ones are not rewritten).
        self._written: dict[str, BackfillState] = {}
        self._conn: Any = None
        self._prepared = False
        # A lender of the connection to use instead of one of its own.
        self._lender: Callable[[], Any] | None = None
        self._lent: Any = None
        # Rows of a window read ahead: (window start, window end, rows, complete).
        self._ahead: tuple[str, str, Rows, bool] | None = None

    # -- connection -----------------------------------------------------------
    def borrow(self, lender: Callable[[], Any]) -> None:
        """Run every statement on the asynchronous-mode connection ``lender()`` returns
        (called before each statement: it hands the connection over idle), not on
        one of this store's own, until :meth:`close`, which does not close it.

        Only for a connection in autocommit whose owner is the calling thread:
        the relay lends its listening session (``PostgresSource.connection``).
        """
        self.close()
        self._lender = lender

    def _cursor(self) -> BoundedCursor:
        if self._lender is not None:
            conn = self._lender()
            if conn is not self._lent:
                self._lent, self._prepared = conn, False
                cur = BoundedCursor(conn, self.QUERY_TIMEOUT)
                cur.execute(JOURNAL_SESSION_SQL.format(timeout_ms=self.STATEMENT_TIMEOUT_MS))
            return BoundedCursor(conn, self.QUERY_TIMEOUT)
        if self._conn is None or self._conn.closed:
            self._conn = connect_bounded(self.dsn, self.QUERY_TIMEOUT)
            self._prepared = False
        return BoundedCursor(self._conn, self.QUERY_TIMEOUT)

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self._cursor())
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        self._ahead = None
        self._lender = self._lent = None  # a lent connection stays its owner's
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 - closing a broken connection
                pass

    def _columns(self, cur: Any) -> dict[str, set[str]]:
        cur.execute(CURRENT_SCHEMA_SQL)
        schema = self.schema or cur.fetchone()[0]
        cur.execute(COLUMNS_SQL, (schema, [JOURNAL_TABLE, CONSUMERS_TABLE, LEASES_TABLE]))
        found: dict[str, set[str]] = {}
        for table, column in cur.fetchall():
            found.setdefault(table, set()).add(column)
        return found

    def ensure(self) -> None:
        """Create the tables if missing, and bring a consumers table of the
        first format to this one (under the installation lock, like the
        triggers).  Tables already in place need no CREATE privilege; poll
        mode also needs the leases table (journals made before it had none)."""

        def q(cur: Any) -> None:
            found = self._columns(cur)
            consumers = found.get(CONSUMERS_TABLE, set())
            leases = LEASES_TABLE in found or not self.pooled
            if JOURNAL_TABLE in found and "snapshot" in consumers and leases:
                return
            cur.execute("BEGIN")
            try:
                cur.execute(JOURNAL_LOCK_TIMEOUT_SQL)
                cur.execute(PARAM_XACT_LOCK_SQL, (INSTALL_LOCK_KEY,))
                cur.execute(journal_ddl(self.schema))
                if "snapshot" not in self._columns(cur).get(CONSUMERS_TABLE, set()):
                    cur.execute(self._migrate)
            except BaseException as exc:
                cur.execute("ROLLBACK")
                if not consumers or "snapshot" in consumers:
                    raise
                raise SQLNotifyException(
                    f"the consumers table {qualified(self.schema, CONSUMERS_TABLE)} has the"
                    " format of an earlier sqlnotify (positions as transaction id and journal"
                    " id) and could not be converted to snapshot positions by this role"
                    f" ({exc}); run `sqlnotify install` (or start a notifier) once as the role"
                    " that owns the table"
                ) from exc
            cur.execute("COMMIT")

        self._run(q)

    def consumer_lock_key(self, consumer: str) -> int:
        return int(digest(CONSUMER_LOCK_SALT + (self.schema or "") + "." + consumer, 15), 16)

    def acquire(self, consumer: str) -> None:
        """Have the listener's session take the consumer's lock (see ``on_acquire``).

        The lock is a session advisory lock taken when the listener connects,
        so it is held exactly while a connection reads for the consumer.
        """
        if self._on_acquire is not None:
            self._on_acquire(self.consumer_lock_key(consumer), consumer)

    # -- JournalStore ---------------------------------------------------------
    def stamp(self, position: SnapshotPosition) -> int:
        """The journal id of the event at ``position`` (what ``event.position`` is)."""
        return position.after

    def start_position(self) -> SnapshotPosition:
        """The current snapshot: a new reader starts after everything committed."""

        def q(cur: Any) -> str:
            cur.execute(CURRENT_SNAPSHOT_SQL)
            return str(cur.fetchone()[0])

        return SnapshotPosition.parse(self._run(q), None, 0)

    def read(self, after: SnapshotPosition, channels: Sequence[str], limit: int) -> Rows:
        """The next rows of ``channels`` after ``after``, at most ``limit`` of them.

        Once a window's rows are all returned, a last row without a payload
        carries the position past the window (to its end snapshot).
        """
        rows = self._from_ahead(after, limit)
        if rows is None:
            rows = self._run(lambda cur: self._query(cur, after, channels, limit))
        return rows

    def _from_ahead(self, after: SnapshotPosition, limit: int) -> Rows | None:
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        start, end, rows, complete = ahead
        if (start, end) != (after.snapshot, after.window) or not rows:
            return None
        if rows[0][0].after <= after.after:
            return None  # not where the last read stopped
        return self._hand_out(start, end, rows, complete, limit, after.after)

    def _hand_out(
        self, start: str, end: str, rows: Rows, complete: bool, limit: int, last: int
    ) -> Rows:
        out, rest = rows[:limit], rows[limit:]
        if rest or not complete:
            self._ahead = (start, end, rest, complete) if rest else None
        elif end != start:
            last = out[-1][0].after if out else last
            out.append((SnapshotPosition(end, None, last), "", None))
        return out

    def _query(
        self, cur: Any, after: SnapshotPosition, channels: Sequence[str], limit: int
    ) -> Rows:
        _, prev_xmax, prev_xip = parse_snapshot(after.snapshot)
        page = max(limit, self.PAGE)
        inside = after.window is not None
        params = [
            str(prev_xmax),
            [str(x) for x in sorted(prev_xip)],
            after.after if inside else 0,
            list(channels),
            page + 1,
        ]
        if inside:
            params.append(after.window)
        if self.pooled:
            cur.execute(self._plain[inside], {f"p{n}": v for n, v in enumerate(params, 1)})
        else:
            if not self._prepared:
                cur.execute(self._prepare)  # the tables exist: ensure() ran first
                self._prepared = True
            cur.execute(EXECUTE_WINDOW_AT_SQL if inside else EXECUTE_WINDOW_NEW_SQL, params)
        result = cur.fetchall()
        start, end = after.snapshot, str(result[0][0])
        new, cls = _new_position, SnapshotPosition
        rows: Rows = [(new(cls, (start, end, i)), c, p) for _, i, c, p in result if i is not None]
        complete = len(rows) <= page
        if not complete:
            rows.pop()
        return self._hand_out(start, end, rows, complete, limit, after.after)

    def load(self, consumer: str) -> tuple[SnapshotPosition, dt.datetime] | None:
        """A consumer's saved position and when it was saved."""

        def q(cur: Any) -> Any:
            cur.execute(self._load_sql, (consumer,))
            return cur.fetchone()

        row = self._run(q)
        if row is None:
            return None
        snapshot, window, after, updated = row
        return SnapshotPosition.parse(snapshot, window, after), updated

    def save(self, consumer: str, position: SnapshotPosition | BackfillMark) -> None:
        """Store a position this journal handed out (never moving it backwards).

        A :class:`~sqlnotify._backfill.BackfillMark` also stores its backfill
        states, in the same transaction.
        """
        states: tuple[tuple[str, BackfillState], ...] = ()
        if type(position) is BackfillMark:
            position, states = position
            states = tuple((r, s) for r, s in states if self._written.get(r) != s)
        if not isinstance(position, SnapshotPosition):
            raise TypeError(f"not a journal position: {position!r}")
        params = (consumer, position.snapshot, position.window, position.after)
        if not states:
            self._run(lambda cur: cur.execute(self._save, params))
            return
        # One round trip: the position and the states in one transaction (an
        # error closes the connection, and the transaction with it).
        save = BACKFILL_SAVE_SQL.format(backfills=self._backfills)
        text = ";\n".join(
            ["BEGIN", BACKFILL_ASYNC_COMMIT_SQL, self._save, *[save] * len(states), "COMMIT"]
        )
        values: list[Any] = list(params)
        for relation, state in states:
            values += [consumer, relation, json.dumps(state.to_json(_position_json))]

        def q(cur: Any) -> None:
            cur.execute(text, values)

        self._run(q)
        self._written.update(states)

    # -- backfill -----------------------------------------------------------------
    def backfill_load(self, consumer: str, watch: Watch) -> BackfillState | None:
        """A consumer's saved backfill of ``watch``'s table; ``None`` if it never began one."""
        relation = relation_of(watch)

        def q(cur: Any) -> Any:
            cur.execute(BACKFILLS_EXIST_SQL, (qualified(self.schema, BACKFILLS_TABLE),))
            if not cur.fetchone()[0]:
                cur.execute("BEGIN")
                try:
                    cur.execute(JOURNAL_LOCK_TIMEOUT_SQL)
                    cur.execute(PARAM_XACT_LOCK_SQL, (INSTALL_LOCK_KEY,))
                    cur.execute(BACKFILLS_DDL.format(backfills=self._backfills))
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            cur.execute(BACKFILL_LOAD_SQL.format(backfills=self._backfills), (consumer, relation))
            return cur.fetchone()

        row = self._run(q)
        if row is None:
            return None
        state = BackfillState.from_json(json.loads(row[0]), _position_parse)
        self._written[relation] = state
        return state

    def backfill_begin(
        self, watch: Watch, channels: Sequence[str], start: SnapshotPosition
    ) -> BackfillState:
        """A new backfill of ``watch``'s table from ``start`` (checks the key, estimates)."""
        pages = self._table_pages(watch, channels)
        total = self._run(pages.estimate)
        return BackfillState(start=start, total=total)

    def backfill_page(
        self,
        watch: Watch,
        channels: Sequence[str],
        state: BackfillState,
        request: BackfillRequest,
    ) -> Page:
        """The next page of a backfill (see :class:`~sqlnotify._backfill.Page`)."""
        pages = self._table_pages(watch, channels)
        start: SnapshotPosition = state.start
        _, xmax, xip = parse_snapshot(start.snapshot)
        params = {
            "xmax": str(xmax),
            "xip": [str(x) for x in sorted(xip)],
            "snapshot": start.snapshot,
            "window": start.window,
            "upto": start.after,
        }
        payloads, after, truncates = self._run(
            lambda cur: pages.read(cur, state, request.page_size, params)
        )
        before = [(SnapshotPosition(start.snapshot, None, i), c, p) for i, c, p in truncates]
        return Page(payloads, after, before)

    def _table_pages(self, watch: Watch, channels: Sequence[str]) -> TablePages:
        relation = relation_of(watch)
        pages = self._pages.get(relation)
        if pages is None:
            journal = pyformat_safe(qualified(self.schema, JOURNAL_TABLE))
            pages = self._run(lambda cur: TablePages.build(cur, watch, channels, journal))
            self._pages[relation] = pages
        return pages

    def behind(self, position: SnapshotPosition) -> dt.datetime | None:
        """When retention removed rows ``position`` had not consumed: the newest
        such row's time; ``None`` otherwise."""

        def q(cur: Any) -> Any:
            cur.execute(self._load_sql, (PRUNED,))
            return cur.fetchone()

        row = self._run(q)
        if row is None:
            return None
        newest = parse_snapshot(row[0])[1] - 1
        return None if position.sees(newest) else row[3]

    def prune(self, retention: float, consumer_expiry: float, batch: int = 1000) -> int:
        """Remove a bounded batch of rows past retention that no consumer needs."""

        def q(cur: Any) -> int:
            cur.execute("BEGIN")
            try:
                cur.execute(TRY_XACT_LOCK_SQL, (PRUNE_LOCK_KEY,))
                if not cur.fetchone()[0]:
                    return 0
                params = {
                    "batch": batch,
                    "retention": retention,
                    "expiry": consumer_expiry,
                    "mark": PRUNED,
                }
                cur.execute(self._prune, params)
                return int(cur.fetchone()[0])
            finally:
                cur.execute("COMMIT")

        return self._run(q)  # type: ignore[no-any-return]
