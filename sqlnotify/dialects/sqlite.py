"""SQLite: row triggers append to a change log; the listener reads it in order.

Each watch's trigger inserts one row into ``sqlnotify_log``: an increasing
sequence number (``AUTOINCREMENT``, so a number is never reused, even after
pruning), the channel, and the same JSON payload PostgreSQL sends.  SQLite
has one writer at a time, so sequence order is commit order.

The listener owns its own connection, made with the same SQLite module as
the application's engine (two copies of the SQLite library in one process
break each other's file locks).  It notices commits with ``PRAGMA data_version`` (a
few microseconds) and then reads the rows after its position.  It sleeps on
inotify (Linux, ``inotify_simple``) watching the write-ahead log, so an idle
listener costs nothing; elsewhere it polls, quickly just after activity and
more slowly while idle.  Commits through the notifier's own engine wake it
directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import select
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from .._journal import JournalReader
from .._names import digest, quote_ident, quote_literal
from .._types import sqlite_value_sql
from .._watch import Watch
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyException, SQLNotifyListenerError
from .base import Dialect, InstallState, RawNotification, Source, SourceDisconnected

__all__ = ["SQLiteDialect", "SQLiteOptions", "SQLiteSource", "database_path", "driver_for"]

LOG_TABLE = "sqlnotify_log"
MARKER = "-- sqlnotify:"
FORMAT_VERSION = 1

LOG_TABLE_SQL = f"""\
CREATE TABLE IF NOT EXISTS {quote_ident(LOG_TABLE)} (
    "seq" INTEGER PRIMARY KEY AUTOINCREMENT,
    "ts" REAL NOT NULL,
    "channel" TEXT NOT NULL,
    "payload" TEXT NOT NULL
)"""

# julianday('now') is the statement's time with millisecond resolution.
TRIGGER_SQL = """\
CREATE TRIGGER {trigger} AFTER {operation}{columns} ON {table} FOR EACH ROW{when}
BEGIN
{comment}INSERT INTO {log} ("ts", "channel", "payload")
SELECT t, {channel}, json_object('ts', t, 'row', json_object({row}))
FROM (SELECT (julianday('now') - 2440587.5) * 86400.0 AS t);
END"""

TRIGGERS_SQL = (
    "SELECT name, tbl_name, sql FROM sqlite_master"
    " WHERE type = 'trigger' AND name LIKE 'sqlnotify\\_%' ESCAPE '\\'"
)
FETCH_SQL = (
    f'SELECT "seq", "channel", "payload" FROM {quote_ident(LOG_TABLE)}'
    ' WHERE "seq" > ? ORDER BY "seq" LIMIT ?'
)
END_SQL = "SELECT seq FROM sqlite_sequence WHERE name = ?"
INSERT_SQL = f'INSERT INTO {quote_ident(LOG_TABLE)} ("ts", "channel", "payload") VALUES (?, ?, ?)'
# Deletes a prefix of at most ``batch`` rows: never a long scan, never a long lock.
PRUNE_SQL = f"""\
DELETE FROM {quote_ident(LOG_TABLE)} WHERE "seq" <= (
    SELECT max("seq") FROM (
        SELECT "seq", "ts" FROM {quote_ident(LOG_TABLE)} ORDER BY "seq" LIMIT ?
    ) WHERE "ts" < ? AND "seq" <= ?
)"""

_OPTION_NAMES = {
    "sqlite_wal": "wal",
    "sqlite_retention": "retention",
    "sqlite_poll_interval": "poll_interval",
    "sqlite_inotify": "inotify",
    "sqlite_busy_timeout": "busy_timeout",
}


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


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _seconds(name: str, value: Any, minimum: float) -> float:
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise SQLNotifyConfigurationError(
            f"{name} must be a number of seconds (or a timedelta) of at least {minimum:g},"
            f" not {value!r}"
        )
    return float(value)


@dataclasses.dataclass(frozen=True)
class SQLiteOptions:
    """The SQLite dialect's options, given to :class:`~sqlnotify.Notifier` as keywords.

    ``sqlite_wal`` (default ``True``)
        Switch the database to write-ahead logging on start, so the
        listener's reads never wait for writers (the setting is stored in the
        file and stays).  ``False`` leaves the journal mode alone.
    ``sqlite_retention`` (default one hour)
        How long change-log rows are kept before listeners prune them.
    ``sqlite_poll_interval`` (default 0.05 s)
        The longest pause between two checks where inotify is unavailable.
    ``sqlite_inotify`` (default ``True``)
        Sleep on inotify where available; ``False`` always polls.
    ``sqlite_busy_timeout`` (default 5 s)
        How long installation and ``notify()`` wait for the write lock.
    """

    wal: bool = True
    retention: float = 3600.0
    poll_interval: float = 0.05
    inotify: bool = True
    busy_timeout: float = 5.0

    @classmethod
    def parse(cls, options: dict[str, Any]) -> SQLiteOptions:
        values: dict[str, Any] = {}
        for key, value in options.items():
            field = _OPTION_NAMES.get(key)
            if field is None:
                valid = ", ".join(sorted(_OPTION_NAMES))
                raise SQLNotifyConfigurationError(
                    f"unknown option {key!r} for an SQLite notifier; valid options: {valid}"
                )
            if field in ("wal", "inotify"):
                if not isinstance(value, bool):
                    raise SQLNotifyConfigurationError(f"{key} must be True or False, not {value!r}")
                values[field] = value
            elif field == "retention":
                values[field] = _seconds(key, value, 0.0)
            elif field == "poll_interval":
                values[field] = _seconds(key, value, 0.001)
            else:
                values[field] = _seconds(key, value, 0.0)
        return cls(**values)


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


class SQLiteDialect(Dialect):
    """SQLite 3.38 or later (JSON functions built in) on a local file.

    Every program that writes to a watched table runs the triggers with its
    own SQLite library, so each needs 3.38 or later too.
    """

    name = "sqlite"
    max_payload = None
    binary_encoding = "hex"

    def __init__(self, engine: sa.Engine, log: Any, options: dict[str, Any]) -> None:
        self.user_engine = engine
        self.path = database_path(engine.url)
        self.settings = SQLiteOptions.parse(options)
        self._own_engine: sa.Engine | None = None
        if engine.dialect.driver != "pysqlite":
            # aiosqlite and others: reflection goes through a small engine of our own.
            self._own_engine = sa.create_engine(
                sa.URL.create("sqlite+pysqlite", database=self.path), poolclass=sa.pool.NullPool
            )
            engine = self._own_engine
        super().__init__(engine, log, options)
        self.driver = driver_for(self.user_engine)
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._wake: Callable[[], None] | None = None
        self._listening = False
        self._reader: JournalReader | None = None

    # -- connections ----------------------------------------------------------
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
    def _connection(self) -> Iterator[Any]:
        with self._conn_lock:
            if self._conn is None:
                self._conn = self.connect(self.settings.busy_timeout)
            try:
                yield self._conn
            except self.driver.Error as exc:
                raise SQLNotifyException(f"SQLite error on {self.path}: {exc}") from exc

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` again while the database is busy, up to the busy timeout."""
        deadline = time.monotonic() + self.settings.busy_timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except self.driver.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _transaction(self, conn: Any, work: Callable[[], Any]) -> Any:
        def attempt() -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return self._retry(attempt)

    def close(self) -> None:
        self.detach()
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: S110 - closing is best effort
                    pass
                self._conn = None
        self._reader = None
        if self._own_engine is not None:
            self._own_engine.dispose()

    # -- same-process wake-up -------------------------------------------------
    def attach(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        if not self._listening:
            sa.event.listen(self.user_engine, "commit", self._on_commit)
            self._listening = True

    def detach(self) -> None:
        self._wake = None
        if self._listening:
            sa.event.remove(self.user_engine, "commit", self._on_commit)
            self._listening = False

    def _on_commit(self, conn: Any) -> None:
        # Runs just before the commit reaches SQLite: the listener polls
        # briefly after a wake-up, so it sees the commit as soon as it lands.
        wake = self._wake
        if wake is not None:
            wake()

    # -- SQL ------------------------------------------------------------------
    def _check(self, watch: Watch) -> None:
        if watch.schema not in (None, "main"):
            raise SQLNotifyConfigurationError(
                f"cannot watch {watch.describe()}: sqlnotify watches tables of the main SQLite"
                " database only, not of attached databases (schema must be None or 'main')"
            )

    def _trigger_sql(self, watch: Watch, comment: str) -> str:
        self._check(watch)
        ref = "OLD" if watch.operation.value == "delete" else "NEW"
        row = ", ".join(
            quote_literal(c)
            + ", "
            + sqlite_value_sql(watch.column_types[c], f"{ref}.{quote_ident(c)}")
            for c in watch.payload_columns
        )
        columns = when = ""
        if watch.trigger_columns:
            columns = " OF " + ", ".join(quote_ident(c) for c in watch.trigger_columns)
            when = " WHEN " + " OR ".join(
                f"OLD.{quote_ident(c)} IS NOT NEW.{quote_ident(c)}" for c in watch.trigger_columns
            )
        return TRIGGER_SQL.format(
            trigger=quote_ident(watch.channel),
            operation=watch.operation.value.upper(),
            columns=columns,
            table=quote_ident(watch.table),
            when=when,
            comment=comment,
            log=quote_ident(LOG_TABLE),
            channel=quote_literal(watch.channel),
            row=row,
        )

    def fingerprint(self, watch: Watch) -> str:
        return digest(self._trigger_sql(watch, ""), 32)

    def trigger_sql(self, watch: Watch) -> str:
        """The ``CREATE TRIGGER`` statement, with its metadata comment."""
        meta = {
            "v": FORMAT_VERSION,
            "fp": self.fingerprint(watch),
            "table": watch.table,
            "operation": watch.operation.value,
            "channel": watch.channel,
            "label": watch.channel_label,
            "keys": list(watch.primary_keys),
            "columns": list(watch.extra_columns),
            "trigger_columns": list(watch.trigger_columns),
        }
        # ensure_ascii: no newline or other character can end the comment early.
        text = json.dumps(meta, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
        return self._trigger_sql(watch, MARKER + text + "\n")

    def ddl(self, watch: Watch) -> list[str]:
        return [
            LOG_TABLE_SQL,
            f"DROP TRIGGER IF EXISTS {quote_ident(watch.channel)}",
            self.trigger_sql(watch),
        ]

    # -- installation ---------------------------------------------------------
    def _installed(self, conn: Any) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for name, table, sql in conn.execute(TRIGGERS_SQL).fetchall():
            meta: dict[str, Any] | None = None
            for line in (sql or "").splitlines():
                if line.startswith(MARKER):
                    try:
                        meta = json.loads(line[len(MARKER) :])
                    except ValueError:
                        meta = {}
                    break
            if meta is not None:
                found[name] = {"name": name, "table": table, "meta": meta}
        return found

    def _log_exists(self, conn: Any) -> bool:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)
        ).fetchone()
        return row is not None

    def _state(self, watch: Watch, found: dict[str, dict[str, Any]]) -> InstallState:
        entry = found.get(watch.channel)
        if entry is None or entry["table"].lower() != watch.table.lower():
            return InstallState(watch, "missing")
        fp = entry["meta"].get("fp")
        if fp != self.fingerprint(watch):
            return InstallState(watch, "outdated", fp)
        return InstallState(watch, "unchanged", fp)

    def _ensure_wal(self, conn: Any) -> None:
        if not self.settings.wal:
            return
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                self.log.warning(
                    "could not switch %s to WAL mode (it stays in %r mode): the listener's"
                    " reads may briefly delay writers",
                    self.path,
                    mode,
                )

    def install(
        self, watches: Sequence[Watch], *, revoke: bool, cleanup_first: bool
    ) -> list[InstallState]:
        for watch in watches:
            self._check(watch)
        with self._connection() as conn:
            self._ensure_wal(conn)
            found = self._installed(conn)
            states = [self._state(w, found) for w in watches]
            todo = [s for s in states if s.state == "missing" or (s.state == "outdated" and revoke)]
            if not todo and not cleanup_first and self._log_exists(conn):
                return states

            def work() -> list[InstallState]:
                if cleanup_first:
                    self._cleanup(conn, watches)
                conn.execute(LOG_TABLE_SQL)
                found = self._installed(conn)
                result = []
                for watch in watches:
                    state = self._state(watch, found)
                    if state.state == "missing" or (state.state == "outdated" and revoke):
                        for stmt in self.ddl(watch)[1:]:
                            conn.execute(stmt)
                        new = "replaced" if state.state == "outdated" else "installed"
                        result.append(InstallState(watch, new, state.installed_fingerprint))
                    else:
                        result.append(state)
                return result

            result: list[InstallState] = self._transaction(conn, work)
        return result

    def uninstall(self, watches: Sequence[Watch]) -> int:
        with self._connection() as conn:

            def work() -> int:
                found = self._installed(conn)
                dropped = 0
                for watch in watches:
                    if watch.channel in found:
                        conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(watch.channel)}")
                        dropped += 1
                return dropped

            return int(self._transaction(conn, work))

    def _cleanup(self, conn: Any, watches: Sequence[Watch]) -> int:
        tables = {w.table.lower() for w in watches}
        dropped = 0
        for name, entry in self._installed(conn).items():
            if entry["table"].lower() in tables:
                conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(name)}")
                dropped += 1
        return dropped

    def cleanup(self, watches: Sequence[Watch]) -> int:
        with self._connection() as conn:
            return int(self._transaction(conn, lambda: self._cleanup(conn, watches)))

    def status(self) -> list[dict[str, Any]]:
        rows = []
        with self._connection() as conn:
            for name, entry in sorted(self._installed(conn).items()):
                meta = entry["meta"]
                rows.append(
                    {
                        "schema": None,
                        "table": entry["table"],
                        "operation": meta.get("operation"),
                        "channel": meta.get("channel", name),
                        "function": None,
                        "fingerprint": meta.get("fp"),
                        "triggers": [name],
                        "state": "installed",
                    }
                )
        return rows

    def log_info(self) -> dict[str, Any]:
        """The change log's size: ``rows``, ``first`` and ``last`` sequence numbers."""
        with self._connection() as conn:
            if not self._log_exists(conn):
                return {"rows": 0, "first": None, "last": None}
            count, first, last = conn.execute(
                f'SELECT count(*), min("seq"), max("seq") FROM {quote_ident(LOG_TABLE)}'
            ).fetchone()
        return {"rows": count, "first": first, "last": last}

    # -- notifications --------------------------------------------------------
    def send(self, channel: str, payload: str) -> None:
        with self._connection() as conn:
            self._retry(lambda: conn.execute(INSERT_SQL, (time.time(), channel, payload)))
        wake = self._wake
        if wake is not None:
            wake()

    def prune(self, upto: int | None = None) -> int:
        """Delete change-log rows older than the retention period; return how many."""
        with self._connection() as conn:
            if not self._log_exists(conn):
                return 0
            return prune_log(conn, self.settings.retention, upto, budget=0.05)

    def open_source(self, channels: Sequence[str]) -> Source:
        source = SQLiteSource(self, channels, self._reader)
        # The position survives reconnects: a new connection resumes where the
        # last one stopped, so nothing is skipped; a new start() begins afresh.
        self._reader = source.reader
        return source


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


class _Inotify:
    """inotify on the file SQLite writes at each commit (the WAL, or the database)."""

    MASK_NAMES = ("MODIFY", "DELETE_SELF", "MOVE_SELF", "ATTRIB")

    def __init__(self, path: str) -> None:
        from inotify_simple import INotify, flags

        mask = 0
        for name in self.MASK_NAMES:
            mask |= int(getattr(flags, name))
        self._ino = INotify(nonblocking=True)
        try:
            self._ino.add_watch(path, mask)
        except BaseException:
            self._ino.close()
            raise
        self._lost = int(flags.DELETE_SELF) | int(flags.MOVE_SELF) | int(flags.IGNORED)
        self.fd: int = self._ino.fileno()
        self.path = path

    def drain(self) -> bool:
        """Consume pending events; ``False`` when the watched file went away."""
        alive = True
        try:
            for event in self._ino.read(timeout=0):
                if event.mask & self._lost:
                    alive = False
        except (BlockingIOError, OSError):
            pass
        return alive

    def close(self) -> None:
        try:
            self._ino.close()
        except OSError:
            pass


class SQLiteSource(Source):
    """The listener's connection: notices commits and reads the change log.

    The class attributes tune the waiting; tests and benchmarks may change them.
    """

    #: Pauses between checks after a wake-up that found nothing yet: the
    #: commit that caused it may still be landing (an fsync, or the engine's
    #: commit event, which fires just before the commit).
    BURST = (0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512)
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
        self, dialect: SQLiteDialect, channels: Sequence[str], reader: JournalReader | None
    ) -> None:
        self._dialect = dialect
        self._log = dialect.log
        self._error = dialect.driver.Error
        self._operational = dialect.driver.OperationalError
        settings = dialect.settings
        self._retention = settings.retention
        self._max_poll = settings.poll_interval
        self._prune_every = min(60.0, max(0.05, settings.retention / 4))
        self._next_prune = time.monotonic() + min(1.0, self._prune_every)
        conn = dialect.connect(self.READ_BUSY_TIMEOUT)
        self._conn = conn
        self._inotify: _Inotify | None = None
        try:
            execute = conn.execute
            try:
                # The version first: a commit landing between the two reads is
                # then seen as a change and read, never skipped.
                self._version = execute("PRAGMA data_version").fetchone()[0]
                if reader is None:
                    row = execute(END_SQL, (LOG_TABLE,)).fetchone()
                    reader = JournalReader(
                        row[0] if row else 0, channels, contiguous=True, log=self._log
                    )
                execute(FETCH_SQL, (reader.position, 1)).fetchall()
                mode = str(execute("PRAGMA journal_mode").fetchone()[0]).lower()
            except self._error as exc:
                raise SQLNotifyListenerError(
                    f"the listener cannot read the change log of {dialect.path}: {exc}"
                ) from exc
            self.reader = reader
            self.journal_mode = mode
            if settings.inotify:
                self._inotify = self._watch(mode)
        except BaseException:
            self.close()
            raise
        self._fetch_sql = FETCH_SQL
        self._more = False
        self._burst = -1  # index into BURST; -1: not in a burst
        self._poll = self.MIN_POLL
        #: How often the database was busy (locked by a writer) for this source.
        self.busy = 0

    def _watch(self, mode: str) -> _Inotify | None:
        path = self._dialect.path + ("-wal" if mode == "wal" else "")
        try:
            return _Inotify(path)
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
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return []
            self._version = version
        reader = self.reader
        items = reader.read(self._fetch, self.MAX_ROWS)
        self._more = reader.more
        return items  # type: ignore[return-value]

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        try:
            return self._wait(timeout, wake_fd)
        except self._operational as exc:
            if _is_busy(exc):
                # A writer holds a lock SQLite makes readers wait for (only
                # outside WAL mode, or during recovery): try again shortly.
                self._log.debug("the SQLite listener found the database busy: %s", exc)
                self.busy += 1
                self._burst = 0
                return ()
            raise SourceDisconnected(f"SQLite error: {exc}") from exc
        except self._error as exc:
            raise SourceDisconnected(f"SQLite error: {exc}") from exc

    def _wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        now = time.monotonic()
        if now >= self._next_prune:
            self._prune(now)
        items = self._check()
        if items or self._more:
            self._activity()
            return items
        ino = self._inotify
        burst = self._burst
        if burst >= 0:
            pause = self.BURST[burst]
        elif ino is not None:
            pause = timeout
        else:
            pause = self._poll
        fds = [wake_fd] if ino is None else [wake_fd, ino.fd]
        ready, _, _ = select.select(fds, [], [], min(timeout, pause))
        if ino is not None and ino.fd in ready and not ino.drain():
            self._log.info("the SQLite listener lost its inotify watch; polling instead")
            ino.close()
            self._inotify = None
        items = self._check()
        if items:
            self._activity()
        elif ready:
            self._burst = 0
        elif burst >= 0:
            self._burst = burst + 1 if burst + 1 < len(self.BURST) else -1
        elif ino is None:
            self._poll = min(self._poll * 2, self._max_poll)
        return items

    def _activity(self) -> None:
        # Something happened: more may follow soon, and with inotify the
        # wake-up for the next commit may already have been consumed.
        self._burst = 0
        self._poll = self.MIN_POLL

    def _prune(self, now: float) -> None:
        try:
            deleted = prune_log(
                self._conn, self._retention, self.reader.position, budget=self.PRUNE_BUDGET
            )
        except self._operational as exc:
            if not _is_busy(exc):
                raise
            self.busy += 1
            self._next_prune = now + min(1.0, self._prune_every)
            return
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
