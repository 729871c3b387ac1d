"""The values receivers get: :class:`Operation` and :class:`ChangeEvent`."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from .exceptions import SQLNotifyConfigurationError

__all__ = ["ChangeEvent", "Gap", "Operation"]


class Operation(str, enum.Enum):
    """The row operations a watch can fire on.

    Members compare equal to their lowercase string values, and every API
    that takes an operation accepts either (``Operation.INSERT`` or
    ``"insert"``).  ``TRUNCATE`` (PostgreSQL only) fires once per truncated
    table, with no row; :meth:`rows` lists the three row operations.

    ``SNAPSHOT`` is no trigger operation: it marks the events of a backfill
    (:meth:`Notifier.backfill <sqlnotify.Notifier.backfill>`), each one a row
    that existed when the backfill read it.  ``watch()`` refuses it.
    """

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"
    SNAPSHOT = "snapshot"

    @classmethod
    def rows(cls) -> tuple[Operation, ...]:
        """The row operations, every database has them: INSERT, UPDATE, DELETE."""
        return (cls.INSERT, cls.UPDATE, cls.DELETE)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def coerce(cls, value: Operation | str) -> Operation:
        """Return the member for ``value`` (a member or its name/value, any case).

        :raises SQLNotifyConfigurationError: naming the valid operations.
        """
        if isinstance(value, Operation):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        valid = ", ".join(repr(m.value) for m in cls)
        raise SQLNotifyConfigurationError(
            f"unknown operation {value!r}: use an Operation member or one of {valid}"
        )


def _json_default(value: Any, binary: str = "base64") -> Any:
    """The JSON form of a column value :mod:`json` cannot write by itself.

    The one encoder of the package: :meth:`ChangeEvent.to_dict`, the command
    line and custom payloads (:meth:`Notifier.notify`) all use it.
    Datetimes, dates and times become ISO 8601 strings, a timedelta its
    seconds (a float), ``Decimal`` and ``UUID`` their ``str()``, bytes
    base64 (or hex with ``binary="hex"``), an enum member its name (what
    SQLAlchemy stores).  Any other type raises :class:`TypeError`.
    """
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if binary == "hex":
            return bytes(value).hex()
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return value.name
    raise TypeError(
        f"payload value {value!r} of type {type(value).__name__} is not JSON-serialisable"
    )


_JSON_NATIVE = (str, int, float, bool, type(None))


def _jsonable(value: Any) -> Any:
    """``value`` with every part :mod:`json` cannot write replaced by its JSON form."""
    if isinstance(value, _JSON_NATIVE) and not isinstance(value, enum.Enum):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return _json_default(value)


_FIELDS = ("schema", "table", "operation", "id", "extra_columns", "timestamp", "channel")
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_new = object.__new__


class ChangeEvent(Mapping[str, Any]):
    """One committed row change (or one custom notification), as delivered.

    Immutable.  Read it by attribute (``event.id``, ``event.extra_columns``)
    or as a read-only mapping over the same field names (``event["id"]``,
    ``dict(event)``).

    Fields:

    ``schema``
        The table's schema (``None`` on SQLite).
    ``table``
        The table's name.
    ``operation``
        The :class:`Operation`.
    ``id``
        The primary key: the value itself for a single-column key, a tuple in
        the watch's ``primary_keys`` order for a composite key.  ``None`` for
        a TRUNCATE event, which has no row.
    ``extra_columns``
        A read-only mapping of the watch's ``extra_columns`` to their values
        (the new row for INSERT and UPDATE, the old row for DELETE).
    ``timestamp``
        When the database produced the change (the trigger ran; for custom
        payloads, when :meth:`Notifier.notify` sent it), as a timezone-aware
        :class:`~datetime.datetime` in UTC, read from the database server's
        clock.
    ``channel``
        The notification channel the event came through.

    UPDATE events also carry ``changed_columns`` (which of the watch's
    columns changed) and, on a watch with ``include_old=True``, ``old``
    (their values before the change).

    Also available: ``row`` (keys and extra columns together), ``position``
    (the event's position in SQLite's change log or in the durable journal,
    else ``None``),
    ``custom`` (``True`` for payloads sent with ``notify()``) and ``status``.

    ``status`` says how complete the event is.  It is always ``"complete"``
    unless a row was too large for one notification (PostgreSQL: 7999 bytes)
    on a watch without ``use_overflow_table``:

    ``"complete"``
        Every column of the watch, as of the change (directly, or fetched
        from the overflow table).
    ``"hydrated"``
        The row was sent by key and its extra columns were re-read from the
        table after the commit: they hold the row as it was when re-read,
        which may be newer than this change.
    ``"row_gone"``
        The row was sent by key and no longer existed when re-read: only
        the keys are set.  Always the case for a too-large DELETE, whose old
        row cannot be read back.
    ``"keys_only"``
        The re-read failed (the failure is logged): only the keys are set.
    ``"lost"``
        Even the keys did not fit, or the table no longer matches the
        installed trigger: only the table and operation are known.

    Values arrive as the columns' Python types where SQLAlchemy knows them
    (``int``, ``bool``, ``str``, ``Decimal``, ``datetime``, ``date``,
    ``UUID``, JSON as ``dict``/``list``), the same on every database.
    :meth:`to_dict` and :meth:`to_json` give the event's stable JSON form.
    """

    __slots__ = (
        "_changed",
        "_channel",
        "_custom",
        "_epoch",
        "_extra",
        "_keys",
        "_old",
        "_operation",
        "_position",
        "_row",
        "_schema",
        "_status",
        "_table",
    )

    def __init__(
        self,
        *,
        schema: str | None,
        table: str,
        operation: Operation,
        row: Mapping[str, Any],
        primary_keys: tuple[str, ...],
        epoch: float | None,
        channel: str,
        position: int | None = None,
        custom: bool = False,
        status: str = "complete",
        changed_columns: tuple[str, ...] | None = None,
        old: Mapping[str, Any] | None = None,
    ) -> None:
        self._schema = schema
        self._table = table
        self._operation = operation
        self._row = row
        self._keys = primary_keys
        self._epoch = epoch
        self._channel = channel
        self._position = position
        self._custom = custom
        self._status = status
        self._extra: Mapping[str, Any] | None = None
        self._changed = changed_columns
        self._old = old

    @classmethod
    def _complete(
        cls,
        schema: str | None,
        table: str,
        operation: Operation,
        row: Mapping[str, Any],
        primary_keys: tuple[str, ...],
        epoch: float | None,
        channel: str,
        position: int | None = None,
    ) -> ChangeEvent:
        """The dispatcher's constructor for a plain row event, without keyword parsing.

        Sets every slot exactly as :meth:`__init__` does with the defaults
        (and ``position``).
        """
        self = _new(cls)
        self._schema = schema
        self._table = table
        self._operation = operation
        self._row = row
        self._keys = primary_keys
        self._epoch = epoch
        self._channel = channel
        self._position = position
        self._custom = False
        self._status = "complete"
        self._extra = None
        self._changed = None
        self._old = None
        return self

    # -- fields -----------------------------------------------------------
    @property
    def schema(self) -> str | None:
        """The table's schema, or ``None`` where the database has none."""
        return self._schema

    @property
    def table(self) -> str:
        """The table's name."""
        return self._table

    @property
    def operation(self) -> Operation:
        """The row operation."""
        return self._operation

    @property
    def id(self) -> Any:
        """The primary key value, or a tuple of values for a composite key."""
        keys = self._keys
        row = self._row
        if len(keys) == 1:
            return row.get(keys[0])
        return tuple(row.get(k) for k in keys)

    @property
    def extra_columns(self) -> Mapping[str, Any]:
        """The watch's extra columns and their values (read-only)."""
        extra = self._extra
        if extra is None:
            keys = self._keys
            extra = MappingProxyType({k: v for k, v in self._row.items() if k not in keys})
            self._extra = extra
        return extra

    @property
    def timestamp(self) -> datetime | None:
        """When the change was produced, as an aware UTC datetime."""
        if self._epoch is None:
            return None
        return datetime.fromtimestamp(self._epoch, timezone.utc)

    @property
    def epoch(self) -> float | None:
        """:attr:`timestamp` as seconds since the Unix epoch."""
        return self._epoch

    @property
    def channel(self) -> str:
        """The notification channel."""
        return self._channel

    @property
    def row(self) -> Mapping[str, Any]:
        """Keys and extra columns together, as one read-only mapping."""
        return MappingProxyType(dict(self._row))

    @property
    def primary_keys(self) -> tuple[str, ...]:
        """The names of the key columns, in the order ``id`` uses."""
        return self._keys

    @property
    def position(self) -> int | None:
        """The event's position in a log, else ``None``.

        On SQLite, its sequence number in the change log; for durable
        delivery, its journal position.
        """
        return self._position

    @property
    def custom(self) -> bool:
        """``True`` when the payload came from :meth:`Notifier.notify`."""
        return self._custom

    @property
    def status(self) -> str:
        """``"complete"``, ``"hydrated"``, ``"row_gone"``, ``"keys_only"`` or ``"lost"``."""
        return self._status

    @property
    def changed_columns(self) -> tuple[str, ...] | None:
        """UPDATE: the watch's columns whose value changed, in the watch's order.

        The key and extra columns, then the ``trigger_columns``, each compared
        by the trigger with ``IS DISTINCT FROM`` (two NULLs are equal); empty
        when the UPDATE changed none of them.  ``None`` for INSERT, DELETE and
        custom events, and when the payload was lost.
        """
        return self._changed

    @property
    def old(self) -> Mapping[str, Any] | None:
        """UPDATE with ``include_old=True``: the key and extra columns before the change.

        A read-only mapping typed exactly like :attr:`row`.  ``None`` without
        ``include_old``, for other operations, and when the row was too large
        and sent by key (``status`` not ``"complete"``): the old values cannot
        be read back.
        """
        old = self._old
        return None if old is None else MappingProxyType(old)

    # -- JSON -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The event as a plain dict that :func:`json.dumps` writes as it is.

        The keys, always all present and in this order, are the form's
        stable contract:

        ``schema``
            string, or ``null`` (SQLite).
        ``table``
            string.
        ``operation``
            ``"insert"``, ``"update"``, ``"delete"``, ``"truncate"``, or
            ``"snapshot"`` for a row a backfill read.
        ``id``
            the key's JSON form; a list for a composite key; ``null`` when
            ``status`` is ``"lost"``.
        ``extra_columns``
            an object of column name to JSON form.
        ``timestamp``
            ISO 8601 with the UTC offset (``"2026-01-31T12:00:00.123456+00:00"``),
            or ``null``.
        ``channel``
            string.
        ``position``
            integer, or ``null`` (see :attr:`position`).
        ``status``
            string (see :attr:`status`).
        ``custom``
            ``true`` for a payload sent with :meth:`Notifier.notify`.
        ``changed_columns``
            a list of column names, or ``null`` (see :attr:`changed_columns`).
        ``old``
            an object of column name to JSON form, or ``null`` (see :attr:`old`).

        A value's JSON form: strings, integers, floats, booleans and
        ``null`` as they are; JSON columns as objects and lists;
        ``datetime``, ``date`` and ``time`` as ISO 8601 strings;
        ``timedelta`` as seconds (a number); ``Decimal`` and ``UUID`` as
        strings (no precision lost); ``bytes`` as base64; an enum member as
        its name (what SQLAlchemy stores).  Call it on any thread.
        """
        timestamp = self.timestamp
        return {
            "schema": self._schema,
            "table": self._table,
            "operation": self._operation.value,
            "id": _jsonable(self.id),
            "extra_columns": _jsonable(self.extra_columns),
            "timestamp": timestamp.isoformat() if timestamp is not None else None,
            "channel": self._channel,
            "position": self._position,
            "status": self._status,
            "custom": self._custom,
            "changed_columns": None if self._changed is None else list(self._changed),
            "old": None if self._old is None else _jsonable(self._old),
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (non-ASCII text kept as is).

        ``kwargs`` go to :func:`json.dumps` (``indent=2``, ``sort_keys=True``, ...).
        """
        kwargs.setdefault("ensure_ascii", False)
        return json.dumps(self.to_dict(), **kwargs)

    # -- mapping ----------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in _FIELDS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)

    def __contains__(self, key: object) -> bool:
        return key in _FIELDS

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChangeEvent):
            return (
                self._channel == other._channel
                and self._operation == other._operation
                and self._table == other._table
                and self._schema == other._schema
                and dict(self._row) == dict(other._row)
                and self._epoch == other._epoch
                and self._position == other._position
                and self._changed == other._changed
                and self._old == other._old
            )
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        where = f"{self._schema}.{self._table}" if self._schema else self._table
        return (
            f"<ChangeEvent {self._operation.value} {where} id={self.id!r}"
            f" extra={dict(self.extra_columns)!r} channel={self._channel!r}>"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                self._schema,
                self._table,
                self._operation.value,
                dict(self._row),
                self._keys,
                self._epoch,
                self._channel,
                self._position,
                self._custom,
                self._status,
                self._changed,
                None if self._old is None else dict(self._old),
            ),
        )


def _rebuild(
    schema: str | None,
    table: str,
    operation: str,
    row: dict[str, Any],
    keys: tuple[str, ...],
    epoch: float | None,
    channel: str,
    position: int | None,
    custom: bool,
    status: str,
    changed: tuple[str, ...] | None = None,
    old: dict[str, Any] | None = None,
) -> ChangeEvent:
    return ChangeEvent(
        schema=schema,
        table=table,
        operation=Operation(operation),
        row=row,
        primary_keys=keys,
        epoch=epoch,
        channel=channel,
        position=position,
        custom=custom,
        status=status,
        changed_columns=changed,
        old=old,
    )


@dataclasses.dataclass(frozen=True)
class Gap:
    """A window in which events of some channels may have been missed.

    Passed to callbacks registered with :meth:`Notifier.on_gap
    <sqlnotify.Notifier.on_gap>`; the same fields are the keywords of the
    :data:`sqlnotify.signals.gap` blinker signal.  Re-read the state you
    derive from those channels' tables.

    :ivar start: start of the window (aware UTC datetime).
    :ivar end: end of the window (aware UTC datetime).
    :ivar channels: the channels affected.
    :ivar reason: ``"disconnected"``, ``"overflow"`` or ``"retention"``.
    :ivar count: events known to be missing, or ``None`` when unknown.
    """

    start: datetime
    end: datetime
    channels: tuple[str, ...]
    reason: str
    count: int | None = None
