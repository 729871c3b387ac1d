"""Database dialects, looked up by SQLAlchemy dialect name and imported lazily.

Importing :mod:`sqlnotify` imports no database driver: a dialect module (and
its driver) is imported only when a notifier for that database is created.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..exceptions import SQLNotifyUnSupportedDatabaseProviderError

if TYPE_CHECKING:
    from .base import Dialect

__all__ = ["get_dialect_class", "registry"]

#: SQLAlchemy dialect name -> "module:ClassName"
registry: dict[str, str] = {
    "postgresql": "sqlnotify.dialects.postgresql:PostgresDialect",
    "sqlite": "sqlnotify.dialects.sqlite:SQLiteDialect",
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
