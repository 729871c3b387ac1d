"""Django: an SQLAlchemy engine from ``settings.DATABASES``, and watches by model.

Django models are not SQLAlchemy models, so a notifier watches their tables
by name (``Model._meta.db_table``), reflected when it starts.  The usual
wiring::

    # shop/apps.py
    class ShopConfig(AppConfig):
        name = "shop"

        def ready(self):
            from sqlnotify import Notifier
            from sqlnotify.adapters.django import create_engine, watch_model
            from .models import Order

            self.notifier = Notifier(create_engine())
            table = watch_model(self.notifier, Order, "insert", extra_columns=["customer"])
            self.notifier.subscribe(table, "insert")(on_order_created)

    # mysite/wsgi.py (or asgi.py): start where requests are served
    application = get_wsgi_application()
    apps.get_app_config("shop").notifier.start()

``ready()`` only configures (Django runs it for every management command);
the listener starts in the serving process.  Receivers run on the
notifier's dispatcher thread; wrap those that use the ORM with
:func:`uses_orm`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from ..events import Operation
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyUnSupportedDatabaseProviderError
from ..notifier import Notifier

__all__ = ["create_engine", "database_url", "engine_url", "uses_orm", "watch_model"]

F = TypeVar("F", bound=Callable[..., Any])

_POSTGRES_ENGINES = frozenset(
    {
        "django.db.backends.postgresql",
        "django.db.backends.postgresql_psycopg2",
        "django.contrib.gis.db.backends.postgis",
    }
)
_SQLITE_ENGINES = frozenset(
    {"django.db.backends.sqlite3", "django.contrib.gis.db.backends.spatialite"}
)
_MYSQL_ENGINES = frozenset({"django.db.backends.mysql", "django.contrib.gis.db.backends.mysql"})
# Keys of a MySQL OPTIONS dict that name the same server for PyMySQL.
_MYSQL_OPTIONS = frozenset({"charset", "unix_socket"})
# Keys of a PostgreSQL OPTIONS dict that Django consumes itself (not libpq's).
_DJANGO_ONLY_OPTIONS = frozenset(
    {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory"}
)


def database_url(settings_dict: Mapping[str, Any], alias: str = "default") -> sa.URL:
    """The SQLAlchemy URL for one entry of ``settings.DATABASES``.

    PostgreSQL (``NAME``, ``USER``, ``PASSWORD``, ``HOST``, ``PORT`` and the
    libpq keys of ``OPTIONS`` such as ``sslmode``, ``options`` or
    ``service``) becomes a ``postgresql+psycopg2`` URL; a ``HOST`` that is a
    directory is the unix socket directory.  MySQL and MariaDB (Django's
    ``mysql`` backend) become a ``mysql+pymysql`` URL (sqlnotify's own
    connections use PyMySQL whatever driver Django uses); a ``HOST`` that
    starts with ``/`` and ``OPTIONS["unix_socket"]`` are the socket,
    ``OPTIONS["charset"]`` goes along, the other options are the driver's or
    Django's.  SQLite becomes a URL of the database file.

    :raises SQLNotifyUnSupportedDatabaseProviderError: for other backends.
    """
    engine = str(settings_dict.get("ENGINE") or "")
    if engine in _POSTGRES_ENGINES:
        query: dict[str, str] = {}
        for key, value in (settings_dict.get("OPTIONS") or {}).items():
            if key not in _DJANGO_ONLY_OPTIONS and value is not None:
                query[key] = str(value)
        host = settings_dict.get("HOST") or None
        if host and str(host).startswith("/"):
            query["host"] = str(host)
            host = None
        return _server_url("postgresql+psycopg2", settings_dict, host, query)
    if engine in _MYSQL_ENGINES:
        return _mysql_url(settings_dict, alias)
    if engine in _SQLITE_ENGINES:
        name = settings_dict.get("NAME")
        if not name or str(name) == ":memory:" or str(name).startswith("file:"):
            raise SQLNotifyConfigurationError(
                f"DATABASES[{alias!r}] is an in-memory SQLite database; sqlnotify needs a"
                " database file that its listener can open too"
            )
        return sa.URL.create("sqlite", database=os.path.abspath(os.fspath(name)))
    raise SQLNotifyUnSupportedDatabaseProviderError(
        f"DATABASES[{alias!r}] uses ENGINE {engine!r}; sqlnotify supports"
        f" {sorted(_POSTGRES_ENGINES | _MYSQL_ENGINES | _SQLITE_ENGINES)}"
    )


def _mysql_url(settings_dict: Mapping[str, Any], alias: str) -> sa.URL:
    options = settings_dict.get("OPTIONS") or {}
    if "read_default_file" in options:
        raise SQLNotifyConfigurationError(
            f"DATABASES[{alias!r}] reads its connection settings from an option file"
            " (OPTIONS['read_default_file']); sqlnotify needs NAME, USER, PASSWORD, HOST and"
            " PORT in the settings themselves"
        )
    query = {k: str(options[k]) for k in sorted(_MYSQL_OPTIONS) if options.get(k) is not None}
    host = settings_dict.get("HOST") or None
    if host and str(host).startswith("/"):
        query["unix_socket"] = str(host)
        host = "localhost"
    return _server_url("mysql+pymysql", settings_dict, host, query)


def _server_url(
    drivername: str, settings_dict: Mapping[str, Any], host: Any, query: dict[str, str]
) -> sa.URL:
    """The URL of a database server from Django's USER, PASSWORD, PORT and NAME."""
    port = settings_dict.get("PORT") or None
    return sa.URL.create(
        drivername,
        username=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=host,
        port=int(port) if port else None,
        database=settings_dict.get("NAME") or None,
        query=query,
    )


def engine_url(alias: str = "default") -> sa.URL:
    """The SQLAlchemy URL of Django's database ``alias``, as Django currently uses it.

    Read from ``django.db.connections``, so inside Django's test runner it
    names the test database.
    """
    from django.db import connections

    if alias not in connections.settings:
        raise SQLNotifyConfigurationError(
            f"no database {alias!r} in settings.DATABASES; defined: {sorted(connections.settings)}"
        )
    return database_url(connections[alias].settings_dict, alias)


def create_engine(alias: str = "default", **engine_kwargs: Any) -> sa.Engine:
    """An SQLAlchemy engine on Django's database ``alias`` (for a :class:`~sqlnotify.Notifier`).

    Creating it opens no connection.  ``engine_kwargs`` go to
    :func:`sqlalchemy.create_engine`.
    """
    return sa.create_engine(engine_url(alias), **engine_kwargs)


def _column(model: Any, name: str) -> str:
    from django.core.exceptions import FieldDoesNotExist

    meta = model._meta
    try:
        field = meta.get_field(name)
    except FieldDoesNotExist:
        columns = sorted(
            f.name for f in meta.concrete_fields if getattr(f, "column", None) is not None
        )
        raise SQLNotifyConfigurationError(
            f"{meta.label} has no field {name!r}; its fields with a column are {columns}"
        ) from None
    column = getattr(field, "column", None)
    if column is None or not getattr(field, "concrete", False):
        raise SQLNotifyConfigurationError(
            f"{meta.label}.{name} has no column of its own (a reverse or many-to-many relation?)"
        )
    return str(column)


def watch_model(
    notifier: Notifier,
    model: Any,
    operation: Operation | str,
    extra_columns: Sequence[str] | None = None,
    trigger_columns: Sequence[str] | None = None,
    channel_label: str | None = None,
    use_overflow_table: bool = False,
    durable: bool = False,
    where: Any = None,
    include_old: bool = False,
) -> str:
    """Watch a Django model's table; return the table name to subscribe with.

    The table is ``model._meta.db_table`` and the key is the model's primary
    key column.  ``extra_columns`` and ``trigger_columns`` name model fields
    (``"author"`` for a foreign key means its ``author_id`` column) or
    columns.  The table is reflected when the notifier starts.  ``durable``,
    ``where`` and ``include_old`` are :meth:`Notifier.watch`'s; ``where``
    is a SQLAlchemy expression over the table's columns, e.g.
    ``sqlalchemy.column("total_cents") > 1000``.

    :raises SQLNotifyConfigurationError: for an unknown field, naming the
        model and its fields.
    """
    meta = getattr(model, "_meta", None)
    if meta is None or not hasattr(meta, "db_table"):
        raise SQLNotifyConfigurationError(f"watch_model() takes a Django model, not {model!r}")
    if meta.abstract or meta.proxy:
        kind = "abstract" if meta.abstract else "proxy"
        raise SQLNotifyConfigurationError(
            f"{meta.label} is a {kind} model; watch the concrete model that owns the table"
        )
    table = str(meta.db_table)
    notifier.watch(
        table,
        operation,
        extra_columns=[_column(model, n) for n in extra_columns or ()] or None,
        trigger_columns=[_column(model, n) for n in trigger_columns or ()] or None,
        primary_keys=[str(meta.pk.column)],
        channel_label=channel_label,
        use_overflow_table=use_overflow_table,
        durable=durable,
        where=where,
        include_old=include_old,
    )
    return table


def uses_orm(fn: F) -> F:
    """Decorator for receivers that use the Django ORM on the dispatcher thread.

    Like Django does around each request, connections that are broken or
    older than ``CONN_MAX_AGE`` are closed before and after the receiver,
    so a long-lived dispatcher thread does not keep a dead connection.
    """
    from django.db import close_old_connections

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return wrapper  # type: ignore[return-value]
