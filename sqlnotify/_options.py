"""Checks of the Notifier's options; each error message says the fix."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

import sqlalchemy as sa

from ._names import did_you_mean
from .exceptions import SQLNotifyConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "at_least",
    "check_consumer",
    "check_dialect_options",
    "dialect_fields",
    "positive_int",
    "seconds",
    "sync_engine_of",
]


def seconds(value: float | dt.timedelta, name: str) -> float:
    """``value`` in seconds: a non-negative number or a :class:`~datetime.timedelta`."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise SQLNotifyConfigurationError(
            f"{name} must be a number of seconds or a timedelta, not {value!r}"
        )
    return float(value)


def at_least(name: str, value: Any, minimum: float) -> float:
    """``value`` in seconds (a number or a timedelta), when it is at least ``minimum``."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise SQLNotifyConfigurationError(
            f"{name} must be a number of seconds (or a timedelta) of at least {minimum:g},"
            f" not {value!r}"
        )
    return float(value)


def dialect_fields(
    options: Mapping[str, Any], names: Mapping[str, str], database: str
) -> Iterator[tuple[str, str, Any]]:
    """``(keyword, field, value)`` of each of a dialect's options; an unknown
    keyword is refused with the valid ones (``names`` maps keyword to field)."""
    for key, value in options.items():
        field = names.get(key)
        if field is None:
            valid = ", ".join(sorted(names))
            raise SQLNotifyConfigurationError(
                f"unknown option {key!r} for {database} notifier; valid options: {valid}"
            )
        yield key, field, value


def positive_int(value: Any, name: str) -> int:
    """``value`` when it is a positive integer."""
    if not isinstance(value, int) or value < 1:
        raise SQLNotifyConfigurationError(f"{name} must be a positive integer, not {value!r}")
    return value


def check_consumer(name: str | None) -> str | None:
    """A durable consumer's name, checked (``None`` stays ``None``)."""
    if name is None:
        return None
    ok = isinstance(name, str) and 0 < len(name) <= 200 and not name.startswith(".")
    if not ok or not all(c.isalnum() or c in "_.-:" for c in name):
        raise SQLNotifyConfigurationError(
            f"invalid consumer name {name!r}: use 1 to 200 letters, digits, '_', '.', '-'"
            " or ':', not starting with '.'"
        )
    return name


def check_dialect_options(
    options: Mapping[str, Any], valid: Collection[str], params: list[str], database: str
) -> None:
    """Reject an unknown keyword, naming the closest valid one and every valid one.

    :param valid: the options the database's dialect takes.
    :param params: the notifier's own parameters.
    """
    unknown = sorted(set(options) - set(valid))
    if not unknown:
        return
    name = unknown[0]
    raise SQLNotifyConfigurationError(
        f"unknown Notifier option {name!r}{did_you_mean(name, [*params, *valid])};"
        f" Notifier takes {', '.join(params)}; a {database} notifier"
        f" also takes {', '.join(sorted(valid)) or 'no other option'}"
    )


def _is_async_engine(engine: object) -> TypeGuard[AsyncEngine]:
    # sqlalchemy.ext.asyncio needs greenlet, which the base install does not
    # bring; whoever made an AsyncEngine has imported the module already.
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    return module is not None and isinstance(engine, module.AsyncEngine)


def sync_engine_of(db_engine: Any) -> sa.Engine:
    """The sync :class:`~sqlalchemy.engine.Engine` of an Engine or AsyncEngine."""
    if _is_async_engine(db_engine):
        return db_engine.sync_engine
    if isinstance(db_engine, sa.Engine):
        return db_engine
    raise SQLNotifyConfigurationError(
        f"db_engine must be a SQLAlchemy Engine or AsyncEngine, not {type(db_engine).__name__}"
    )
