"""Database dialects, looked up by SQLAlchemy dialect name and imported lazily.

Importing :mod:`sqlnotify` imports no database driver: a dialect module (and
its driver) is imported only when a notifier for that database is created.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._options import check_dialect_options
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyUnSupportedDatabaseProviderError
from .base import Dialect, Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["create_dialect", "get_dialect_class", "missing_driver_error", "registry"]

#: Driver module -> what to install for it.
_DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "'psycopg[binary]'",
    "asyncpg": "asyncpg",
    "aiosqlite": "aiosqlite",
    "pg8000": "pg8000",
    "redis": "redis",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
}

#: SQLAlchemy dialect name -> "module:ClassName"
registry: dict[str, str] = {
    "postgresql": "sqlnotify.dialects.postgresql:PostgresDialect",
    "sqlite": "sqlnotify.dialects.sqlite:SQLiteDialect",
    "redis": "sqlnotify.dialects.redis:RedisStreams",
    "mysql": "sqlnotify.dialects.mysql:MySQLDialect",
    "mariadb": "sqlnotify.dialects.mysql:MariaDBDialect",
}


def get_dialect_class(name: str) -> type[Dialect]:
    """The dialect class for an SQLAlchemy dialect name."""
    target = registry.get(name)
    if target is None:
        supported = ", ".join(sorted(registry))
        raise SQLNotifyUnSupportedDatabaseProviderError(
            f"sqlnotify does not support the {name!r} database; supported: {supported}"
        )
    module_name, _, attr = target.partition(":")
    module: Any = importlib.import_module(module_name)
    cls: type[Dialect] = getattr(module, attr)
    return cls


def create_dialect(
    engine: sa.Engine,
    log: logging.Logger,
    cls: type[Dialect] | None,
    options: Mapping[str, Any],
    notifier_init: Callable[..., Any],
    **settings: Any,
) -> Dialect:
    """The dialect for ``engine`` (or ``cls``), built with checked ``options``.

    An unknown option is refused naming the closest valid one, every option of
    the dialect and the keywords of ``notifier_init`` (the Notifier's own);
    ``settings`` are the other fields of :class:`~sqlnotify.dialects.base.Settings`.
    """
    dialect_cls = cls or get_dialect_class(engine.dialect.name)
    caps = dialect_cls.capabilities
    if not set(options) <= caps.options:
        params = [
            p.name
            for p in inspect.signature(notifier_init).parameters.values()
            if p.kind is not p.VAR_KEYWORD and p.name not in ("self", "db_engine")
        ]
        check_dialect_options(options, caps.options, params, caps.name)
    return dialect_cls(engine, log, Settings(options=dict(options), **settings))


def missing_driver_error(url: sa.URL | str, exc: ImportError) -> SQLNotifyConfigurationError:
    """The error for a database URL whose driver module is not installed.

    It names the module, what to install, and for PostgreSQL the URL that
    works with the base install: ``postgresql+psycopg2://`` (psycopg2 is a
    dependency of sqlnotify, which its listener uses whatever the engine's
    driver; SQLAlchemy 2.0 opens a bare ``postgresql://`` with psycopg2 but
    2.1 with psycopg 3, which the base install does not bring).
    """
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        backend = parsed.get_backend_name()
        explicit = "+" in parsed.drivername
    except sa.exc.ArgumentError:
        shown, backend, explicit = str(url), "", True
    module = (exc.name or str(exc)).partition(".")[0]
    package = _DRIVER_PACKAGES.get(module, module)
    text = f"the database URL {shown!r} needs the {module!r} module, which is not installed"
    if backend == "postgresql" and module != "psycopg2":
        if not explicit:
            text += " (SQLAlchemy 2.1 opens a bare postgresql:// URL with psycopg 3)"
        bare = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=True)
        text += f": write {bare!r} (psycopg2 comes with sqlnotify), or pip install {package}"
    elif module == "psycopg2":
        text += (
            "; sqlnotify's PostgreSQL listener always uses psycopg2, a dependency of sqlnotify:"
            f" pip install {package}"
        )
    else:
        text += f": pip install {package}"
    return SQLNotifyConfigurationError(text)
