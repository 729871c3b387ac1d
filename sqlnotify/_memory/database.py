"""The rows, triggers, listening connections and journal of a memory database.

Writing a row (:meth:`MemoryDatabase.insert`, :meth:`~MemoryDatabase.update`,
:meth:`~MemoryDatabase.delete`) fires the installed watches of that table
and operation exactly as PostgreSQL's triggers do: the same payload
(``{"ts": <epoch>, "row": {...}}`` with the watch's key and extra columns;
``trigger_columns`` compared like ``IS DISTINCT FROM``, a ``where=`` condition
evaluated in Python with SQL's NULL logic), or for a durable
watch a journal row and the ``{"wake":true}`` wake-up.  Each write is its
own committed transaction.  Everything here is thread-safe.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import json
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import types as sqltypes

from .._journal import Row
from .._payload import CHG, OLD, Notification
from .._watch import split_name, table_of
from ..events import Operation
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyListenerError
from .source import MemorySource
from .triggers import Triggers

__all__ = ["WAKE_PAYLOAD", "MemoryDatabase", "MemoryJournal", "encode_value"]

#: The notification of a durable watch (the event itself is in the journal).
WAKE_PAYLOAD = '{"wake":true}'
#: Most journal rows one prune removes.
PRUNE_BATCH = 1000

TableKey = tuple["str | None", str]


def _overrides_bind(t: sqltypes.TypeDecorator[Any]) -> bool:
    own = type(t).process_bind_param
    return own.__code__ is not sqltypes.TypeDecorator.process_bind_param.__code__


def encode_value(value: Any, type_: Any) -> Any:
    """A column value as PostgreSQL's trigger writes it into the payload's JSON.

    A ``TypeDecorator``'s ``process_bind_param`` runs first, as SQLAlchemy
    does when it writes the row; decimals travel as text, binary as hex
    (this dialect's ``binary_encoding``), intervals as seconds, dates and
    times in ISO 8601, enums by their stored name.
    """
    t = type_
    while isinstance(t, sqltypes.TypeDecorator) and not isinstance(t, sqltypes.Interval):
        if value is not None and _overrides_bind(t):
            value = t.process_bind_param(value, _SQLITE_DIALECT)
        t = t.impl_instance if hasattr(t, "impl_instance") else t.impl
    if value is None:
        return None
    if isinstance(t, sqltypes.ARRAY):
        return [encode_value(v, t.item_type) for v in value]
    if isinstance(t, sqltypes.Enum) and isinstance(value, enum.Enum):
        lookup = getattr(t, "_object_lookup", None) or {}
        for stored, member in lookup.items():
            if member is value:
                return stored
        return value.name
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(t, sqltypes.Float):
        return float(value)
    if isinstance(t, sqltypes.Numeric):
        return str(value) if t.asdecimal else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(t, sqltypes.JSON):
        return value
    if isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


def _sqlite_dialect() -> Any:
    from sqlalchemy.dialects.sqlite.base import SQLiteDialect  # imports no driver

    return SQLiteDialect()


#: The dialect a ``TypeDecorator``'s ``process_bind_param`` is given.
_SQLITE_DIALECT = _sqlite_dialect()


@dataclasses.dataclass
class _JournalRow:
    id: int
    channel: str
    payload: str
    created: float


class MemoryDatabase:
    """A database kept in this process: rows, triggers, listening connections, a journal.

    Register tables with :meth:`define` (or pass the Table or model to each
    write), then write rows with :meth:`insert`, :meth:`update` and
    :meth:`delete`: the installed watches of that table and operation fire
    as PostgreSQL's triggers do, with the same payloads; a durable watch
    appends to the journal and sends a wake-up.  Each write is its own
    committed transaction, made on the caller's thread (any thread).
    Notifications go to the connections listening when they are sent, as
    with NOTIFY: one sent while a listener reconnects is lost.
    :meth:`disconnect` breaks every listening connection and :meth:`lose`
    removes journal rows, so reconnects and gaps can be tested.
    """

    _by_engine: ClassVar[weakref.WeakKeyDictionary[sa.Engine, MemoryDatabase]] = (
        weakref.WeakKeyDictionary()
    )
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tables: dict[TableKey, sa.Table] = {}
        self._rows: dict[TableKey, list[dict[str, Any]]] = {}
        #: The installed watches (this database's triggers).
        self.triggers = Triggers()
        self._sources: set[MemorySource] = set()
        self._journal: collections.deque[_JournalRow] = collections.deque()
        self._last_id = 0
        self._consumers: dict[str, tuple[int, float]] = {}
        self._claims: dict[str, object] = {}
        self._pruned: tuple[int, float] | None = None
        #: How many listening connections :meth:`disconnect` closed so far.
        self.disconnects = 0

    @classmethod
    def of(cls, engine: sa.Engine) -> MemoryDatabase:
        """The database every :class:`MemoryDialect` on ``engine`` uses (made on first use)."""
        with cls._registry_lock:
            db = cls._by_engine.get(engine)
            if db is None:
                db = cls._by_engine[engine] = cls()
            return db

    # -- tables ----------------------------------------------------------------
    def define(self, table: Any) -> sa.Table:
        """Register a model or :class:`~sqlalchemy.Table`, so writes and watches may name it."""
        found = table_of(table)
        if found is None:
            return self.table(table)
        with self._lock:
            self._tables[(found.schema, found.name)] = found
            self._rows.setdefault((found.schema, found.name), [])
        return found

    def table(self, target: Any) -> sa.Table:
        """The registered table for a model, Table or name (``"orders"``, ``"shop.orders"``)."""
        if not isinstance(target, str):
            return self.define(target)
        schema, name = split_name(target)
        with self._lock:
            table = self._tables.get((schema, name))
            if table is None and schema is None:
                matches = [t for (s, n), t in self._tables.items() if n == name]
                table = matches[0] if len(matches) == 1 else None
        if table is None:
            raise SQLNotifyConfigurationError(
                f"the memory database has no table {target!r}: pass the Table or model, or"
                " register it first with define()"
            )
        return table

    def rows(self, target: Any) -> list[dict[str, Any]]:
        """Copies of the rows of a table, in insertion order."""
        table = self.table(target)
        with self._lock:
            return [dict(r) for r in self._rows.get((table.schema, table.name), [])]

    # -- writes ----------------------------------------------------------------
    def insert(self, target: Any, row: Mapping[str, Any]) -> dict[str, Any]:
        """Insert one row and fire the table's insert watches; return the row as stored.

        Columns left out get their scalar default or ``None``; an integer
        primary key left out is numbered after the largest one.

        :raises ValueError: when a row with the same primary key exists
            (nothing is written, no watch fires).
        """
        table = self.table(target)
        new = self._complete(table, row)
        keys = [c.name for c in table.primary_key.columns]
        with self._lock:
            rows = self._rows.setdefault((table.schema, table.name), [])
            if keys and any(all(r.get(k) == new[k] for k in keys) for r in rows):
                shown = ", ".join(f"{k}={new[k]!r}" for k in keys)
                raise ValueError(f"duplicate key ({shown}) in table {table.fullname!r}")
            rows.append(new)
            self._fire(table, Operation.INSERT, None, new)
        return dict(new)

    def update(self, target: Any, key: Any, values: Mapping[str, Any]) -> int:
        """Set ``values`` on the rows matching ``key``; fire update watches; return how many.

        ``key`` is a mapping of column to value, or the primary key's value
        (a tuple for a composite key).
        """
        table = self.table(target)
        self._check_columns(table, values)
        match = self._key(table, key)
        count = 0
        with self._lock:
            for stored in self._rows.get((table.schema, table.name), []):
                if all(stored.get(c) == v for c, v in match.items()):
                    old = dict(stored)
                    stored.update(values)
                    self._fire(table, Operation.UPDATE, old, dict(stored))
                    count += 1
        return count

    def delete(self, target: Any, key: Any) -> int:
        """Delete the rows matching ``key`` (as for :meth:`update`); return how many."""
        table = self.table(target)
        match = self._key(table, key)
        with self._lock:
            rows = self._rows.get((table.schema, table.name), [])
            gone = [r for r in rows if all(r.get(c) == v for c, v in match.items())]
            for old in gone:
                rows.remove(old)
                self._fire(table, Operation.DELETE, old, None)
        return len(gone)

    def _check_columns(self, table: sa.Table, values: Mapping[str, Any]) -> None:
        unknown = sorted(set(values) - set(table.columns.keys()))
        if unknown:
            raise SQLNotifyConfigurationError(
                f"table {table.fullname!r} has no column {unknown[0]!r}"
            )

    def _complete(self, table: sa.Table, row: Mapping[str, Any]) -> dict[str, Any]:
        self._check_columns(table, row)
        out: dict[str, Any] = {}
        for column in table.columns:
            if column.name in row:
                out[column.name] = row[column.name]
                continue
            default = column.default
            if default is not None and getattr(default, "is_scalar", False):
                out[column.name] = default.arg  # type: ignore[attr-defined]
            elif column.primary_key and isinstance(column.type, sqltypes.Integer):
                with self._lock:
                    taken = [
                        r.get(column.name) for r in self._rows.get((table.schema, table.name), [])
                    ]
                out[column.name] = max((v for v in taken if isinstance(v, int)), default=0) + 1
            else:
                out[column.name] = None
        return out

    def _key(self, table: sa.Table, key: Any) -> dict[str, Any]:
        if isinstance(key, Mapping):
            self._check_columns(table, key)
            return dict(key)
        names = [c.name for c in table.primary_key.columns]
        values = key if isinstance(key, tuple) else (key,)
        if not names or len(names) != len(values):
            raise SQLNotifyConfigurationError(
                f"key {key!r} does not match the primary key ({', '.join(names) or 'none'}) of"
                f" table {table.fullname!r}: pass a mapping of column names to values"
            )
        return dict(zip(names, values, strict=True))

    def _fire(
        self,
        table: sa.Table,
        op: Operation,
        old: Mapping[str, Any] | None,
        new: Mapping[str, Any] | None,
    ) -> None:
        # Under the lock: triggers of one write run in the order they were installed.
        for watch in self.triggers.watches():
            if watch.operation is not op or watch.table != table.name:
                continue
            if (watch.schema or watch.default_schema) != table.schema:
                continue
            columns = watch.trigger_columns
            if columns and old and new and all(old.get(c) == new.get(c) for c in columns):
                continue  # no trigger column changed (IS DISTINCT FROM)
            source = old if op is Operation.DELETE else new
            assert source is not None
            if watch.condition is not None and not watch.condition.evaluate(source):
                continue  # the where= condition rejects the row
            types = watch.column_types
            values = {c: encode_value(source.get(c), types.get(c)) for c in watch.payload_columns}
            row = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
            if op is Operation.UPDATE and old is not None and new is not None:
                changed = [c for c in watch.compared_columns if old.get(c) != new.get(c)]
                row += f',"{CHG}":' + json.dumps(changed, ensure_ascii=False)
                if watch.include_old:
                    was = {c: encode_value(old.get(c), types.get(c)) for c in watch.payload_columns}
                    row += f',"{OLD}":' + json.dumps(was, separators=(",", ":"), ensure_ascii=False)
            payload = f'{{"ts":{time.time()!r},"row":{row}}}'
            if watch.durable:
                self._append(watch.channel, payload)
                self.send(watch.channel, WAKE_PAYLOAD)
            else:
                self.send(watch.channel, payload)

    # -- notifications -----------------------------------------------------------
    def send(self, channel: str, payload: str) -> None:
        """Send one notification to every connection listening on ``channel``."""
        note = Notification(channel, payload)
        with self._lock:
            for source in self._sources:
                if channel in source.channels:
                    source.deliver(note)

    def open_source(self, channels: Sequence[str]) -> MemorySource:
        """A new listening connection on ``channels``."""
        source = MemorySource(channels, self._forget)
        with self._lock:
            self._sources.add(source)
        return source

    def _forget(self, source: MemorySource) -> None:
        with self._lock:
            self._sources.discard(source)

    def disconnect(self) -> int:
        """Close every listening connection, as a server restart would; return how many.

        Each listener finds its connection gone at its next wait and
        reconnects; notifications sent meanwhile are lost (durable watches
        read them from the journal afterwards).
        """
        with self._lock:
            sources = list(self._sources)
            self._sources.clear()
            self.disconnects += len(sources)
        for source in sources:
            source.kill()
        return len(sources)

    @property
    def listeners(self) -> int:
        """How many listening connections are open."""
        with self._lock:
            return len(self._sources)

    # -- journal ----------------------------------------------------------------
    def _append(self, channel: str, payload: str) -> None:
        self._last_id += 1
        self._journal.append(_JournalRow(self._last_id, channel, payload, time.time()))

    def journal_rows(self) -> list[tuple[int, str, str]]:
        """``(position, channel, payload)`` of every journal row still kept."""
        with self._lock:
            return [(r.id, r.channel, r.payload) for r in self._journal]

    def journal_channels(self) -> set[str]:
        """The channels of the journal rows still kept."""
        with self._lock:
            return {r.channel for r in self._journal}

    def lose(self, upto: int | None = None) -> int:
        """Remove journal rows up to position ``upto`` (default: all), as retention would.

        Consumers behind them are told of the gap when they next connect.
        Returns how many rows went.
        """
        with self._lock:
            return self._remove(lambda r: upto is None or r.id <= upto, None)

    def _remove(self, doomed: Any, limit: int | None) -> int:
        removed = 0
        newest: _JournalRow | None = None
        while self._journal and (limit is None or removed < limit) and doomed(self._journal[0]):
            newest = self._journal.popleft()
            removed += 1
        if newest is not None and (self._pruned is None or newest.id > self._pruned[0]):
            self._pruned = (newest.id, newest.created)
        return removed


class MemoryJournal:
    """The journal store of a :class:`MemoryDatabase`; positions are integers (row ids)."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._db = database
        self._claimed: str | None = None

    def ensure(self) -> None:
        """Nothing to create."""

    def acquire(self, consumer: str) -> None:
        db = self._db
        with db._lock:
            holder = db._claims.get(consumer)
            if holder is not None and holder is not self:
                raise SQLNotifyListenerError(
                    f"consumer {consumer!r} is already active in another notifier; one consumer"
                    " name is read by one notifier at a time"
                )
            db._claims[consumer] = self
        self._claimed = consumer

    def start_position(self) -> int:
        with self._db._lock:
            return self._db._last_id

    def read(self, after: Any, channels: Sequence[str], limit: int) -> Sequence[Row]:
        wanted = set(channels)
        with self._db._lock:
            rows = [r for r in self._db._journal if r.id > after][:limit]
        return [(r.id, r.channel, r.payload if r.channel in wanted else None) for r in rows]

    def stamp(self, position: Any) -> int:
        return int(position)

    def load(self, consumer: str) -> tuple[Any, dt.datetime] | None:
        with self._db._lock:
            found = self._db._consumers.get(consumer)
        if found is None:
            return None
        return found[0], dt.datetime.fromtimestamp(found[1], dt.timezone.utc)

    def save(self, consumer: str, position: Any) -> None:
        with self._db._lock:
            old = self._db._consumers.get(consumer)
            kept = max(int(position), old[0]) if old is not None else int(position)
            self._db._consumers[consumer] = (kept, time.time())

    def behind(self, position: Any) -> dt.datetime | None:
        with self._db._lock:
            pruned = self._db._pruned
        if pruned is None or int(position) >= pruned[0]:
            return None
        return dt.datetime.fromtimestamp(pruned[1], dt.timezone.utc)

    def prune(self, retention: float, consumer_expiry: float) -> int:
        db = self._db
        now = time.time()
        with db._lock:
            needed = [p for p, seen in db._consumers.values() if seen > now - consumer_expiry]
            upto = min(needed, default=None)
            return db._remove(
                lambda r: r.created <= now - retention and (upto is None or r.id <= upto),
                PRUNE_BATCH,
            )

    def close(self) -> None:
        consumer, self._claimed = self._claimed, None
        if consumer is not None:
            with self._db._lock:
                if self._db._claims.get(consumer) is self:
                    del self._db._claims[consumer]
