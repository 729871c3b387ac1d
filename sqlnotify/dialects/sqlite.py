"""SQLite: row triggers append to a change log; the listener reads it in order.

Each watch's trigger inserts one row into ``sqlnotify_log``: an increasing
sequence number (``AUTOINCREMENT``, so a number is never reused, even after
pruning), the channel, and the same JSON payload PostgreSQL sends.  SQLite
has one writer at a time, so sequence order is commit order.

The listener's side lives in :mod:`sqlnotify.dialects._sqlite_source`.  It
owns its own connection, made with the same SQLite module as the
application's engine (two copies of the SQLite library in one process break
each other's file locks).  Commits through the notifier's own engine wake it
directly (:meth:`SQLiteDialect.attach`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._journal import JournalReader
from .._names import digest, quote_ident, quote_sqlite_literal
from .._ownership import Policy
from .._values import sqlite_value_sql
from .._watch import Watch, WatchRequest
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyException, SQLNotifyListenerError
from . import _sqlite_owners as owners
from .base import Capabilities, Dialect, InstallState, Settings, Source

if TYPE_CHECKING:
    from .sqlite_journal import SQLiteJournal

__all__ = ["SQLiteDialect", "SQLiteOptions", "database_path", "driver_for", "is_busy"]

LOG_TABLE = "sqlnotify_log"
MARKER = "-- sqlnotify:"
FORMAT_VERSION = 1

# The comment names this copy of the table: a listener that finds a
# different one after a reconnect knows the log was recreated.
LOG_TABLE_SQL = f"""\
CREATE TABLE IF NOT EXISTS {quote_ident(LOG_TABLE)} (
    -- sqlnotify change log {{generation}}
    "seq" INTEGER PRIMARY KEY AUTOINCREMENT,
    "ts" REAL NOT NULL,
    "channel" TEXT NOT NULL,
    "payload" TEXT NOT NULL
)"""


def log_table_sql() -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the change log, with a new generation mark."""
    return LOG_TABLE_SQL.format(generation=uuid.uuid4().hex)


# julianday('now') is the statement's time with millisecond resolution.
# The metadata comment ends the first line, right after the trigger's own
# name: no table or column name comes before it, so none can imitate it.
TRIGGER_SQL = """\
CREATE TRIGGER {trigger}{comment} AFTER {operation}{columns} ON {table} FOR EACH ROW{when}
BEGIN
INSERT INTO {log} ("ts", "channel", "payload")
SELECT t, {channel}, json_object('ts', t, 'row', json_object({row}))
FROM (SELECT (julianday('now') - 2440587.5) * 86400.0 AS t);
END"""

TRIGGERS_SQL = (
    "SELECT name, tbl_name, sql FROM sqlite_master"
    " WHERE type = 'trigger' AND name LIKE 'sqlnotify\\_%' ESCAPE '\\'"
)
INSERT_SQL = f'INSERT INTO {quote_ident(LOG_TABLE)} ("ts", "channel", "payload") VALUES (?, ?, ?)'
_OPTION_NAMES = {
    "sqlite_wal": "wal",
    "sqlite_retention": "retention",
    "sqlite_poll_interval": "poll_interval",
    "sqlite_inotify": "inotify",
    "sqlite_busy_timeout": "busy_timeout",
}


def _metadata(sql: str) -> dict[str, Any] | None:
    """The metadata recorded in a trigger's SQL; ``None`` for a trigger sqlnotify did not make.

    The comment ends the first line.  Triggers made before it moved there
    carry it on a line of its own further down: that form is read too.
    """
    first, _, rest = sql.partition("\n")
    _, marker, text = first.partition(" " + MARKER)
    if not marker:
        line = next((x for x in rest.splitlines() if x.startswith(MARKER)), None)
        if line is None:
            return None
        text = line[len(MARKER) :]
    try:
        meta = json.loads(text)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


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
    def parse(cls, options: Mapping[str, Any]) -> SQLiteOptions:
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


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: S110 - closing is best effort
            pass


class SQLiteDialect(Dialect):
    """SQLite 3.38 or later (JSON functions built in) on a local file.

    Every program that writes to a watched table runs the triggers with its
    own SQLite library, so each needs 3.38 or later too.
    """

    #: What SQLite can do: every watch is read from the change log, so all
    #: are durable, and a named consumer resumes from its saved position.
    capabilities = Capabilities(
        name="sqlite",
        options=frozenset(_OPTION_NAMES),
        binary_encoding="hex",
        replays_log=True,
        durable=True,
    )

    def __init__(self, engine: sa.Engine, log: Any, settings: Settings) -> None:
        self.user_engine = engine
        self.path = database_path(engine.url)
        #: The SQLite options, checked.
        self.config = SQLiteOptions.parse(settings.options)
        self._own_engine: sa.Engine | None = None
        if engine.dialect.driver != "pysqlite":
            # aiosqlite and others: reflection goes through a small engine of our own.
            self._own_engine = sa.create_engine(
                sa.URL.create("sqlite+pysqlite", database=self.path), poolclass=sa.pool.NullPool
            )
            engine = self._own_engine
        super().__init__(engine, log, settings)
        self.driver = driver_for(self.user_engine)
        self._conn: Any = None
        self._closer = weakref.finalize(self, _close_quietly, None)
        self._conn_lock = threading.Lock()
        self._wake: Callable[[], None] | None = None
        self._listening = False
        self._reader: JournalReader | None = None
        self._generation: str | None = None
        #: Called as ``on_gap(first, last)`` (listener thread) when log rows
        #: were pruned before the listener read them; they are also logged.
        self.on_gap: Callable[[int, int], None] | None = None
        self._journal: SQLiteJournal | None = None

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
                self._conn = self.connect(self.config.busy_timeout)
                # A notifier used only to install (never started, never
                # stopped) still closes its connection once it is dropped.
                self._closer = weakref.finalize(self, _close_quietly, self._conn)
            try:
                yield self._conn
            except self.driver.Error as exc:
                if is_busy(exc):
                    raise SQLNotifyException(
                        f"{self.path} stayed locked by another connection for"
                        f" {self.config.busy_timeout:g}s ({exc}); try again, or raise the"
                        " sqlite_busy_timeout option"
                    ) from exc
                raise SQLNotifyException(f"SQLite error on {self.path}: {exc}") from exc

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` again while the database is busy, up to the busy timeout."""
        deadline = time.monotonic() + self.config.busy_timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except self.driver.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
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
                self._closer()
                self._conn = None
        self._reader = None
        self._generation = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._own_engine is not None:
            self._own_engine.dispose()

    def after_fork(self) -> None:
        # SQLite forbids using a connection in a child that the parent opened;
        # the child opens its own when it needs one.
        if self._conn is not None:
            self._closer.detach()
        self._conn = None
        self._conn_lock = threading.Lock()
        self._reader = None
        self._wake = None
        # The consumer lock stays the parent's (its file descriptor too).
        self._journal = None

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
        # Runs on the committing thread, just before the commit reaches
        # SQLite: the listener checks again quickly after a wake-up, so it
        # sees the commit as soon as it lands.
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
        watch.check_names(max_bytes=None, database="SQLite")

    def _trigger_sql(self, watch: Watch, comment: str) -> str:
        self._check(watch)
        ref = "OLD" if watch.operation.value == "delete" else "NEW"
        row = ", ".join(
            quote_sqlite_literal(c)
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
            channel=quote_sqlite_literal(watch.channel),
            row=row,
        )

    def fingerprint(self, watch: Watch) -> str:
        return digest(self._trigger_sql(watch, ""), 32)

    def trigger_sql(self, watch: Watch) -> str:
        """The ``CREATE TRIGGER`` statement, with its metadata comment."""
        meta = {
            "v": FORMAT_VERSION,
            "fp": self.fingerprint(watch),
            **watch.metadata(),
        }
        # ensure_ascii: no newline or other character can end the comment early.
        text = json.dumps(meta, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
        return self._trigger_sql(watch, " " + MARKER + text + "\n")

    def ddl(self, watch: Watch) -> list[str]:
        return [
            log_table_sql(),
            f"DROP TRIGGER IF EXISTS {quote_ident(watch.channel)}",
            self.trigger_sql(watch),
        ]

    # -- installation ---------------------------------------------------------
    def _installed(self, conn: Any) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for name, table, sql in conn.execute(TRIGGERS_SQL).fetchall():
            meta = _metadata(sql or "")
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
        if not self.config.wal:
            return
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            try:
                mode = self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except self.driver.OperationalError as exc:
                if not is_busy(exc):
                    raise
                self.log.warning(
                    "could not switch %s to WAL mode, the database stayed busy (%s);"
                    " the next start tries again",
                    self.path,
                    exc,
                )
                return
            if str(mode).lower() != "wal":
                self.log.warning(
                    "could not switch %s to WAL mode (it stays in %r mode): the listener's"
                    " reads may briefly delay writers",
                    self.path,
                    mode,
                )

    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy | None = None
    ) -> list[InstallState]:
        policy = policy or Policy()
        for watch in watches:
            self._check(watch)
        with self._connection() as conn:
            self._ensure_wal(conn)

            def work() -> list[InstallState]:
                # Recorded first: a cleanup that commits after this sees a user.
                owners.ensure(conn)
                owners.touch(conn, [w.channel for w in watches], policy)
                if not self._log_exists(conn):
                    conn.execute(log_table_sql())
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

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        with self._connection() as conn:

            def work() -> None:
                owners.ensure(conn)
                owners.touch(conn, [w.channel for w in watches], policy)

            self._transaction(conn, work)

    def _remove(
        self,
        conn: Any,
        policy: Policy,
        *,
        channels: set[str],
        tables: set[str],
        keep: set[str],
        forget: set[str],
    ) -> int:
        """Drop the sqlnotify triggers in ``channels`` or on ``tables`` nobody else uses."""
        owners.forget(conn, forget, policy.user)
        dropped = 0
        for name, entry in self._installed(conn).items():
            channel = entry["meta"].get("channel", name)
            if channel in keep or not (channel in channels or entry["table"].lower() in tables):
                continue
            if owners.in_use(conn, channel, policy):
                continue
            conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(name)}")
            owners.drop(conn, channel)
            dropped += 1
        return dropped

    def uninstall(self, watches: Sequence[Watch], *, policy: Policy | None = None) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        with self._connection() as conn:

            def work() -> int:
                return self._remove(
                    conn, policy, channels=own, tables=set(), keep=set(), forget=own
                )

            return int(self._transaction(conn, work))

    def cleanup(
        self, watches: Sequence[Watch], *, policy: Policy | None = None, keep_own: bool = False
    ) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        tables = {w.table.lower() for w in watches}
        keep, forget = (own, set()) if keep_own else (set(), own)
        with self._connection() as conn:

            def work() -> int:
                return self._remove(
                    conn, policy, channels=set(), tables=tables, keep=keep, forget=forget
                )

            return int(self._transaction(conn, work))

    def status(self) -> list[dict[str, Any]]:
        rows = []
        with self._connection() as conn:
            users = owners.users(conn)
            for name, entry in sorted(self._installed(conn).items()):
                meta = entry["meta"]
                channel = meta.get("channel", name)
                rows.append(
                    {
                        "schema": None,
                        "table": entry["table"],
                        "operation": meta.get("operation"),
                        "channel": channel,
                        "function": None,
                        "fingerprint": meta.get("fp"),
                        "triggers": [name],
                        "state": self._installed_state(entry["table"], meta),
                        "spec": {
                            k: meta.get(k) for k in ("keys", "columns", "trigger_columns", "label")
                        },
                        "users": users.get(channel, []),
                    }
                )
        return rows

    def _installed_state(self, table_name: str, meta: dict[str, Any]) -> str:
        """``installed``, or ``outdated`` when a fresh build of the recorded watch differs."""
        if meta.get("v") != FORMAT_VERSION:
            return "outdated"
        try:
            table = sa.Table(table_name, sa.MetaData(), autoload_with=self.engine)
            watch = WatchRequest.from_metadata(meta, table_name).resolve(table)
        except (KeyError, TypeError, sa.exc.SQLAlchemyError, SQLNotifyConfigurationError):
            return "outdated"  # the table lost a column, or the metadata is unreadable
        return "installed" if self.fingerprint(watch) == meta.get("fp") else "outdated"

    def inspect(self, timeout: float) -> dict[str, Any]:
        """The change log's size (``change_log``: ``rows``, ``first``, ``last``)."""
        return {"change_log": self._log_info()}

    def _log_info(self) -> dict[str, Any]:
        with self._connection() as conn:
            if not self._log_exists(conn):
                return {"rows": 0, "first": None, "last": None}
            count, first, last = conn.execute(
                f'SELECT count(*), min("seq"), max("seq") FROM {quote_ident(LOG_TABLE)}'
            ).fetchone()
        return {"rows": count, "first": first, "last": last}

    # -- consumers --------------------------------------------------------------

    def journal(self) -> SQLiteJournal:
        """The consumer positions of this database's change log."""
        from .sqlite_journal import SQLiteJournal

        if self._journal is None:
            self._journal = SQLiteJournal(self)
        return self._journal

    def prune_upto(self, conn: Any, position: int) -> int:
        """The last position pruning may remove: none a known consumer still needs."""
        from .sqlite_journal import oldest_needed

        expiry = self.settings.consumer_expiry
        oldest = oldest_needed(conn, expiry, self.driver.OperationalError)
        return position if oldest is None else min(position, oldest)

    # -- notifications --------------------------------------------------------
    def send(self, channel: str, payload: str) -> None:
        with self._connection() as conn:

            def insert() -> None:
                try:
                    conn.execute(INSERT_SQL, (time.time(), channel, payload))
                except self.driver.OperationalError as exc:
                    if "no such table" not in str(exc):
                        raise
                    # notify() before the first start: create the log first.
                    conn.execute(log_table_sql())
                    conn.execute(INSERT_SQL, (time.time(), channel, payload))

            self._retry(insert)
        wake = self._wake
        if wake is not None:
            wake()

    def prune(self, upto: int | None = None) -> int:
        """Delete change-log rows older than the retention period; return how many.

        Never rows a known consumer still needs (see :meth:`prune_upto`).
        """
        from ._sqlite_source import prune_log

        with self._connection() as conn:
            if not self._log_exists(conn):
                return 0
            upto = self.prune_upto(conn, 2**62 if upto is None else upto)
            return prune_log(conn, self.config.retention, upto, budget=0.05)

    def start_position(self, end: int) -> int:
        """Where a listener that starts afresh begins reading: the end of the log.

        ``end`` is the log's last sequence number.  A listener resumes after
        a reconnect from its own position instead.
        """
        return end

    def open_source(
        self, channels: Sequence[str], *, stop: threading.Event, position: Any = None
    ) -> Source:
        from ._sqlite_source import SQLiteSource

        if self._reader is None and position is not None:
            # A named consumer's first source of this run: resume after its position.
            self._reader = JournalReader(position, channels, contiguous=True, log=self.log)
        source = SQLiteSource(self, channels, self._reader)
        # The position survives reconnects: a new connection resumes where the
        # last one stopped, so nothing is skipped; a new start() begins afresh.
        self._reader = source.reader
        return source
