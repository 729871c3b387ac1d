"""MySQL and MariaDB: row triggers append to a change log; the listener polls it.

Each watch's trigger inserts one row into ``sqlnotify_log`` in the
writer's transaction (InnoDB): an ``AUTO_INCREMENT`` id, the channel, and
the same JSON payload PostgreSQL sends.  Ids are not commit order, so the
listener's position remembers the ids it has not seen yet (see
:mod:`.position`); the listener's side lives in :mod:`.source`.

MySQL's DDL commits at once, so installers and cleaners of one database
serialize on a named lock (``GET_LOCK``), and every DDL statement waits
for its metadata lock at most ``lock_timeout`` (``lock_wait_timeout``).
A changed trigger is replaced under ``LOCK TABLES ... WRITE``: no write
happens between the old trigger's drop and the new one's creation.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from ..._journal import JournalReader
from ..._names import digest
from ..._ownership import Policy
from ..._watch import Watch, WatchRequest
from ...exceptions import SQLNotifyConfigurationError, SQLNotifyListenerError
from ..base import Capabilities, CommitWake, Dialect, InstallState, Settings, Source
from . import owners, sql
from .binlog import BinlogSource
from .binlog_position import BinlogConsumers, binlog_problems
from .connection import MySQLServer, execute
from .consumers import MySQLConsumers, ensure_log, prune_log
from .options import OPTION_NAMES, MySQLOptions
from .source import LogCursor, MySQLSource

__all__ = ["FORMAT_VERSION", "MariaDBDialect", "MySQLDialect"]

#: The version of the trigger metadata; a trigger of another is outdated.
FORMAT_VERSION = 1
#: MySQL names are at most 64 characters.
MAX_NAME = 64


class MySQLDialect(Dialect):
    """MySQL 5.7+/8.x (and, as :class:`MariaDBDialect`, MariaDB 10.2+), InnoDB tables.

    Every watch is read from the change log, so all are durable, and a
    named consumer resumes from its saved position.  The listener and the
    stores connect with PyMySQL whatever driver the application's engine uses.
    """

    capabilities = Capabilities(
        name="mysql",
        options=frozenset(OPTION_NAMES),
        binary_encoding="hex",
        replays_log=True,
        durable=True,
    )

    def __init__(self, engine: sa.Engine, log: Any, settings: Settings) -> None:
        self.user_engine = engine
        self.server = MySQLServer(engine.url)
        self.config = MySQLOptions.parse(settings.options)
        own = sa.create_engine(self.server.url, poolclass=sa.pool.NullPool)
        self._own_engine = own
        super().__init__(own, log, settings)
        self._db: str | None = settings.journal_schema or engine.url.database
        self._commits = CommitWake(self.user_engine)
        self._cursor = LogCursor()
        self._journal: MySQLConsumers | BinlogConsumers | None = None
        #: ``"triggers"`` or ``"binlog"``, chosen at the first install of a run.
        self._mode: str | None = None
        self._binlog_watches: dict[str, Watch] = {}

    @property
    def db(self) -> str:
        """The database holding the change log (the engine's, or ``journal_schema``)."""
        if self._db is None:
            with self.server.connection() as conn:
                found = execute(conn, sql.DATABASE_SQL)[0][0]
            if not found:
                raise SQLNotifyConfigurationError(
                    "the MySQL engine's URL names no database: name one (mysql+pymysql://"
                    "host/dbname) or pass journal_schema="
                )
            self._db = str(found)
        return self._db

    def default_schema(self) -> str | None:
        return self.user_engine.url.database or self.db

    def check_reachable(self, timeout: float) -> None:
        try:
            conn = self.server.connect(read_timeout=timeout)
            conn.close()
        except self.server.Error as exc:
            raise SQLNotifyListenerError(f"cannot reach the MySQL server: {exc}") from exc

    # -- process lifecycle ----------------------------------------------------
    def close(self) -> None:
        self.detach()
        self._cursor = LogCursor()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._own_engine.dispose()

    def after_fork(self) -> None:
        self._cursor = LogCursor()
        self._commits.forget()
        self._journal = None  # the consumer lock stays the parent's
        self._own_engine.dispose(close=False)

    def attach(self, wake: Callable[[], None]) -> None:
        self._commits.attach(wake)

    def detach(self) -> None:
        self._commits.detach()
        self._mode = None

    # -- SQL ------------------------------------------------------------------
    def _schema(self, watch: Watch) -> str:
        return watch.effective_schema or self.db

    def condition_sql(self, watch: Watch) -> str | None:
        """The watch's ``where=`` condition as SQL on ``NEW`` (``OLD`` for DELETE).

        String literals depend on the server's ``sql_mode`` (backslash
        escapes), so the engine connects once first.
        """
        if watch.condition is None:
            return None
        if self.user_engine.dialect.server_version_info is None:
            with self.user_engine.connect():
                pass
        ref = "OLD" if watch.operation.value == "delete" else "NEW"
        return watch.condition.render(self.user_engine.dialect, ref)

    def _trigger_sql(self, watch: Watch) -> str:
        if watch.operation.value == "truncate":
            raise SQLNotifyConfigurationError(
                f"cannot watch {watch.describe()}: MySQL fires no trigger on TRUNCATE; watch"
                " Operation.DELETE and empty tables with DELETE to hear of every removed row"
            )
        watch.check_names(max_bytes=MAX_NAME, database="MySQL")
        return sql.create_trigger_sql(
            watch, self.db, self._schema(watch), self.condition_sql(watch)
        )

    def fingerprint(self, watch: Watch) -> str:
        return digest(self._trigger_sql(watch), 32)

    def _meta(self, watch: Watch) -> str:
        meta = {"v": FORMAT_VERSION, "fp": self.fingerprint(watch), **watch.metadata()}
        if watch.condition is not None:
            meta["when"] = self.condition_sql(watch)
        return json.dumps(meta)

    def ddl(self, watch: Watch) -> list[str]:
        """The statements, with the trigger's recorded description (``status`` reads it)."""
        schema = self._schema(watch)
        record = sql.save_meta_sql(self.db).replace("%s", "{}")
        return [
            sql.log_table_sql(self.db),
            sql.state_table_sql(self.db),
            sql.triggers_table_sql(self.db),
            sql.DROP_TRIGGER_SQL.format(trigger=sql.qualified(schema, watch.channel)),
            self._trigger_sql(watch),
            record.format(
                sql.quote_literal(schema),
                sql.quote_literal(watch.channel),
                sql.quote_literal(self._meta(watch)),
            ),
        ]

    # -- the source ------------------------------------------------------------
    def source_mode(self, watches: Sequence[Watch] = ()) -> str:
        """``"triggers"`` or ``"binlog"``: ``mysql_source`` checked against the server.

        Raises :class:`SQLNotifyConfigurationError` naming every missing
        setting or privilege under ``"binlog"``; ``"auto"`` then uses the triggers.
        """
        if self._mode is not None:
            return self._mode
        wanted = self.config.source
        if wanted == "triggers":
            self._mode = "triggers"
            return self._mode
        with self.server.connection() as conn:
            problems = binlog_problems(conn, watches)
        if problems and wanted == "binlog":
            raise SQLNotifyConfigurationError(
                "mysql_source='binlog' cannot read the binary log: " + "; ".join(problems)
            )
        if problems:
            self.log.warning("using the trigger source: %s", "; ".join(problems))
        self._mode = "triggers" if problems else "binlog"
        return self._mode

    def _binlog_install(self, watches: Sequence[Watch]) -> list[InstallState]:
        for watch in watches:
            self._trigger_sql(watch)  # the same checks (names, TRUNCATE)
            self._binlog_watches[watch.channel] = watch
        return [InstallState(watch, "unchanged") for watch in watches]

    # -- installation ---------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, policy: Policy) -> Iterator[Any]:
        """A connection holding the database's installation lock, DDL lock waits bounded."""
        name = "sqlnotify:install:" + digest(self.db, 40)
        with self.server.connection() as conn:
            got = execute(conn, sql.GET_LOCK_SQL, (name, policy.install_timeout))[0][0]
            if got != 1:
                raise SQLNotifyListenerError(
                    f"another process held sqlnotify's installation lock on {self.db!r} for"
                    f" more than install_timeout ({policy.install_timeout:g}s)"
                )
            seconds = max(1, math.ceil(policy.lock_timeout))
            execute(conn, sql.LOCK_WAIT_SQL.format(seconds=seconds))
            execute(conn, sql.INNODB_LOCK_WAIT_SQL.format(seconds=seconds))
            try:
                yield conn
            finally:
                with contextlib.suppress(Exception):
                    execute(conn, sql.RELEASE_LOCK_SQL, (name,))

    def _ensure_tables(self, conn: Any) -> None:
        ensure_log(conn, self.db)
        execute(conn, sql.triggers_table_sql(self.db))
        owners.ensure(conn, self.db)

    def _installed(self, conn: Any) -> dict[tuple[str, str], dict[str, Any]]:
        """Every sqlnotify trigger by ``(schema, name)``, with its recorded metadata."""
        meta: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            for schema, name, text in execute(conn, sql.load_meta_sql(self.db)):
                with contextlib.suppress(ValueError):
                    meta[(schema, name)] = json.loads(text)
        except self.server.Error as exc:
            if "doesn't exist" not in str(exc):
                raise
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for name, schema, table in execute(conn, sql.TRIGGERS_SQL):
            # The server's other databases hold other applications' triggers, recorded
            # in their own registries: only this database's and those recorded here.
            if schema == self.db or (schema, name) in meta:
                found[(schema, name)] = {"table": table, "meta": meta.get((schema, name), {})}
        return found

    def _state(self, watch: Watch, found: dict[tuple[str, str], dict[str, Any]]) -> InstallState:
        entry = found.get((self._schema(watch), watch.channel))
        if entry is None or entry["table"] != watch.table:
            return InstallState(watch, "missing")
        fp = entry["meta"].get("fp")
        if fp != self.fingerprint(watch):
            return InstallState(watch, "outdated", fp)
        return InstallState(watch, "unchanged", fp)

    def _create(self, conn: Any, watch: Watch, replace: bool) -> None:
        schema = self._schema(watch)
        trigger = sql.qualified(schema, watch.channel)
        if replace:
            execute(conn, sql.LOCK_TABLE_SQL.format(table=sql.qualified(schema, watch.table)))
            try:
                execute(conn, sql.DROP_TRIGGER_SQL.format(trigger=trigger))
                execute(conn, self._trigger_sql(watch))
            finally:
                execute(conn, sql.UNLOCK_TABLES_SQL)
        else:
            execute(conn, sql.DROP_TRIGGER_SQL.format(trigger=trigger))
            execute(conn, self._trigger_sql(watch))
        execute(conn, sql.save_meta_sql(self.db), (schema, watch.channel, self._meta(watch)))

    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy | None = None
    ) -> list[InstallState]:
        policy = policy or Policy()
        if self.source_mode(watches) == "binlog":
            return self._binlog_install(watches)
        for watch in watches:
            self._trigger_sql(watch)
        with self._locked(policy) as conn:
            self._ensure_tables(conn)
            # Recorded first: a cleanup after this sees a user.
            owners.touch(conn, self.db, [w.channel for w in watches], policy)
            found = self._installed(conn)
            result = []
            for watch in watches:
                state = self._state(watch, found)
                if state.state == "missing" or (state.state == "outdated" and revoke):
                    self._create(conn, watch, replace=state.state == "outdated")
                    new = "replaced" if state.state == "outdated" else "installed"
                    result.append(InstallState(watch, new, state.installed_fingerprint))
                else:
                    result.append(state)
        return result

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        with self.server.connection() as conn:
            owners.ensure(conn, self.db)
            owners.touch(conn, self.db, [w.channel for w in watches], policy)

    def _remove(
        self,
        conn: Any,
        policy: Policy,
        *,
        channels: set[str],
        tables: set[tuple[str, str]],
        keep: set[str],
        forget: set[str],
    ) -> int:
        owners.ensure(conn, self.db)
        owners.forget(conn, self.db, forget, policy.user)
        dropped = 0
        for (schema, name), entry in self._installed(conn).items():
            channel = entry["meta"].get("channel", name)
            if channel in keep or not (channel in channels or (schema, entry["table"]) in tables):
                continue
            if owners.in_use(conn, self.db, channel, policy):
                continue
            execute(conn, sql.DROP_TRIGGER_SQL.format(trigger=sql.qualified(schema, name)))
            with contextlib.suppress(self.server.Error):
                execute(conn, sql.drop_meta_sql(self.db), (schema, name))
            owners.drop(conn, self.db, channel)
            dropped += 1
        return dropped

    def uninstall(self, watches: Sequence[Watch], *, policy: Policy | None = None) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        with self._locked(policy) as conn:
            return self._remove(conn, policy, channels=own, tables=set(), keep=set(), forget=own)

    def cleanup(
        self, watches: Sequence[Watch], *, policy: Policy | None = None, keep_own: bool = False
    ) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        tables = {(self._schema(w), w.table) for w in watches}
        keep, forget = (own, set()) if keep_own else (set(), own)
        with self._locked(policy) as conn:
            return self._remove(
                conn, policy, channels=set(), tables=tables, keep=keep, forget=forget
            )

    def status(self) -> list[dict[str, Any]]:
        rows = []
        with self.server.connection() as conn:
            self._ensure_tables(conn)
            users = owners.users(conn, self.db)
            for (schema, name), entry in sorted(self._installed(conn).items()):
                meta = entry["meta"]
                channel = meta.get("channel", name)
                rows.append(
                    {
                        "schema": schema,
                        "table": entry["table"],
                        "operation": meta.get("operation"),
                        "channel": channel,
                        "function": None,
                        "fingerprint": meta.get("fp"),
                        "triggers": [name],
                        "state": self._installed_state(schema, entry["table"], meta),
                        "spec": {
                            k: meta.get(k) for k in ("keys", "columns", "trigger_columns", "label")
                        },
                        "users": users.get(channel, []),
                    }
                )
        return rows

    def _installed_state(self, schema: str, table_name: str, meta: dict[str, Any]) -> str:
        if meta.get("v") != FORMAT_VERSION:
            return "outdated"
        try:
            table = sa.Table(table_name, sa.MetaData(), schema=schema, autoload_with=self.engine)
            request = WatchRequest.from_metadata(meta, table_name)
            watch = request.resolve(table).with_default_schema(schema)
        except (KeyError, TypeError, sa.exc.SQLAlchemyError, SQLNotifyConfigurationError):
            return "outdated"
        return "installed" if self.fingerprint(watch) == meta.get("fp") else "outdated"

    def inspect(self, timeout: float) -> dict[str, Any]:
        """The change log's size (``change_log``: ``rows``, ``first``, ``last``)."""
        with self.server.connection() as conn:
            ensure_log(conn, self.db)
            count, first, last = execute(conn, sql.log_info_sql(self.db))[0]
        return {"change_log": {"rows": count, "first": first, "last": last}}

    # -- consumers and the log ------------------------------------------------
    def journal(self) -> MySQLConsumers | BinlogConsumers:
        """The consumer positions of this database's change log (or of the binary log)."""
        if self._journal is None:
            if self.source_mode() == "binlog":
                self._journal = BinlogConsumers(self.server, self.db)
            else:
                self._journal = MySQLConsumers(self.server, self.db)
        return self._journal

    def prune(self, upto: int | None = None) -> int:
        """Delete change-log rows older than the retention period; return how many."""
        with self.server.connection() as conn:
            ensure_log(conn, self.db)
            return prune_log(
                conn,
                self.db,
                self.config.retention,
                2**62 if upto is None else upto,
                self.settings.consumer_expiry,
                budget=0.5,
            )

    def send(self, channel: str, payload: str) -> None:
        with self.server.connection() as conn:
            try:
                execute(conn, sql.insert_sql(self.db), (time.time(), channel, payload))
            except self.server.Error as exc:
                if "doesn't exist" not in str(exc):
                    raise
                ensure_log(conn, self.db)  # notify() before the first start
                execute(conn, sql.insert_sql(self.db), (time.time(), channel, payload))
        self._commits.poke()

    def open_source(
        self, channels: Sequence[str], *, stop: threading.Event, position: Any = None
    ) -> Source:
        cursor = self._cursor
        binlog = self.source_mode() == "binlog"
        if cursor.reader is None and position is not None:
            # A named consumer's first source of this run: resume after its position.
            cursor.reader = JournalReader(
                position,
                channels,
                log=self.log,
                stamp=(lambda p: int(p.number)) if binlog else (lambda p: int(p.last)),
            )
        if binlog:
            return BinlogSource(
                self.server,
                self.db,
                self._binlog_watches,
                channels,
                cursor,
                log=self.log,
            )
        return MySQLSource(
            self.server,
            self.db,
            self.config,
            channels,
            cursor,
            log=self.log,
            consumer_expiry=self.settings.consumer_expiry,
            on_gap=None,
        )


class MariaDBDialect(MySQLDialect):
    """MariaDB 10.2 or later (SQLAlchemy's ``mariadb`` dialect name)."""

    capabilities = Capabilities(
        name="mariadb",
        options=frozenset(OPTION_NAMES),
        binary_encoding="hex",
        replays_log=True,
        durable=True,
    )
