"""PostgreSQL: row triggers that ``pg_notify()`` a JSON payload, and a LISTEN socket.

The listener uses a dedicated psycopg2 connection in asynchronous mode, so
every step (connect, LISTEN, the liveness probe) is a non-blocking call
followed by a bounded ``select()``: a dead or silent server is noticed on a
timeout, not only when data arrives.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .._names import digest, qualified, quote_ident, quote_literal
from .._ownership import Policy
from .._watch import Watch, WatchRequest
from ..exceptions import (
    SQLNotifyConfigurationError,
    SQLNotifyListenerError,
)
from . import missing_driver_error
from ._pg_install import PgInstaller
from ._pg_large import PgOverflow, pairs, positive
from ._pg_ownership import LockedRunner, brief_read, channel_lock, is_lock_timeout
from ._pg_probe import probe
from .base import (
    Capabilities,
    Dialect,
    InstallState,
    RawNotification,
    Settings,
    Source,
    SourceDisconnected,
)
from .postgresql_journal import JOURNAL_TABLE, PostgresJournal, journal_ddl, journal_insert_sql

__all__ = ["PostgresDialect", "PostgresSource", "listener_dsn"]

#: PostgreSQL rejects NOTIFY payloads of 8000 bytes or more.
MAX_PAYLOAD = 7999
#: PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1).
MAX_IDENTIFIER = 63
#: While connecting, check this often whether the listener is stopping.
STOP_CHECK = 0.2
#: Comment prefix marking objects sqlnotify created (``COMMENT ON FUNCTION``).
MARKER = "sqlnotify:"
#: Key of the transaction-level advisory lock that serialises installation.
INSTALL_LOCK_KEY = int(digest("sqlnotify.install", 15), 16)
FORMAT_VERSION = 1

# libpq connection keywords a URL query may carry through to the listener.
_LIBPQ_KEYWORDS = frozenset(
    [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "requiressl",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
        "sslcertmode",
        "require_auth",
    ]
)

# The payload is concatenated text around one json_build_object() (cheaper
# than nesting two), and pg_notify() is called inside an IF: PL/pgSQL
# evaluates an IF condition as a simple expression, where PERFORM would run a
# planned query for every row.
FUNCTION_SQL = """\
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql{security} AS {body}"""

# The body is dollar-quoted with a tag chosen once every name is in it (see
# dollar_quote): no name can close the quote early.
ROW_BODY = """
DECLARE
    payload text;
BEGIN
    BEGIN
        payload := '{{"ts":' || extract(epoch from clock_timestamp())
                   || ',"row":' || json_build_object({row})::text || '}}';
        IF octet_length(payload) > {limit} THEN
            {oversize}
        END IF;
    EXCEPTION WHEN OTHERS THEN
        payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                     'row', json_build_object(), 'lost', true,
                                     'err', SQLSTATE, 'msg', left(SQLERRM, 300))::text;
    END;
    IF pg_notify({channel}, payload) IS NULL THEN
        NULL;
    END IF;
    RETURN NULL;
END;
"""

# The inner block keeps the user's write alive when the table no longer
# matches the watch (a watched column dropped or renamed since the trigger
# was installed): the event then says so ("err") instead.  It never writes,
# so the subtransaction it opens gets no transaction id and costs little.

# Without an overflow table, a row too large for NOTIFY is announced by its
# keys only ("trunc"); the listener re-reads the row.  If even the keys do not
# fit, only the fact is sent ("lost"), so the user's write never fails.
TRUNCATE_SQL = """\
payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                     'row', json_build_object({keys}), 'trunc', true)::text;
        IF octet_length(payload) > {limit} THEN
            payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                         'row', json_build_object(), 'lost', true)::text;
        END IF;"""

# A function that writes to sqlnotify's tables (the journal, the overflow
# table) runs as the role that installed it, so writers need no privilege on
# those tables; its search_path is pinned and every table it names is
# schema-qualified, so nothing a writer puts on its own path can step in.
# EXECUTE is revoked from PUBLIC: nobody can attach it to a table of theirs
# (a trigger's function is checked when the trigger is created, not when it
# fires).
DEFINER = "\nSECURITY DEFINER SET search_path = pg_catalog, pg_temp"
#: The payload of a durable watch's notification: a wake-up, the same for
#: every row (PostgreSQL sends one per transaction and channel).
WAKE_PAYLOAD = '{"wake":true}'

# A durable watch appends the event to the journal in the writer's
# transaction and sends a wake-up; the listener reads the journal.
DURABLE_BODY = """
DECLARE
    payload text;
BEGIN
    payload := '{{"ts":' || extract(epoch from clock_timestamp())
               || ',"row":' || json_build_object({row})::text || '}}';
    {insert}
    IF pg_notify({channel}, {wake}) IS NULL THEN
        NULL;
    END IF;
    RETURN NULL;
END;
"""

# The same for a whole statement: one INSERT ... SELECT over the transition
# table, then one wake-up.
DURABLE_STATEMENT_BODY = """
BEGIN
    INSERT INTO {journal} (channel, payload)
    SELECT {channel}, json_build_object('ts', extract(epoch from clock_timestamp()),
                                        'row', json_build_object({row}))::text
    FROM {rows} r;
    IF FOUND THEN
        PERFORM pg_notify({channel}, {wake});
    END IF;
    RETURN NULL;
END;
"""

STATEMENT_TRIGGER_SQL = """\
CREATE TRIGGER {trigger} AFTER {operation} ON {table}
REFERENCING {side} TABLE AS {rows} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"""
#: Name of the transition table in statement-level triggers.
TRANSITION_TABLE = "sqlnotify_rows"

TRIGGER_SQL = """\
CREATE TRIGGER {trigger} AFTER {operation} ON {table}
FOR EACH ROW{when} EXECUTE FUNCTION {function}()"""

STATE_SQL = """\
SELECT n.nspname, p.proname, obj_description(p.oid, 'pg_proc'),
       tn.nspname, c.relname, t.tgname
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
LEFT JOIN pg_trigger t ON t.tgfoid = p.oid AND NOT t.tgisinternal
LEFT JOIN pg_class c ON c.oid = t.tgrelid
LEFT JOIN pg_namespace tn ON tn.oid = c.relnamespace
WHERE p.proname LIKE 'sqlnotify\\_%%' AND obj_description(p.oid, 'pg_proc') LIKE 'sqlnotify:%%'
"""


def dollar_quote(body: str) -> str:
    """``body`` as a dollar-quoted string, with a tag that does not occur in it.

    The tag is chosen from the finished text, names and all: the quote ends
    exactly where the body does, whatever characters the names hold.
    """
    tag = "$sqlnotify$"
    n = 0
    # The closing tag must first occur at the end, also when the body ends
    # with the beginning of a tag.
    while (body + tag).find(tag) != len(body):
        n += 1
        tag = f"$sqlnotify{n}$"
    return tag + body + tag


def listener_dsn(url: sa.URL, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """psycopg2 connection keywords for ``url``, whatever its PostgreSQL driver.

    Host, port, user, password, database and libpq query parameters
    (``sslmode``, a unix-socket ``host``, ...) are kept; asyncpg's ``ssl=``
    becomes ``sslmode=``; driver-specific options libpq does not know are
    dropped.  ``extra`` (the ``listener_connect_args`` option) is applied
    last, for settings an application passes to its engine through
    ``connect_args`` rather than the URL.
    """
    kwargs: dict[str, Any] = {}
    args = url.translate_connect_args(username="user", database="dbname")
    for key, value in args.items():
        if value is not None:
            kwargs[key] = str(value)
    for key, value in url.query.items():
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        if key == "ssl" and "sslmode" not in url.query:
            mapping = {"true": "require", "false": "disable"}
            kwargs["sslmode"] = mapping.get(text.lower(), text)
        elif key in _LIBPQ_KEYWORDS:
            kwargs[key] = text
    for key, value in (extra or {}).items():
        if key not in _LIBPQ_KEYWORDS:
            raise SQLNotifyConfigurationError(
                f"listener_connect_args: {key!r} is not a libpq connection keyword"
                " (for example sslmode, sslrootcert, password, options, connect_timeout)"
            )
        kwargs[key] = str(value)
    # The listener's session must be recognisable in pg_stat_activity.
    app = kwargs.get("application_name")
    kwargs["application_name"] = (
        f"{app}/sqlnotify" if app and "sqlnotify" not in app else app or "sqlnotify"
    )
    kwargs.setdefault("connect_timeout", "10")
    kwargs.setdefault("keepalives", "1")
    kwargs.setdefault("keepalives_idle", "10")
    kwargs.setdefault("keepalives_interval", "5")
    kwargs.setdefault("keepalives_count", "3")
    return kwargs


def _is_psycopg2(engine: sa.Engine) -> bool:
    return engine.dialect.driver == "psycopg2"


class PostgresDialect(Dialect):
    """PostgreSQL 11 and later (``EXECUTE FUNCTION``), through psycopg2."""

    #: What PostgreSQL can do; ``options`` are the keyword options a
    #: PostgreSQL notifier accepts (see :meth:`__init__`).
    capabilities = Capabilities(
        name="postgresql",
        options=frozenset(
            {
                "listener_connect_args",
                "pg_journal_per_statement",
                "overflow_retention",
                "overflow_prune_interval",
                "overflow_prune_batch",
            }
        ),
        max_payload=MAX_PAYLOAD,
        wake_payload=WAKE_PAYLOAD,
        durable=True,
    )

    def __init__(self, engine: sa.Engine, log: Any, settings: Settings) -> None:
        """:param settings: its ``options`` may hold ``listener_connect_args``: libpq
        keywords for sqlnotify's own connections, on top of what the engine's URL says."""
        options = settings.options
        valid = self.capabilities.options
        unknown = sorted(set(options) - valid)
        if unknown:
            raise SQLNotifyConfigurationError(
                f"unknown option {unknown[0]!r} for a PostgreSQL notifier; valid options:"
                f" {', '.join(sorted(valid))}"
            )
        self.user_engine = engine
        self.dsn = listener_dsn(engine.url, options.get("listener_connect_args"))
        if not _is_psycopg2(engine):
            # asyncpg, psycopg 3, pg8000: sqlnotify's own work goes through a
            # small psycopg2 engine on the same server.
            url = engine.url.set(drivername="postgresql+psycopg2", query={})
            try:
                engine = sa.create_engine(
                    url,
                    connect_args={k: v for k, v in self.dsn.items() if k not in _URL_KEYS},
                    pool_size=2,
                    max_overflow=2,
                    pool_pre_ping=True,
                )
            except ImportError as exc:
                raise missing_driver_error(url, exc) from exc
            self._own_engine: sa.Engine | None = engine
        else:
            self._own_engine = None
        super().__init__(engine, log, settings)
        self._schema: str | None = None
        #: The overflow table and re-reads of large rows.
        self.overflow: PgOverflow = PgOverflow(
            self.engine,
            marker=MARKER,
            lock_key=INSTALL_LOCK_KEY,
            version=FORMAT_VERSION,
            retention=positive(options, "overflow_retention", 3600.0),
            prune_interval=positive(options, "overflow_prune_interval", 60.0),
            prune_batch=int(positive(options, "overflow_prune_batch", 500)),
        )
        #: Schema of the journal tables (``None``: the default schema).
        self.journal_schema: str | None = settings.journal_schema
        #: ``(key, consumer name)`` of the session lock the listener holds for a
        #: named consumer of durable watches (set by the journal's ``acquire``).
        self.consumer_lock: tuple[int, str] | None = None
        per_statement = options.get("pg_journal_per_statement", False)
        if not isinstance(per_statement, bool):
            raise SQLNotifyConfigurationError(
                f"pg_journal_per_statement must be True or False, not {per_statement!r}"
            )
        self.journal_per_statement = per_statement
        self._journal: PostgresJournal | None = None
        #: Installs and removes triggers within the lock bounds, on connections
        #: of its own (each connect bounded by ``connect_timeout``).
        self.installer = PgInstaller(
            self, LockedRunner(self._ddl_engine(), self.dsn, INSTALL_LOCK_KEY, log)
        )

    def _ddl_engine(self) -> sa.Engine:
        import psycopg2

        dsn = self.dsn
        return sa.create_engine(
            "postgresql+psycopg2://",
            creator=lambda: psycopg2.connect(**dsn),
            poolclass=sa.pool.NullPool,
        )

    def after_fork(self) -> None:
        # The journal's connection is the parent's: never use nor close it here.
        self._journal = None

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._own_engine is not None:
            self._own_engine.dispose()
        self.installer.runner.engine.dispose()

    def check_reachable(self, timeout: float) -> None:
        probe(self.dsn, timeout)

    # -- names and SQL ------------------------------------------------------
    def default_schema(self) -> str | None:
        if self._schema is None:
            with self.engine.connect() as conn:
                self._schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        return self._schema

    def function_ref(self, watch: Watch) -> str:
        return qualified(watch.effective_schema, watch.channel)

    def table_ref(self, watch: Watch) -> str:
        return qualified(watch.effective_schema, watch.table)

    def statement_level(self, watch: Watch) -> bool:
        """Whether the watch's trigger runs once per statement (over a transition table).

        Only durable watches with the ``pg_journal_per_statement=True`` option,
        and without ``trigger_columns`` (those compare old and new values row
        by row).  One ``INSERT ... SELECT`` into the journal per statement
        costs a statement of many rows far less than one insert per row, and
        a single-row statement a little more.
        """
        return watch.durable and not watch.trigger_columns and self.journal_per_statement

    @staticmethod
    def definer(watch: Watch) -> bool:
        """Whether the watch's trigger function writes to sqlnotify's tables
        (and so runs as the role that installed it)."""
        return watch.durable or watch.use_overflow_table

    def function_sql(self, watch: Watch) -> str:
        body = dollar_quote(self.function_body(watch))
        security = DEFINER if self.definer(watch) else ""
        return FUNCTION_SQL.format(function=self.function_ref(watch), security=security, body=body)

    def function_body(self, watch: Watch) -> str:
        """The PL/pgSQL source of the watch's trigger function (``pg_proc.prosrc``)."""
        ref = "OLD" if watch.operation.value == "delete" else "NEW"
        if self.statement_level(watch):
            ref = "r"
        body_args = {
            "row": pairs(watch, watch.payload_columns, ref + "."),
            "limit": MAX_PAYLOAD,
            "channel": quote_literal(watch.channel),
            "wake": quote_literal(WAKE_PAYLOAD),
        }
        if self.statement_level(watch):
            body_args["journal"] = qualified(self.journal_schema_name(), JOURNAL_TABLE)
            body_args["rows"] = TRANSITION_TABLE
            template = DURABLE_STATEMENT_BODY
        elif watch.durable:
            body_args["insert"] = journal_insert_sql(self.journal_schema_name(), watch.channel)
            template = DURABLE_BODY
        else:
            truncate = TRUNCATE_SQL.format(
                keys=pairs(watch, watch.primary_keys, ref + "."), limit=MAX_PAYLOAD
            )
            body_args["oversize"] = (
                self.overflow.trigger_sql(watch, truncate) if watch.use_overflow_table else truncate
            )
            template = ROW_BODY
        return template.format(**body_args)

    def trigger_sql(self, watch: Watch) -> str:
        when = ""
        if watch.trigger_columns:
            cond = " OR ".join(
                f"OLD.{quote_ident(c)} IS DISTINCT FROM NEW.{quote_ident(c)}"
                for c in watch.trigger_columns
            )
            when = f" WHEN ({cond})"
        if self.statement_level(watch):
            side = "OLD" if watch.operation.value == "delete" else "NEW"
            return STATEMENT_TRIGGER_SQL.format(
                trigger=quote_ident(watch.channel),
                operation=watch.operation.value.upper(),
                table=self.table_ref(watch),
                side=side,
                rows=TRANSITION_TABLE,
                function=self.function_ref(watch),
            )
        return TRIGGER_SQL.format(
            trigger=quote_ident(watch.channel),
            operation=watch.operation.value.upper(),
            table=self.table_ref(watch),
            when=when,
            function=self.function_ref(watch),
        )

    def fingerprint(self, watch: Watch) -> str:
        return digest(self.function_sql(watch) + "\n" + self.trigger_sql(watch), 32)

    @staticmethod
    def part_fingerprint(sql: str) -> str:
        """The hash of the function's or the trigger's statement alone, recorded apart."""
        return digest(sql, 16)

    def comment(self, watch: Watch) -> str:
        meta = {
            "v": FORMAT_VERSION,
            "fp": self.fingerprint(watch),
            "ffp": self.part_fingerprint(self.function_sql(watch)),
            "tfp": self.part_fingerprint(self.trigger_sql(watch)),
            "schema": watch.effective_schema,
            **watch.metadata(),
            "overflow": watch.use_overflow_table,
            "per_statement": self.statement_level(watch),
        }
        if watch.durable:
            meta["journal"] = self.journal_schema_name()
        return MARKER + json.dumps(meta, separators=(",", ":"), sort_keys=True)

    def journal_schema_name(self) -> str | None:
        """The schema of the journal tables of durable watches (default: the default schema)."""
        return self.journal_schema or self.default_schema()

    def journal(self) -> PostgresJournal:
        """The journal store durable watches use (one connection, opened lazily)."""
        if self._journal is None:
            self._journal = PostgresJournal(
                self.dsn, self.journal_schema_name(), on_acquire=self._set_consumer_lock
            )
        return self._journal

    def _set_consumer_lock(self, key: int, consumer: str) -> None:
        # Taken by the listener's own session, so it lives exactly as long as
        # the connection that reads for the consumer.
        self.consumer_lock = (key, consumer)

    def check_names(self, watch: Watch) -> None:
        """Refuse names PostgreSQL would silently truncate (it keeps 63 bytes) or rejects."""
        watch.check_names(max_bytes=MAX_IDENTIFIER, database="PostgreSQL")

    def ddl(self, watch: Watch) -> list[str]:
        self.check_names(watch)
        journal = [journal_ddl(self.journal_schema_name())] if watch.durable else []
        overflow = self.overflow.ddl(watch.effective_schema) if watch.use_overflow_table else []
        revoke = (
            [f"REVOKE ALL ON FUNCTION {self.function_ref(watch)}() FROM PUBLIC"]
            if self.definer(watch)
            else []
        )
        return [
            *journal,
            *overflow,
            self.function_sql(watch),
            f"COMMENT ON FUNCTION {self.function_ref(watch)}()"
            f" IS {quote_literal(self.comment(watch))}",
            *revoke,
            f"DROP TRIGGER IF EXISTS {quote_ident(watch.channel)} ON {self.table_ref(watch)}",
            self.trigger_sql(watch),
        ]

    def drop_sql(self, schema: str, function: str) -> str:
        # CASCADE drops the trigger that uses the function, and nothing else can.
        return f"DROP FUNCTION IF EXISTS {qualified(schema, function)}() CASCADE"

    # -- installation ---------------------------------------------------------
    def _installed(self, conn: sa.Connection) -> dict[tuple[str, str], dict[str, Any]]:
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for fschema, fname, comment, tschema, tname, tgname in conn.exec_driver_sql(STATE_SQL):
            try:
                meta = json.loads(comment[len(MARKER) :])
            except ValueError:
                meta = {}
            entry = found.setdefault(
                (fschema, fname), {"meta": meta, "triggers": [], "schema": fschema, "name": fname}
            )
            if tgname is not None:
                entry["triggers"].append((tschema, tname, tgname))
        return found

    def _state(self, watch: Watch, found: dict[tuple[str, str], dict[str, Any]]) -> InstallState:
        schema = watch.effective_schema or "public"
        entry = found.get((schema, watch.channel))
        if entry is None:
            return InstallState(watch, "missing")
        fp = entry["meta"].get("fp")
        attached = (schema, watch.table, watch.channel) in entry["triggers"]
        if not attached:
            return InstallState(watch, "missing", fp)
        if fp != self.fingerprint(watch):
            return InstallState(watch, "outdated", fp)
        return InstallState(watch, "unchanged", fp)

    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy | None = None
    ) -> list[InstallState]:
        return self.installer.install(watches, revoke=revoke, policy=policy or Policy())

    def uninstall(self, watches: Sequence[Watch], *, policy: Policy | None = None) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        schemas = {w.effective_schema or "public" for w in watches}
        return self.installer.remove(policy, channels=own, forget=own, forget_schemas=schemas)

    def cleanup(
        self, watches: Sequence[Watch], *, policy: Policy | None = None, keep_own: bool = False
    ) -> int:
        policy = policy or Policy()
        own = {w.channel for w in watches}
        tables = {(w.effective_schema or "public", w.table) for w in watches}
        schemas = {s for s, _ in tables}
        if keep_own:
            return self.installer.remove(policy, tables=tables, keep=own)
        return self.installer.remove(policy, tables=tables, forget=own, forget_schemas=schemas)

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        self.installer.touch(watches, policy)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        with self.engine.connect() as conn:
            # Each read below is a transaction of its own, so the walk over the
            # database never holds one table's lock while it waits for another.
            with brief_read(conn):
                found = self._installed(conn)
            users, live = self.installer.users(conn, {s for s, _ in found})
            for entry in found.values():
                meta = entry["meta"]
                channel = meta.get("channel", entry["name"])
                rows.append(
                    {
                        "schema": meta.get("schema", entry["schema"]),
                        "table": meta.get("table"),
                        "operation": meta.get("operation"),
                        "channel": channel,
                        "function": f"{entry['schema']}.{entry['name']}",
                        "fingerprint": meta.get("fp"),
                        "triggers": [f"{s}.{t}" for s, t, _ in entry["triggers"]],
                        "state": self._read_state(conn, entry),
                        "spec": _spec_of(meta),
                        "listening": channel_lock(channel)[1] in live,
                        "users": users.get(channel, []),
                    }
                )
        return rows

    def _read_state(self, conn: sa.Connection, entry: dict[str, Any]) -> str:
        """:meth:`_installed_state` in a short transaction; ``locked`` when it stays locked."""
        try:
            with brief_read(conn):
                return self._installed_state(conn, entry)
        except sa.exc.OperationalError as exc:
            if not is_lock_timeout(exc):
                raise
            return "locked"  # another session's DDL holds the table: state unknown now

    def _installed_state(self, conn: sa.Connection, entry: dict[str, Any]) -> str:
        """``installed``, ``orphaned`` (no trigger) or ``outdated`` (differs from a fresh build)."""
        if not entry["triggers"]:
            return "orphaned"
        meta = entry["meta"]
        if meta.get("v") != FORMAT_VERSION:
            return "outdated"
        try:
            with conn.begin_nested():  # a concurrent DROP must not abort the whole report
                table = sa.Table(
                    meta["table"], sa.MetaData(), schema=meta["schema"], autoload_with=conn
                )
            watch = WatchRequest.from_metadata(meta, meta["table"]).resolve(table)
        except sa.exc.OperationalError as exc:
            if is_lock_timeout(exc):
                raise
            return "outdated"
        except (KeyError, TypeError, sa.exc.SQLAlchemyError, SQLNotifyConfigurationError):
            return "outdated"  # the table lost a column, or the metadata is unreadable
        if watch.channel != meta["channel"]:  # watched by unqualified name
            watch = dataclasses.replace(watch, schema=None, default_schema=meta["schema"])
        # The journal's schema and per-statement mode are the installer's
        # settings, recorded with the watch: rebuild with those.
        saved = self.journal_schema, self.journal_per_statement
        try:
            self.journal_schema = meta.get("journal") or saved[0]
            self.journal_per_statement = bool(meta.get("per_statement", saved[1]))
            fingerprint = self.fingerprint(watch)
        finally:
            self.journal_schema, self.journal_per_statement = saved
        return "installed" if fingerprint == meta.get("fp") else "outdated"

    # -- notifications --------------------------------------------------------
    def send(self, channel: str, payload: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})

    def open_source(
        self, channels: Sequence[str], *, stop: threading.Event, position: Any = None
    ) -> Source:
        return PostgresSource(
            self.dsn,
            channels,
            stop=stop,
            log=self.log,
            lock=self.consumer_lock,
            channel_locks=[channel_lock(c) for c in channels],
        )

    def inspect(self, timeout: float) -> dict[str, Any]:
        """The notification queue's usage and the overflow tables."""
        with self.engine.connect() as conn:
            usage = conn.exec_driver_sql("SELECT pg_notification_queue_usage()").scalar_one()
        return {"notification_queue_usage": float(usage), "overflow_tables": self.overflow.tables()}

    def server_queue_usage(self, timeout: float) -> float | None:
        """``pg_notification_queue_usage()`` read on a new connection; ``None`` on failure."""
        from .postgresql_journal import _BoundedCursor, connect_bounded

        deadline = time.monotonic() + timeout
        conn = None
        try:
            conn = connect_bounded(self.dsn, timeout)
            cur = _BoundedCursor(conn, max(0.0, deadline - time.monotonic()))
            cur.execute("SELECT pg_notification_queue_usage()")
            return float(cur.fetchone()[0])
        except Exception:
            return None
        finally:
            if conn is not None:
                conn.close()


_URL_KEYS = frozenset({"host", "port", "user", "password", "dbname"})


def _spec_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The watch spec an installed trigger records (for ``sqlnotify status``)."""
    keys = ("keys", "columns", "trigger_columns", "label", "durable", "overflow")
    return {k: meta.get(k) for k in keys}


def wait_fd(fd: int, timeout: float, *, write: bool = False) -> bool:
    """Wait until ``fd`` is readable (or writable); ``False`` on timeout.

    ``select.poll`` rather than ``select.select``: it works for descriptors
    above ``FD_SETSIZE`` (1024), which busy applications reach.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000.0))


class PostgresSource(Source):
    """A psycopg2 connection in asynchronous mode that LISTENs on every channel.

    The class attributes are the liveness bounds; tests may lower them.
    """

    #: Send a probe after this many seconds without any data from the server.
    IDLE_PROBE_INTERVAL = 5.0
    #: Declare the connection dead when a probe gets no answer for this long.
    PROBE_TIMEOUT = 5.0
    #: Bound on connecting, LISTEN and the ready round trip.
    CONNECT_TIMEOUT = 15.0
    #: While more data is already waiting, keep reading up to this many
    #: notifications before handing them over (one handoff per batch).
    MAX_BATCH = 2000
    #: Bound on the ready round trip alone: a healthy server answers in
    #: milliseconds; a connection that cannot LISTEN never does.
    PING_TIMEOUT = 5.0
    #: Read ``pg_notification_queue_usage()`` at least this often (seconds).
    QUEUE_CHECK_INTERVAL = 30.0
    #: Warn when the server's notification queue is fuller than this.
    QUEUE_WARN_LEVEL = 0.5

    def __init__(
        self,
        dsn: dict[str, Any],
        channels: Sequence[str],
        *,
        log: Any = None,
        lock: tuple[int, str] | None = None,
        stop: threading.Event,
        channel_locks: Sequence[tuple[int, int]] = (),
    ) -> None:
        import psycopg2
        import psycopg2.extensions as ext

        self._ext = ext
        self._log = log
        self._stop = stop
        #: Server notification queue usage (0..1) at the last check, or ``None``.
        self.queue_usage: float | None = None
        self._queue_warned = 0.0
        self._ping = f"sqlnotify_ping_{os.getpid()}_{id(self):x}"
        deadline = time.monotonic() + self.CONNECT_TIMEOUT
        try:
            conn = psycopg2.connect(async_=1, **dsn)
        except psycopg2.Error as exc:
            raise SQLNotifyListenerError(f"cannot connect the listener: {exc}") from exc
        self._conn = conn
        try:
            self._complete(deadline)
            self._fd = conn.fileno()
            cur = conn.cursor()
            self._cursor = cur
            cur.execute("SELECT pg_is_in_recovery()")
            self._complete(deadline)
            if cur.fetchone()[0]:
                raise SQLNotifyListenerError(
                    "the listener's server is in recovery (a read replica or standby):"
                    " notifications are only sent on the primary; connect to the primary"
                )
            if lock is not None:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (lock[0],))
                self._complete(deadline)
                if not cur.fetchone()[0]:
                    raise SQLNotifyListenerError(
                        f"consumer {lock[1]!r} is already active in another process; one"
                        " consumer name is read by one process at a time (use another name"
                        " for an independent reader)"
                    )
            if channel_locks:
                # Shared, never waited for: they tell cleanups this channel is live.
                cur.execute(
                    "SELECT count(pg_try_advisory_lock_shared(c, k))"
                    " FROM unnest(%s::int[], %s::int[]) AS l(c, k)",
                    ([c for c, _ in channel_locks], [k for _, k in channel_locks]),
                )
                self._complete(deadline)
            listens = "".join(f"LISTEN {quote_ident(c)};" for c in (*channels, self._ping))
            cur.execute(listens)
            self._complete(deadline)
            cur.execute("SELECT pg_notify(%s, 'ready')", (self._ping,))
            self._complete(deadline)
            self._await_ping(min(deadline, time.monotonic() + self.PING_TIMEOUT))
        except BaseException:
            self.close()
            raise
        self._last_data = time.monotonic()
        self._last_check = self._last_data
        self.last_alive = time.time()
        self._probe_deadline: float | None = None
        self._poller: select.poll | None = None
        self._poller_wake = -1
        self._data_poller = select.poll()
        self._data_poller.register(self._fd, select.POLLIN)
        self.backend_pid: int = conn.info.backend_pid

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise SQLNotifyListenerError("the listener is stopping")

    def _complete(self, deadline: float) -> None:
        """Drive the pending asynchronous operation to completion within ``deadline``."""
        ext = self._ext
        conn = self._conn
        while True:
            state = conn.poll()
            if state == ext.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SQLNotifyListenerError("the server did not answer the listener in time")
            wait_fd(conn.fileno(), min(remaining, STOP_CHECK), write=state == ext.POLL_WRITE)
            self._check_stop()

    def _await_ping(self, deadline: float) -> None:
        conn = self._conn
        while True:
            for n in conn.notifies:
                if n.channel == self._ping:
                    conn.notifies = [x for x in conn.notifies if x.channel != self._ping]
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SQLNotifyListenerError(
                    "LISTEN does not work on this connection: a notification sent to itself"
                    " never came back (is it a transaction-mode pooler such as PgBouncer?"
                    " connect the listener to the server directly)"
                )
            wait_fd(self._fd, min(remaining, STOP_CHECK))
            self._check_stop()
            conn.poll()

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        conn = self._conn
        ext = self._ext
        now = time.monotonic()
        probe = self._probe_deadline
        if probe is None and (
            now - self._last_data >= self.IDLE_PROBE_INTERVAL
            or now - self._last_check >= self.QUEUE_CHECK_INTERVAL
        ):
            self._last_check = now
            try:
                self._cursor.execute("SELECT pg_notification_queue_usage()")
            except Exception as exc:
                raise SourceDisconnected(str(exc)) from exc
            probe = self._probe_deadline = now + self.PROBE_TIMEOUT
        if probe is not None:
            timeout = max(0.0, min(timeout, probe - now))
        try:
            poller = self._poller
            if poller is None or self._poller_wake != wake_fd:
                poller = self._poller = select.poll()
                poller.register(self._fd, select.POLLIN)
                poller.register(wake_fd, select.POLLIN)
                self._poller_wake = wake_fd
            ready = poller.poll(timeout * 1000.0)
            data = any(fd == self._fd for fd, _ in ready)
            if probe is not None or data:
                state = conn.poll()
                more = self._data_poller.poll
                limit = self.MAX_BATCH
                while state == ext.POLL_OK and len(conn.notifies) < limit and more(0):
                    state = conn.poll()
                self._last_data = time.monotonic()
                if data:
                    self.last_alive = time.time()
                if probe is not None and state == ext.POLL_OK:
                    self._probe_deadline = None
                    self._queue_checked(self._cursor.fetchone())
            elif conn.closed:
                raise SourceDisconnected("connection closed")
        except SourceDisconnected:
            raise
        except Exception as exc:  # psycopg2.OperationalError, InterfaceError, OSError
            raise SourceDisconnected(str(exc) or type(exc).__name__) from exc
        if self._probe_deadline is not None and time.monotonic() >= self._probe_deadline:
            raise SourceDisconnected(
                f"the server did not answer a liveness probe within {self.PROBE_TIMEOUT:g}s"
            )
        notifies = conn.notifies
        if not notifies:
            return ()
        conn.notifies = []
        return notifies  # type: ignore[no-any-return]

    def _queue_checked(self, row: Any) -> None:
        if not row or row[0] is None:
            return
        usage = self.queue_usage = float(row[0])
        now = time.monotonic()
        warn = usage >= self.QUEUE_WARN_LEVEL and now - self._queue_warned >= 60.0
        if warn and self._log is not None:
            self._queue_warned = now
            self._log.warning(
                "the server's notification queue is %.0f%% full: a listening session is"
                " not consuming (or a transaction holds it back); at 100%% every"
                " NOTIFY fails",
                usage * 100,
            )

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: S110 - closing a broken connection
            pass

    def abandon(self) -> None:
        # Point the child's copy of the socket's descriptor at a dead socket:
        # the child lets go of the parent's connection, and anything libpq
        # might still write in the child (a Terminate) goes nowhere.  The
        # descriptor number stays taken, so nothing else reuses it.
        try:
            fd = self._conn.fileno()
        except Exception:
            return
        a, b = socket.socketpair()
        try:
            os.dup2(a.fileno(), fd, inheritable=False)
        except OSError:
            pass
        finally:
            a.close()
            b.close()
