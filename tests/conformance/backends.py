"""One way to create tables, write rows and lose journal rows, whatever the database.

Each :class:`Backend` builds notifiers for its database and writes rows the
way an application does there: real SQL through the engine for SQLite and
PostgreSQL, the in-memory database's own writes for the memory dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sqlnotify import Notifier
from sqlnotify.dialects.sqlite import SQLiteDialect
from sqlnotify.testing import MemoryDatabase, MemoryDialect, wait_until


class Backend:
    """What the contract needs from one database."""

    #: ``"memory"``, ``"sqlite"`` or ``"postgresql"``.
    name: str
    #: The schema events of an unqualified table name (``None`` where there is none).
    schema: str | None = None
    #: An UPDATE that changes no value is an event (triggers fire; a binlog has no row).
    hears_unchanged_updates: bool = True

    def __init__(self, engine: sa.Engine, notifiers: list[Notifier]) -> None:
        self.engine = engine
        self._notifiers = notifiers

    def notifier(self, **options: Any) -> Notifier:
        """A notifier on this database, stopped at the end of the test."""
        n = Notifier(self.engine, **options)
        self._notifiers.append(n)
        return n

    def create(self, table: sa.Table) -> sa.Table:
        table.metadata.create_all(self.engine)
        return table

    def insert(self, table: sa.Table, *rows: Mapping[str, Any]) -> None:
        """Insert the rows in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(table.insert(), [dict(r) for r in rows])

    def update(self, table: sa.Table, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.update().where(*self._match(table, key)).values(**values))

    def delete(self, table: sa.Table, key: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.delete().where(*self._match(table, key)))

    @staticmethod
    def _match(table: sa.Table, key: Mapping[str, Any]) -> list[Any]:
        return [table.c[column] == value for column, value in key.items()]

    def lose_journal(self) -> None:
        """Remove every kept journal row, whoever still needs it (as retention would)."""
        n = Notifier(self.engine, journal_retention=0, consumer_expiry=0)
        store = n.dialect.journal()
        try:
            store.ensure()
            while store.prune(0.0, 0.0):
                pass
        finally:
            store.close()
            n.dialect.close()


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, engine: sa.Engine, notifiers: list[Notifier]) -> None:
        super().__init__(engine, notifiers)
        self.database = MemoryDatabase.of(engine)

    def notifier(self, **options: Any) -> Notifier:
        return super().notifier(dialect=MemoryDialect, **options)

    def create(self, table: sa.Table) -> sa.Table:
        return self.database.define(table)

    def insert(self, table: sa.Table, *rows: Mapping[str, Any]) -> None:
        for row in rows:
            self.database.insert(table, row)

    def update(self, table: sa.Table, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        self.database.update(table, key, values)

    def delete(self, table: sa.Table, key: Mapping[str, Any]) -> None:
        self.database.delete(table, key)

    def lose_journal(self) -> None:
        self.database.lose()


class SQLiteBackend(Backend):
    name = "sqlite"

    def lose_journal(self) -> None:
        # The change log is SQLite's journal; its dialect prunes it.
        n = Notifier(self.engine, sqlite_retention=0.0, consumer_expiry=0)
        dialect = cast(SQLiteDialect, n.dialect)
        try:
            while dialect.prune():
                pass
        finally:
            dialect.close()


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, engine: sa.Engine, notifiers: list[Notifier], schema: str) -> None:
        super().__init__(engine, notifiers)
        self.schema = schema


class MySQLBackend(Backend):
    """MariaDB (or MySQL): a database of its own; the engine's database is the schema."""

    name = "mysql"

    def __init__(self, engine: sa.Engine, notifiers: list[Notifier]) -> None:
        super().__init__(engine, notifiers)
        self.schema = engine.url.database

    def create(self, table: sa.Table) -> sa.Table:
        # As an application on MySQL does: DATETIME keeps microseconds only with fsp=6.
        for column in table.columns:
            if isinstance(column.type, sa.DateTime):
                column.type = column.type.with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
        return super().create(table)


class MySQLBinlogBackend(MySQLBackend):
    """MariaDB's binlog source, on a private server with the binary log on."""

    name = "mysql-binlog"
    hears_unchanged_updates = False

    def __init__(self, engine: sa.Engine, notifiers: list[Notifier], server: Any) -> None:
        super().__init__(engine, notifiers)
        self._server = server

    def notifier(self, **options: Any) -> Notifier:
        return super().notifier(mysql_source="binlog", **options)

    def lose_journal(self) -> None:
        """Purge every binary log but the newest (as the server's expiry would)."""
        admin = self._server.admin()

        def purged() -> bool:
            # A log a dump thread still reads, or not yet checkpointed, is kept.
            with admin.cursor() as cur:
                cur.execute("FLUSH BINARY LOGS")
                cur.execute("SHOW BINARY LOGS")
                names = [row[0] for row in cur.fetchall()]
                cur.execute(f"PURGE BINARY LOGS TO '{names[-1]}'")
                cur.execute("SHOW BINARY LOGS")
                return len(cur.fetchall()) == 1

        try:
            wait_until(purged, 20.0, "the binary logs purged")
        finally:
            admin.close()


class RelayedNotifier(Notifier):
    """A notifier reading Redis Streams, whose start first starts relays of its watches.

    The watches are declared again on a notifier of the database: the durable
    ones relayed from the journal, the plain ones at most once.  The relays
    stop with the test (:meth:`RedisBackend.close`).
    """

    backend: RedisBackend

    def watch(self, *args: Any, **kwargs: Any) -> RelayedNotifier:
        self.backend.calls.append((args, kwargs))
        super().watch(*args, **kwargs)
        return self

    def start(self, timeout: float | None = None) -> None:
        self.backend.relay_watches()
        super().start(timeout)

    def stop(self, cleanup: bool | None = None) -> None:
        super().stop(cleanup)
        if not any(n.is_running for n in self.backend.running):
            # The relays run exactly while a consumer does: what is written
            # meanwhile waits in the journal, as when no relay was up.
            self.backend.stop_relays()


class RedisBackend(Backend):
    """PostgreSQL read through relays into Redis, by consumer-group notifiers."""

    name = "redis"

    def __init__(
        self, engine: sa.Engine, notifiers: list[Notifier], schema: str, redis_url: str
    ) -> None:
        super().__init__(engine, notifiers)
        self.schema = schema
        self.redis_url = redis_url
        self.prefix = f"{schema}:"
        #: The ``watch`` calls of the notifiers, to declare on the relays.
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.relays: dict[str, Any] = {}
        #: The notifiers it made (those running keep the relays up).
        self.running: list[RelayedNotifier] = []
        self._groups = 0

    def notifier(self, **options: Any) -> Notifier:
        self._groups += 1
        consumer = options.pop("consumer", None) or "c"
        # A named consumer resumes in its group; an anonymous one has a group of its own.
        group = f"g-{consumer}" if consumer != "c" else f"g{self._groups}"
        n = RelayedNotifier.from_redis(
            self.engine,
            self.redis_url,
            group=group,
            consumer=consumer,
            stream_prefix=self.prefix,
            **options,
        )
        assert isinstance(n, RelayedNotifier)
        n.backend = self
        self._notifiers.append(n)
        self.running.append(n)
        return n

    def relay_watches(self) -> None:
        """Start a relay for each kind of watch declared so far (again when new ones came)."""
        from sqlnotify.relay import Relay  # the optional redis package
        from sqlnotify.testing import wait_until

        for durable in (True, False):
            calls = [(args, kw) for args, kw in self.calls if bool(kw.get("durable")) is durable]
            if not calls:
                continue
            key = repr((durable, calls))
            if key in self.relays:
                continue
            for old in [k for k in self.relays if k.startswith(f"({durable},")]:
                self.relays.pop(old).stop()
            source = Notifier(self.engine)
            for args, kw in calls:
                source.watch(*args, **kw)
            name = f"{self.prefix}{'durable' if durable else 'live'}"
            relay = Relay(
                source,
                self.redis_url,
                name=name,
                stream_prefix=self.prefix,
                at_most_once=not durable,
            )
            self.relays[key] = relay
            relay.start()
            wait_until(lambda r=relay: r.active, timeout=20, message="the relay to be active")

    def stop_relays(self) -> None:
        """Stop every relay (the next start of a notifier starts them again)."""
        for relay in self.relays.values():
            relay.stop()
        self.relays.clear()

    def close(self) -> None:
        import redis

        self.stop_relays()
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
