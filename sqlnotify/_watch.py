"""Watch definitions: what the user asked for, resolved against a real table."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import NoInspectionAvailable

from ._condition import Condition
from ._names import MAX_IDENTIFIER_BYTES as MAX_NAME_BYTES
from ._names import check_label, did_you_mean, digest, object_name
from .events import Operation
from .exceptions import SQLNotifyConfigurationError, SQLNotifyIdentifierSizeError

__all__ = [
    "PAIRING_COLUMN",
    "Watch",
    "WatchRequest",
    "describe_target",
    "table_of",
    "view_message",
    "why_not_installable",
]


#: The column a per-statement UPDATE trigger numbers the rows of its transition
#: tables in; a watched table may not have a column of that name.
PAIRING_COLUMN = "sqlnotify_n"


def describe_target(target: Any) -> str:
    """A short human name for a model, Table or table name, for messages."""
    if isinstance(target, str):
        return repr(target)
    if isinstance(target, sa.Table):
        return f"table {target.fullname!r}"
    name = getattr(target, "__name__", None)
    return f"model {name}" if name else repr(target)


def table_of(target: Any) -> sa.Table | None:
    """The :class:`~sqlalchemy.Table` behind a model or Table; ``None`` for a name string."""
    if isinstance(target, str):
        return None
    if isinstance(target, sa.Table):
        return target
    try:
        mapper = sa.inspect(target)
    except NoInspectionAvailable:
        mapper = None
    table = getattr(mapper, "local_table", None)
    if isinstance(table, sa.Table):
        return table
    raise SQLNotifyConfigurationError(
        f"cannot watch {target!r}: pass a mapped model class (declarative or SQLModel with"
        " table=True), a sqlalchemy.Table, or a table name such as 'orders' or 'shop.orders'"
    )


def split_name(name: str) -> tuple[str | None, str]:
    """``"shop.orders"`` -> ``("shop", "orders")``; ``"orders"`` -> ``(None, "orders")``."""
    if not name or not isinstance(name, str):
        raise SQLNotifyConfigurationError(f"invalid table name {name!r}")
    schema, dot, table = name.rpartition(".")
    if dot and schema and table:
        return schema, table
    return None, name


def _condition(where: Any) -> Condition:
    return where if isinstance(where, Condition) else Condition.build(where)


def _names(value: Sequence[str] | str | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise SQLNotifyConfigurationError(
            f"{what} must be a list of column names, not the string {value!r}"
            f" (did you mean [{value!r}]?)"
        )
    out = tuple(value)
    for col in out:
        if not isinstance(col, str) or not col:
            raise SQLNotifyConfigurationError(f"{what} holds {col!r}: column names are strings")
    return tuple(dict.fromkeys(out))


@dataclasses.dataclass(frozen=True)
class WatchRequest:
    """What ``Notifier.watch()`` was given, checked for shape but not yet against a table."""

    target: Any
    operation: Operation
    extra_columns: tuple[str, ...] | None
    trigger_columns: tuple[str, ...] | None
    primary_keys: tuple[str, ...] | None
    channel_label: str | None
    use_overflow_table: bool
    durable: bool = False
    where: Condition | None = None
    include_old: bool = False
    per_statement: bool = False

    @classmethod
    def build(
        cls,
        target: Any,
        operation: Operation | str,
        extra_columns: Sequence[str] | None,
        trigger_columns: Sequence[str] | None,
        primary_keys: Sequence[str] | None,
        channel_label: str | None,
        use_overflow_table: bool,
        durable: bool = False,
        where: Any = None,
        include_old: bool = False,
        per_statement: bool = False,
    ) -> WatchRequest:
        op = Operation.coerce(operation)
        if op is Operation.SNAPSHOT:
            raise SQLNotifyConfigurationError(
                "'snapshot' is not a trigger operation: watch the table's row operations"
                f" durably and call notifier.backfill() (watch of {describe_target(target)})"
            )
        if include_old and op is not Operation.UPDATE:
            raise SQLNotifyConfigurationError(
                f"include_old only applies to Operation.UPDATE, not {op.value!r} (a DELETE"
                f" event's row is the old row already; watch of {describe_target(target)})"
            )
        triggers = _names(trigger_columns, "trigger_columns")
        if triggers and op is not Operation.UPDATE:
            raise SQLNotifyConfigurationError(
                f"trigger_columns only applies to Operation.UPDATE, not {op.value!r}"
                f" (watch of {describe_target(target)})"
            )
        if op is Operation.TRUNCATE and (extra_columns or where is not None):
            raise SQLNotifyConfigurationError(
                f"a TRUNCATE event has no row, so a TRUNCATE watch takes no extra_columns and"
                f" no where= condition (watch of {describe_target(target)})"
            )
        if per_statement and op is Operation.TRUNCATE:
            raise SQLNotifyConfigurationError(
                "per_statement applies to INSERT, UPDATE and DELETE; a TRUNCATE watch's"
                f" trigger runs once per statement already (watch of {describe_target(target)})"
            )
        keys = _names(primary_keys, "primary_keys")
        if keys is not None and not keys:
            raise SQLNotifyConfigurationError("primary_keys must name at least one column")
        if isinstance(target, str):
            split_name(target)
        else:
            table_of(target)
        return cls(
            target=target,
            operation=op,
            extra_columns=_names(extra_columns, "extra_columns"),
            trigger_columns=triggers or None,
            primary_keys=keys,
            channel_label=check_label(channel_label),
            use_overflow_table=bool(use_overflow_table),
            durable=bool(durable),
            where=None if where is None else _condition(where),
            include_old=bool(include_old),
            per_statement=bool(per_statement),
        )

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], target: str) -> WatchRequest:
        """The request an installed trigger recorded (see :meth:`Watch.metadata`).

        :raises KeyError: or :class:`TypeError`, or a configuration error, when
            the record is incomplete or no longer valid.
        """
        return cls.build(
            target,
            meta["operation"],
            meta["columns"],
            meta["trigger_columns"] or None,
            meta["keys"],
            meta["label"],
            bool(meta.get("overflow", False)),
            bool(meta.get("durable", False)),
            Condition.from_record(meta["where"], meta.get("when")) if meta.get("where") else None,
            bool(meta.get("include_old", False)),
            bool(meta.get("statement", False)),
        )

    def resolve(self, table: sa.Table, default_schema: str | None = None) -> Watch:
        """Check every column against ``table`` and return the resolved :class:`Watch`."""
        what = describe_target(self.target)
        cols = {c.name: c for c in table.columns}

        def check(names: Iterable[str], param: str) -> None:
            for name in names:
                if name not in cols:
                    valid = ", ".join(cols) or "(none)"
                    raise SQLNotifyConfigurationError(
                        f"{param}: column {name!r} is not on {what} (table"
                        f" {table.fullname!r}){did_you_mean(name, cols)}; its columns are:"
                        f" {valid}"
                    )

        real_pk = tuple(c.name for c in table.primary_key.columns)
        if self.primary_keys is None:
            if not real_pk:
                raise SQLNotifyConfigurationError(
                    f"{what} (table {table.fullname!r}) has no primary key: pass primary_keys="
                    "[...] naming the columns that identify a row (a view cannot be watched"
                    " at all: watch the table it reads from)"
                )
            keys = real_pk
        else:
            keys = self.primary_keys
            check(keys, "primary_keys")
            if real_pk:
                wrong = [k for k in keys if k not in real_pk]
                if wrong:
                    raise SQLNotifyConfigurationError(
                        f"primary_keys: {', '.join(map(repr, wrong))} is not a primary key"
                        f" column of {what} (table {table.fullname!r}); its primary key is"
                        f" ({', '.join(real_pk)})"
                    )
        extras = tuple(c for c in (self.extra_columns or ()) if c not in keys)
        check(self.extra_columns or (), "extra_columns")
        check(self.trigger_columns or (), "trigger_columns")
        if self.where is not None:
            self.where.check_columns(table, what)
        if self.per_statement and PAIRING_COLUMN in cols:
            raise SQLNotifyConfigurationError(
                f"per_statement=True: {what} (table {table.fullname!r}) has a column named"
                f" {PAIRING_COLUMN!r}, the name a per-statement trigger gives its own row"
                " numbers; watch it row by row (per_statement=False)"
            )
        schema = table.schema
        types = {name: cols[name].type for name in (*keys, *extras)}
        sender = self.target  # the model class, the Table, or the name as the user wrote it
        return Watch(
            request=self,
            sender=sender,
            schema=schema,
            table=table.name,
            operation=self.operation,
            primary_keys=keys,
            extra_columns=extras,
            trigger_columns=self.trigger_columns or (),
            channel_label=self.channel_label,
            use_overflow_table=self.use_overflow_table,
            durable=self.durable,
            column_types=types,
            default_schema=default_schema,
            condition=self.where,
            include_old=self.include_old,
            per_statement=self.per_statement,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Watch:
    """A watch checked against its table: everything needed to build and decode its trigger."""

    request: WatchRequest
    sender: Any
    schema: str | None
    table: str
    operation: Operation
    primary_keys: tuple[str, ...]
    extra_columns: tuple[str, ...]
    trigger_columns: tuple[str, ...]
    channel_label: str | None
    use_overflow_table: bool
    durable: bool
    column_types: Mapping[str, Any]
    default_schema: str | None = None
    #: The server-side condition (``where=``), if any.
    condition: Condition | None = None
    #: UPDATE: the old values of the payload columns travel too (``event.old``).
    include_old: bool = False
    #: The trigger runs once per statement, over its transition tables
    #: (PostgreSQL; the other databases fire row triggers whatever it says).
    per_statement: bool = False

    @property
    def key(self) -> tuple[str | None, str, Operation, str | None]:
        return (self.schema, self.table, self.operation, self.channel_label)

    @property
    def payload_columns(self) -> tuple[str, ...]:
        return (*self.primary_keys, *self.extra_columns)

    @property
    def compared_columns(self) -> tuple[str, ...]:
        """UPDATE: the columns ``changed_columns`` reports on (payload, then trigger columns)."""
        return tuple(dict.fromkeys((*self.payload_columns, *self.trigger_columns)))

    @functools.cached_property
    def channel(self) -> str:
        """The notification channel, also the trigger's and its function's name.

        ``sqlnotify_<schema>_<table>_<op>[_<label>]_<spec>``: the readable
        part (shortened to fit 63 bytes) and a hash of the whole spec (the
        effective schema, table, operation, label, key, payload and trigger
        columns, durability, overflow table, condition).  Channels are database-wide,
        so the schema is named even for an unqualified table.  Two watches
        that differ in anything that shapes their events never share a
        trigger: each application gets exactly the columns it asked for;
        the same spec, in any number of processes or applications, always
        shares one.
        """
        parts = [self.table, self.operation.value]
        schema = self.effective_schema
        if schema:
            parts.insert(0, schema)
        if self.channel_label:
            parts.append(self.channel_label)
        readable = object_name(*parts)
        suffix = "_" + self.spec_id
        keep = MAX_NAME_BYTES - len(suffix)
        if len(readable) > keep:
            readable = readable[:keep].rstrip("_")
        return readable + suffix

    @property
    def spec(self) -> dict[str, Any]:
        """Everything that shapes this watch's trigger and events (its channel hashes it).

        ``where`` (the condition's key), ``include_old`` and ``statement``
        (``per_statement=True``) are present only when set, so watches
        without them keep their channels.
        """
        spec: dict[str, Any] = {
            "schema": self.effective_schema,
            "table": self.table,
            "operation": self.operation.value,
            "label": self.channel_label,
            "keys": list(self.primary_keys),
            "columns": list(self.extra_columns),
            "trigger_columns": list(self.trigger_columns),
            "durable": self.durable,
            "overflow": self.use_overflow_table,
        }
        if self.condition is not None:
            spec["where"] = self.condition.key
        if self.include_old:
            spec["include_old"] = True
        if self.per_statement:
            spec["statement"] = True
        return spec

    @property
    def spec_id(self) -> str:
        """A 10-character hash of :attr:`spec`."""
        return digest(json.dumps(self.spec, sort_keys=True, separators=(",", ":")))

    @property
    def effective_schema(self) -> str | None:
        return self.schema or self.default_schema

    def with_default_schema(self, schema: str | None) -> Watch:
        return dataclasses.replace(self, default_schema=schema)

    def metadata(self) -> dict[str, Any]:
        """What the installed objects record about the watch (for status and drift checks).

        A dialect adds ``when``, the condition's SQL text, next to ``where``.
        """
        meta: dict[str, Any] = {
            "table": self.table,
            "operation": self.operation.value,
            "channel": self.channel,
            "label": self.channel_label,
            "keys": list(self.primary_keys),
            "columns": list(self.extra_columns),
            "trigger_columns": list(self.trigger_columns),
            "durable": self.durable,
            "overflow": self.use_overflow_table,
        }
        if self.condition is not None:
            meta["where"] = self.condition.key
        if self.include_old:
            meta["include_old"] = True
        if self.per_statement:
            meta["statement"] = True
        return meta

    def named_objects(self) -> list[tuple[str, str]]:
        """``(what, name)`` for every database name the watch's SQL contains."""
        names = [("schema", self.effective_schema or ""), ("table", self.table)]
        names += [("primary key column", c) for c in self.primary_keys]
        names += [("extra_columns column", c) for c in self.extra_columns]
        names += [("trigger_columns column", c) for c in self.trigger_columns]
        return [(what, name) for what, name in names if name]

    def check_names(self, *, max_bytes: int | None, database: str) -> None:
        """Refuse names the database cannot hold.

        Any other character is fine: sqlnotify quotes every name it writes.

        :param max_bytes: the longest name in UTF-8 bytes, or ``None``.
        :raises SQLNotifyIdentifierSizeError: a name is longer than ``max_bytes``.
        :raises SQLNotifyConfigurationError: a name holds a NUL character.
        """
        where = describe_target(self.sender)
        for what, name in self.named_objects():
            if "\x00" in name:
                raise SQLNotifyConfigurationError(
                    f"the {what} name {name!r} of {where} ({self.describe()}) contains a NUL"
                    f" character (\\x00), which {database} does not accept in a name; any"
                    " other character is valid"
                )
            size = len(name.encode("utf-8", "surrogatepass"))
            if max_bytes is not None and size > max_bytes:
                raise SQLNotifyIdentifierSizeError(
                    f"the {what} name {name!r} of {where} ({self.describe()}) is {size}"
                    f" bytes; {database} names are at most {max_bytes} bytes in UTF-8, so no"
                    " such object can exist: use the name as the database stores it"
                )

    def describe(self) -> str:
        where = f"{self.schema}.{self.table}" if self.schema else self.table
        label = f" label={self.channel_label!r}" if self.channel_label else ""
        return f"{self.operation.value} on {where}{label}"

    def matches_target(self, target: Any) -> bool:
        """Whether ``target`` (model, Table or name) designates this watch's table."""
        if target is self.sender or target is self.request.target:
            return True
        if isinstance(target, str):
            name = getattr(self.sender, "__name__", None)
            if target == name:
                return True
            schema, table = split_name(target)
            if table == self.table and (schema is None or schema == self.effective_schema):
                return True
            return target == self.table
        try:
            other = table_of(target)
        except SQLNotifyConfigurationError:
            return False
        return (
            other is not None
            and other.name == self.table
            and (other.schema or self.default_schema) == self.effective_schema
        )


def normalise_filters(
    filters: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None, watch: Watch
) -> tuple[tuple[str, Any], ...]:
    """Check subscribe() filters against the watch's payload columns."""
    if not filters:
        return ()
    pairs: list[tuple[str, Any]] = []
    if isinstance(filters, Mapping) and "column" not in filters:
        pairs = list(filters.items())
    else:
        items = [filters] if isinstance(filters, Mapping) else list(filters)
        for item in items:
            if not isinstance(item, Mapping) or set(item) != {"column", "value"}:
                raise SQLNotifyConfigurationError(
                    f"invalid filter {item!r}: each filter is a dict with exactly the keys"
                    " 'column' and 'value', e.g. {'column': 'id', 'value': 42}"
                )
            pairs.append((item["column"], item["value"]))
    valid = watch.payload_columns
    for column, _ in pairs:
        if column not in valid:
            raise SQLNotifyConfigurationError(
                f"filter column {column!r} is not in the payload of the watch"
                f" ({watch.describe()}){did_you_mean(column, valid)}; filter on one of:"
                f" {', '.join(valid)}, or add it to the watch's extra_columns"
            )
    return tuple(pairs)


def view_message(what: str) -> str:
    """The error text for a watch whose target is a view."""
    return (
        f"{what} is a view: databases fire row triggers on tables only, so watch the"
        " table(s) the view reads from instead (their changes are the view's)"
    )


def why_not_installable(engine: sa.Engine, watches: Sequence[Watch]) -> str | None:
    """Why installing ``watches`` failed, when it is a view or a table never created.

    Called after the installation failed, so it costs nothing on success.
    """
    try:
        inspector = sa.inspect(engine)
        for watch in watches:
            what = f"{describe_target(watch.request.target)} ({watch.describe()})"
            schema = watch.schema or watch.default_schema
            if watch.table in inspector.get_view_names(schema=schema):
                return view_message(what)
            if not inspector.has_table(watch.table, schema=schema):
                where = f"{schema}.{watch.table}" if schema else watch.table
                return (
                    f"table {where!r} of {what} does not exist in the database: create it"
                    " first (metadata.create_all(engine), or your migrations), then start"
                    " the notifier"
                )
    except sa.exc.SQLAlchemyError:
        return None
    return None
