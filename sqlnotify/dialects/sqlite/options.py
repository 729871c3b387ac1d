"""The SQLite dialect's options, given to :class:`~sqlnotify.Notifier` as keywords, checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..._options import at_least, dialect_fields
from ...exceptions import SQLNotifyConfigurationError

__all__ = ["OPTION_NAMES", "SQLiteOptions"]

#: Each keyword and the :class:`SQLiteOptions` field it sets.
OPTION_NAMES = {
    "sqlite_wal": "wal",
    "sqlite_retention": "retention",
    "sqlite_poll_interval": "poll_interval",
    "sqlite_inotify": "inotify",
    "sqlite_busy_timeout": "busy_timeout",
}


@dataclasses.dataclass(frozen=True)
class SQLiteOptions:
    """The SQLite dialect's options, given to :class:`~sqlnotify.Notifier` as keywords.

    ``sqlite_wal`` (default ``True``)
        Switch the database to write-ahead logging on start, so the
        listener's reads never wait for writers (the setting is stored in the
        file and stays).  ``False`` leaves the journal mode alone.
    ``sqlite_retention`` (default one hour)
        How long change-log rows are kept before listeners prune them.
    ``sqlite_poll_interval`` (default 0.05 s)
        The longest pause between two checks where inotify is unavailable.
    ``sqlite_inotify`` (default ``True``)
        Sleep on inotify where available; ``False`` always polls.
    ``sqlite_busy_timeout`` (default 5 s)
        How long installation and ``notify()`` wait for the write lock.
    """

    wal: bool = True
    retention: float = 3600.0
    poll_interval: float = 0.05
    inotify: bool = True
    busy_timeout: float = 5.0

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> SQLiteOptions:
        values: dict[str, Any] = {}
        for key, field, value in dialect_fields(options, OPTION_NAMES, "an SQLite"):
            if field in ("wal", "inotify"):
                if not isinstance(value, bool):
                    raise SQLNotifyConfigurationError(f"{key} must be True or False, not {value!r}")
                values[field] = value
            else:
                values[field] = at_least(key, value, 0.001 if field == "poll_interval" else 0.0)
        return cls(**values)
