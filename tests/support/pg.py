"""Small helpers shared by the PostgreSQL core tests (not fixtures: plain functions)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, mapped_column

from sqlnotify import Notifier

TIMEOUT = 10.0


def new_base() -> type[DeclarativeBase]:
    """A fresh declarative base, so each test's models have their own metadata."""

    class Base(DeclarativeBase):
        pass

    return Base


def model(
    engine: sa.Engine | None,
    schema: str,
    name: str = "Item",
    table: str = "items",
    /,
    *,
    base: Any = None,
    **columns: Any,
) -> Any:
    """A new mapped class ``name`` on ``schema.table``, created in ``engine`` unless ``None``.

    ``columns`` are ``mapped_column(...)`` values (give ``nullable`` explicitly);
    without a primary key among them, an integer key ``id`` comes first.  The
    class gets a declarative base of its own unless ``base`` is given; either
    way it is ``model.__bases__[0]``.
    """
    if not any(column.column.primary_key for column in columns.values()):
        columns = {"id": mapped_column(sa.Integer, primary_key=True), **columns}
    attrs = {"__tablename__": table, "__table_args__": {"schema": schema}, **columns}
    cls = type(name, (base or new_base(),), attrs)
    if engine is not None:
        cls.metadata.create_all(engine)
    return cls


def make_notifier(notifiers: list[Notifier], engine: Any, **options: Any) -> Notifier:
    """A notifier the ``notifiers`` fixture stops at teardown."""
    notifier = Notifier(engine, **options)
    notifiers.append(notifier)
    return notifier


def execute(engine: sa.Engine, sql: str, params: Any = None) -> None:
    """Run one statement in its own committed transaction."""
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params or {})


def scalar(engine: sa.Engine, sql: str, params: Any = None) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params or {}).scalar()


def names(engine: sa.Engine, sql: str, params: Any = None) -> list[str]:
    """The first column of a query's rows."""
    with engine.connect() as conn:
        return [str(name) for name in conn.execute(sa.text(sql), params or {}).scalars()]


def sqlnotify_functions(engine: sa.Engine, schema: str) -> list[str]:
    """Names of the sqlnotify trigger functions in ``schema``."""
    return names(
        engine,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = :s AND p.proname LIKE 'sqlnotify%' ORDER BY 1",
        {"s": schema},
    )


def triggers(engine: sa.Engine, schema: str, table: str | None = None) -> list[str]:
    """Names of the user-visible triggers on one table of ``schema`` (``None``: on all)."""
    sql = (
        "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = :s AND NOT t.tgisinternal"
    )
    if table is not None:
        sql += " AND c.relname = :t"
    return names(engine, sql + " ORDER BY 1", {"s": schema, "t": table})
