"""PostgreSQL: row triggers that ``pg_notify()`` a JSON payload, and a LISTEN socket.

:class:`PostgresDialect` builds each watch's trigger from the templates in
:mod:`.sql`, installs it through :mod:`.install`, and opens a
:class:`~.source.PostgresSource` for the listener; durable watches read
:mod:`.journal`, oversized rows :mod:`.overflow`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from ..._names import digest, qualified, quote_ident, quote_literal
from ..._ownership import Policy
from ..._watch import Watch, WatchRequest
from ...exceptions import SQLNotifyConfigurationError
from .. import missing_driver_error
from ..base import Capabilities, CommitWake, Dialect, InstallState, Settings, Source
from . import statement
from .dsn import URL_KEYS, listener_dsn
from .install import PgInstaller, installed, part_fingerprint
from .journal import PostgresJournal
from .overflow import PgOverflow, positive
from .ownership import LockedRunner, brief_read, channel_lock, is_lock_timeout
from .poll import PollSource
from .probe import BoundedCursor, connect_bounded, probe
from .source import PostgresSource
from .sql import (
    CHANGED_SQL,
    COMMENT_FUNCTION_SQL,
    CURRENT_SCHEMA_SQL,
    DEFINER,
    DROP_TRIGGER_SQL,
    DURABLE_BODY,
    FORMAT_VERSION,
    FUNCTION_SQL,
    INSTALL_LOCK_KEY,
    JOURNAL_TABLE,
    LEASES_TABLE,
    MARKER,
    MAX_IDENTIFIER,
    MAX_PAYLOAD,
    NO_JIT,
    NOTIFY_SQL,
    QUEUE_USAGE_SQL,
    REVOKE_FUNCTION_SQL,
    ROW_BODY,
    STATEMENT_TRIGGER_SQL,
    TRIGGER_SQL,
    TRUNCATE_SQL,
    TRUNCATE_TRIGGER_SQL,
    TRUNCATED_BODY,
    WAKE_PAYLOAD,
    dollar_quote,
    journal_ddl,
    journal_insert_sql,
    pairs,
    update_parts,
)

__all__ = ["PostgresDialect"]

#: Poll mode: the longest pause between two reads of the journal (seconds) ...
POLL_INTERVAL = 0.5
#: ... and the shortest, right after a read found events.
POLL_MIN_INTERVAL = 0.01


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
                "pg_listen",
                "pg_poll_interval",
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
                    connect_args={k: v for k, v in self.dsn.items() if k not in URL_KEYS},
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
        listen = options.get("pg_listen", True)
        if not isinstance(listen, bool):
            raise SQLNotifyConfigurationError(f"pg_listen must be True or False, not {listen!r}")
        #: ``False``: poll mode (no LISTEN; durable watches read from the
        #: journal at an adaptive interval, through any pooler).
        self.listen = listen
        #: Poll mode's longest pause between two reads of the journal.
        self.poll_interval = positive(options, "pg_poll_interval", POLL_INTERVAL)
        self._commits = CommitWake(self.user_engine)
        self._journal: PostgresJournal | None = None
        #: Installs and removes triggers within the lock bounds, on connections
        #: of its own (each connect bounded by ``connect_timeout``).
        self.installer = PgInstaller(
            self,
            self.overflow,
            LockedRunner(self._ddl_engine(), self.dsn, INSTALL_LOCK_KEY, log),
            self.engine.url,
            log,
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
                self._schema = conn.execute(sa.text(CURRENT_SCHEMA_SQL)).scalar_one()
        return self._schema

    def function_ref(self, watch: Watch) -> str:
        return qualified(watch.effective_schema, watch.channel)

    def table_ref(self, watch: Watch) -> str:
        return qualified(watch.effective_schema, watch.table)

    def statement_level(self, watch: Watch) -> bool:
        """Whether the watch's trigger runs once per statement (over its transition tables).

        A watch with ``per_statement=True``, and every durable INSERT, UPDATE
        and DELETE watch of a notifier with ``pg_journal_per_statement=True``
        (see :mod:`.statement`).  It costs a statement of many rows far less
        than a row trigger, and a single-row statement a little more.
        """
        if watch.operation.value == "truncate":
            return False
        return watch.per_statement or (watch.durable and self.journal_per_statement)

    @staticmethod
    def definer(watch: Watch) -> bool:
        """Whether the watch's trigger function writes to sqlnotify's tables
        (and so runs as the role that installed it)."""
        return watch.durable or watch.use_overflow_table

    def function_sql(self, watch: Watch) -> str:
        body = dollar_quote(self.function_body(watch))
        security = DEFINER if self.definer(watch) else ""
        if self.statement_level(watch):
            security += NO_JIT
        return FUNCTION_SQL.format(function=self.function_ref(watch), security=security, body=body)

    def function_body(self, watch: Watch) -> str:
        """The PL/pgSQL source of the watch's trigger function (``pg_proc.prosrc``)."""
        if watch.operation.value == "truncate":
            durable = watch.durable
            return TRUNCATED_BODY.format(
                insert=journal_insert_sql(self.journal_schema_name(), watch.channel)
                if durable
                else "",
                channel=quote_literal(watch.channel),
                message=quote_literal(WAKE_PAYLOAD) if durable else "payload",
            )
        if self.statement_level(watch):
            if watch.durable:
                journal = qualified(self.journal_schema_name(), JOURNAL_TABLE)
                wake = quote_literal(WAKE_PAYLOAD)
                return statement.durable_body(watch, self.condition_sql(watch), journal, wake)
            return statement.notify_body(
                watch, self.condition_sql(watch), functools.partial(self._oversize, watch)
            )
        ref = "OLD" if watch.operation.value == "delete" else "NEW"
        update, truncated_changed = update_parts(watch)
        body_args = {
            "row": pairs(watch, watch.payload_columns, ref + "."),
            "update": update,
            "limit": MAX_PAYLOAD,
            "channel": quote_literal(watch.channel),
            "wake": quote_literal(WAKE_PAYLOAD),
        }
        if watch.durable:
            body_args["insert"] = journal_insert_sql(self.journal_schema_name(), watch.channel)
            template = DURABLE_BODY
        else:
            truncate = TRUNCATE_SQL.format(
                keys=pairs(watch, watch.primary_keys, ref + "."),
                limit=MAX_PAYLOAD,
                changed=truncated_changed,
            )
            body_args["oversize"] = self._oversize(watch, truncate)
            template = ROW_BODY
        return template.format(**body_args)

    def _oversize(self, watch: Watch, truncate: str) -> str:
        """The trigger's branch for a row over the limit, given its keys-only branch."""
        return self.overflow.trigger_sql(watch, truncate) if watch.use_overflow_table else truncate

    def condition_sql(self, watch: Watch) -> str | None:
        """The watch's ``where=`` condition as SQL on its trigger's row (``None``: none).

        The row is ``NEW`` (``OLD`` for DELETE), or the transition table's
        ``r`` in a per-statement trigger.  Literals follow the server's
        ``standard_conforming_strings``, so the engine connects once first.
        """
        if watch.condition is None:
            return None
        if self.engine.dialect.server_version_info is None:
            with self.engine.connect():
                pass
        ref = "OLD" if watch.operation.value == "delete" else "NEW"
        if self.statement_level(watch):
            ref = "r"
        return watch.condition.render(self.engine.dialect, ref)

    def trigger_sql(self, watch: Watch) -> str:
        if watch.operation.value == "truncate":
            return TRUNCATE_TRIGGER_SQL.format(
                trigger=quote_ident(watch.channel),
                table=self.table_ref(watch),
                function=self.function_ref(watch),
            )
        when = ""
        tests = []
        if watch.trigger_columns and not self.statement_level(watch):
            tests.append(
                " OR ".join(
                    CHANGED_SQL.format(column=quote_ident(c)) for c in watch.trigger_columns
                )
            )
        condition = self.condition_sql(watch)
        if condition and not self.statement_level(watch):
            tests.append(condition)
        if tests:
            when = " WHEN (" + " AND ".join(f"({t})" if len(tests) > 1 else t for t in tests) + ")"
        if self.statement_level(watch):
            return STATEMENT_TRIGGER_SQL.format(
                trigger=quote_ident(watch.channel),
                operation=watch.operation.value.upper(),
                table=self.table_ref(watch),
                tables=statement.transition_tables(watch),
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

    def comment(self, watch: Watch) -> str:
        meta = {
            "v": FORMAT_VERSION,
            "fp": self.fingerprint(watch),
            "ffp": part_fingerprint(self.function_sql(watch)),
            "tfp": part_fingerprint(self.trigger_sql(watch)),
            "schema": watch.effective_schema,
            **watch.metadata(),
            "overflow": watch.use_overflow_table,
            "per_statement": self.statement_level(watch),
        }
        if watch.condition is not None:
            meta["when"] = self.condition_sql(watch)
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
                self.dsn,
                self.journal_schema_name(),
                on_acquire=self._set_consumer_lock,
                pooled=not self.listen,
            )
        return self._journal

    def journal_on(self, source: Source) -> PostgresJournal:
        """A journal store reading on the listening session of ``source`` (a relay's
        one backend); closing it leaves the session open.  Any other source: :meth:`journal`."""
        if not isinstance(source, PostgresSource):
            return self.journal()
        store = PostgresJournal(
            self.dsn, self.journal_schema_name(), on_acquire=self._set_consumer_lock
        )
        store.borrow(source.connection)
        return store

    def _set_consumer_lock(self, key: int, consumer: str) -> None:
        # Taken by the listener's own session, so it lives exactly as long as
        # the connection that reads for the consumer.  A transaction pooler
        # keeps no session lock: poll mode's source holds a lease row instead.
        self.consumer_lock = (key, consumer)

    def check_names(self, watch: Watch) -> None:
        """Refuse names PostgreSQL would silently truncate (it keeps 63 bytes) or rejects."""
        watch.check_names(max_bytes=MAX_IDENTIFIER, database="PostgreSQL")

    def ddl(self, watch: Watch) -> list[str]:
        self.check_names(watch)
        journal = [journal_ddl(self.journal_schema_name())] if watch.durable else []
        overflow = self.overflow.ddl(watch.effective_schema) if watch.use_overflow_table else []
        function = self.function_ref(watch)
        revoke = [REVOKE_FUNCTION_SQL.format(function=function)] if self.definer(watch) else []
        return [
            *journal,
            *overflow,
            self.function_sql(watch),
            COMMENT_FUNCTION_SQL.format(
                function=function, comment=quote_literal(self.comment(watch))
            ),
            *revoke,
            DROP_TRIGGER_SQL.format(
                trigger=quote_ident(watch.channel), table=self.table_ref(watch)
            ),
            self.trigger_sql(watch),
        ]

    # -- installation ---------------------------------------------------------
    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy | None = None
    ) -> list[InstallState]:
        if not self.listen:
            plain = [w.describe() for w in watches if not w.durable]
            if plain:
                raise SQLNotifyConfigurationError(
                    f"pg_listen=False (poll mode) reads durable watches from the journal;"
                    f" {', '.join(plain)} is not durable and needs LISTEN: watch it with"
                    " durable=True, or give the listener a direct connection"
                    " (listener_connect_args) and keep pg_listen=True"
                )
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
                found = installed(conn)
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
            conn.execute(sa.text(NOTIFY_SQL), {"c": channel, "p": payload})

    def open_source(
        self, channels: Sequence[str], *, stop: threading.Event, position: Any = None
    ) -> Source:
        if not self.listen:
            return PollSource(
                self.dsn,
                channels,
                wake_payload=WAKE_PAYLOAD,
                interval=self.poll_interval,
                min_interval=min(POLL_MIN_INTERVAL, self.poll_interval),
                stop=stop,
                lease=self._lease(),
            )
        return PostgresSource(
            self.dsn,
            channels,
            stop=stop,
            log=self.log,
            lock=self.consumer_lock,
            channel_locks=[channel_lock(c) for c in channels],
        )

    def _lease(self) -> tuple[str, str] | None:
        """Poll mode's lease on the named consumer: (qualified leases table, name)."""
        if self.consumer_lock is None:
            return None
        return qualified(self.journal_schema_name(), LEASES_TABLE), self.consumer_lock[1]

    def attach(self, wake: Callable[[], None]) -> None:
        """Poll mode: a commit of the notifier's own engine makes the poller read at once."""
        self._commits.attach(wake, hook=not self.listen)

    def detach(self) -> None:
        self._commits.detach()

    def inspect(self, timeout: float) -> dict[str, Any]:
        """The notification queue's usage and the overflow tables."""
        with self.engine.connect() as conn:
            usage = conn.exec_driver_sql(QUEUE_USAGE_SQL).scalar_one()
        return {"notification_queue_usage": float(usage), "overflow_tables": self.overflow.tables()}

    def server_queue_usage(self, timeout: float) -> float | None:
        """``pg_notification_queue_usage()`` read on a new connection; ``None`` on failure."""
        deadline = time.monotonic() + timeout
        conn = None
        try:
            conn = connect_bounded(self.dsn, timeout)
            cur = BoundedCursor(conn, max(0.0, deadline - time.monotonic()))
            cur.execute(QUEUE_USAGE_SQL)
            return float(cur.fetchone()[0])
        except Exception:
            return None
        finally:
            if conn is not None:
                conn.close()


def _spec_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The watch spec an installed trigger records (for ``sqlnotify status``)."""
    keys = (
        "keys",
        "columns",
        "trigger_columns",
        "label",
        "durable",
        "overflow",
        "where",
        "per_statement",
    )
    return {k: meta.get(k) for k in keys}
