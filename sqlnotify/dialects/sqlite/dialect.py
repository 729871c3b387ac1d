"""SQLite: row triggers append to a change log; the listener reads it in order.

Each watch's trigger inserts one row into ``sqlnotify_log``: an increasing
sequence number (``AUTOINCREMENT``, so a number is never reused, even after
pruning), the channel, and the same JSON payload PostgreSQL sends.  SQLite
has one writer at a time, so sequence order is commit order.

The listener's side lives in :mod:`.source`.  It owns its own connection,
made with the same SQLite module as the application's engine (two copies of
the SQLite library in one process break each other's file locks; see
:mod:`.connection`).  Commits through the notifier's own engine wake it
directly (:meth:`SQLiteDialect.attach`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from ..._journal import JournalReader
from ..._names import digest, quote_ident
from ..._ownership import Policy
from ..._watch import Watch, WatchRequest
from ...exceptions import SQLNotifyConfigurationError
from ..base import Capabilities, CommitWake, Dialect, InstallState, Settings, Source
from . import owners
from .connection import DatabaseFile, database_path, driver_for, is_busy
from .consumers import SQLiteConsumers, prune_upto
from .options import OPTION_NAMES, SQLiteOptions
from .source import LogCursor, SQLiteSource, prune_log
from .sql import (
    DROP_TRIGGER_SQL,
    INSERT_SQL,
    JOURNAL_MODE_SQL,
    LOG_INFO_SQL,
    LOG_TABLE,
    TABLE_EXISTS_SQL,
    TRIGGERS_SQL,
    WAL_SQL,
    create_trigger_sql,
    log_table_sql,
    trigger_comment,
    trigger_metadata,
)

__all__ = ["FORMAT_VERSION", "SQLiteDialect"]

#: The version of the trigger metadata; a trigger of another is outdated.
FORMAT_VERSION = 1


class SQLiteDialect(Dialect):
    """SQLite 3.38 or later (JSON functions built in) on a local file.

    Every program that writes to a watched table runs the triggers with its
    own SQLite library, so each needs 3.38 or later too.
    """

    #: What SQLite can do: every watch is read from the change log, so all
    #: are durable, and a named consumer resumes from its saved position.
    capabilities = Capabilities(
        name="sqlite",
        options=frozenset(OPTION_NAMES),
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
        #: The database file and the shared connection to it.
        self.database = DatabaseFile(self.path, self.driver, self.config.busy_timeout)
        self._commits = CommitWake(self.user_engine)
        self._cursor = LogCursor()
        #: Called as ``on_gap(first, last)`` (listener thread) when log rows
        #: were pruned before the listener read them; they are also logged.
        self.on_gap: Callable[[int, int], None] | None = None
        self._journal: SQLiteConsumers | None = None

    # -- connections ----------------------------------------------------------
    def connect(self, busy_timeout: float) -> Any:
        """A new autocommit connection to the database file (any thread may use it)."""
        return self.database.connect(busy_timeout)

    def close(self) -> None:
        self.detach()
        self.database.close()
        self._cursor = LogCursor()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._own_engine is not None:
            self._own_engine.dispose()

    def after_fork(self) -> None:
        self.database.after_fork()
        self._cursor.reader = None
        self._commits.forget()
        # The consumer lock stays the parent's (its file descriptor too).
        self._journal = None

    # -- same-process wake-up -------------------------------------------------
    def attach(self, wake: Callable[[], None]) -> None:
        self._commits.attach(wake)

    def detach(self) -> None:
        self._commits.detach()

    # -- SQL ------------------------------------------------------------------
    def _check(self, watch: Watch) -> None:
        if watch.schema not in (None, "main"):
            raise SQLNotifyConfigurationError(
                f"cannot watch {watch.describe()}: sqlnotify watches tables of the main SQLite"
                " database only, not of attached databases (schema must be None or 'main')"
            )
        if watch.operation.value == "truncate":
            raise SQLNotifyConfigurationError(
                f"cannot watch {watch.describe()}: SQLite has no TRUNCATE; its DELETE without"
                " WHERE fires the row triggers of a table that has them, so watch"
                " Operation.DELETE to hear of every removed row"
            )
        watch.check_names(max_bytes=None, database="SQLite")

    def condition_sql(self, watch: Watch) -> str | None:
        """The watch's ``where=`` condition as SQL on ``NEW`` (``OLD`` for DELETE)."""
        if watch.condition is None:
            return None
        ref = "OLD" if watch.operation.value == "delete" else "NEW"
        return watch.condition.render(self.engine.dialect, ref)

    def _trigger_sql(self, watch: Watch, comment: str) -> str:
        self._check(watch)
        return create_trigger_sql(watch, comment, self.condition_sql(watch))

    def fingerprint(self, watch: Watch) -> str:
        return digest(self._trigger_sql(watch, ""), 32)

    def trigger_sql(self, watch: Watch) -> str:
        """The ``CREATE TRIGGER`` statement, with its metadata comment."""
        meta = {
            "v": FORMAT_VERSION,
            "fp": self.fingerprint(watch),
            **watch.metadata(),
        }
        if watch.condition is not None:
            meta["when"] = self.condition_sql(watch)
        return self._trigger_sql(watch, trigger_comment(meta))

    def ddl(self, watch: Watch) -> list[str]:
        return [
            log_table_sql(),
            DROP_TRIGGER_SQL.format(trigger=quote_ident(watch.channel)),
            self.trigger_sql(watch),
        ]

    # -- installation ---------------------------------------------------------
    def _installed(self, conn: Any) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for name, table, sql in conn.execute(TRIGGERS_SQL).fetchall():
            meta = trigger_metadata(sql or "")
            if meta is not None:
                found[name] = {"name": name, "table": table, "meta": meta}
        return found

    def _log_exists(self, conn: Any) -> bool:
        row = conn.execute(TABLE_EXISTS_SQL, (LOG_TABLE,)).fetchone()
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
        mode = conn.execute(JOURNAL_MODE_SQL).fetchone()[0]
        if str(mode).lower() != "wal":
            try:
                mode = self.database.retry(lambda: conn.execute(WAL_SQL).fetchone()[0])
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
        with self.database.connection() as conn:
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

            result: list[InstallState] = self.database.transaction(conn, work)
        return result

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        with self.database.connection() as conn:

            def work() -> None:
                owners.ensure(conn)
                owners.touch(conn, [w.channel for w in watches], policy)

            self.database.transaction(conn, work)

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
            conn.execute(DROP_TRIGGER_SQL.format(trigger=quote_ident(name)))
            owners.drop(conn, channel)
            dropped += 1
        return dropped

    def uninstall(self, watches: Sequence[Watch], *, policy: Policy | None = None) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        with self.database.connection() as conn:

            def work() -> int:
                return self._remove(
                    conn, policy, channels=own, tables=set(), keep=set(), forget=own
                )

            return int(self.database.transaction(conn, work))

    def cleanup(
        self, watches: Sequence[Watch], *, policy: Policy | None = None, keep_own: bool = False
    ) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        tables = {w.table.lower() for w in watches}
        keep, forget = (own, set()) if keep_own else (set(), own)
        with self.database.connection() as conn:

            def work() -> int:
                return self._remove(
                    conn, policy, channels=set(), tables=tables, keep=keep, forget=forget
                )

            return int(self.database.transaction(conn, work))

    def status(self) -> list[dict[str, Any]]:
        rows = []
        with self.database.connection() as conn:
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
                            k: meta.get(k)
                            for k in ("keys", "columns", "trigger_columns", "label", "where")
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
        with self.database.connection() as conn:
            if not self._log_exists(conn):
                return {"rows": 0, "first": None, "last": None}
            count, first, last = conn.execute(LOG_INFO_SQL).fetchone()
        return {"rows": count, "first": first, "last": last}

    # -- consumers --------------------------------------------------------------

    def journal(self) -> SQLiteConsumers:
        """The consumer positions of this database's change log."""
        if self._journal is None:
            self._journal = SQLiteConsumers(self.database)
        return self._journal

    def prune_upto(self, conn: Any, position: int) -> int:
        """The last position pruning may remove: none a known consumer still needs."""
        expiry = self.settings.consumer_expiry
        return prune_upto(conn, position, expiry, self.driver.OperationalError)

    # -- notifications --------------------------------------------------------
    def send(self, channel: str, payload: str) -> None:
        with self.database.connection() as conn:

            def insert() -> None:
                try:
                    conn.execute(INSERT_SQL, (time.time(), channel, payload))
                except self.driver.OperationalError as exc:
                    if "no such table" not in str(exc):
                        raise
                    # notify() before the first start: create the log first.
                    conn.execute(log_table_sql())
                    conn.execute(INSERT_SQL, (time.time(), channel, payload))

            self.database.retry(insert)
        self._commits.poke()

    def prune(self, upto: int | None = None) -> int:
        """Delete change-log rows older than the retention period; return how many.

        Never rows a known consumer still needs (see :meth:`prune_upto`).
        """
        with self.database.connection() as conn:
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
        cursor = self._cursor
        if cursor.reader is None and position is not None:
            # A named consumer's first source of this run: resume after its position.
            cursor.reader = JournalReader(position, channels, contiguous=True, log=self.log)
        # The cursor survives reconnects: a new connection resumes where the
        # last one stopped, so nothing is skipped; a new start() begins afresh.
        return SQLiteSource(
            self.database,
            self.config,
            channels,
            cursor,
            log=self.log,
            consumer_expiry=self.settings.consumer_expiry,
            start_position=self.start_position,
            on_gap=self.on_gap,
        )
