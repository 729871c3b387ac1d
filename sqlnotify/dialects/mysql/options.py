"""The MySQL dialect's options, given to :class:`~sqlnotify.Notifier` as keywords, checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..._options import at_least, dialect_fields
from ...exceptions import SQLNotifyConfigurationError

__all__ = ["OPTION_NAMES", "MySQLOptions"]

#: Each keyword and the :class:`MySQLOptions` field it sets.
OPTION_NAMES = {
    "mysql_retention": "retention",
    "mysql_poll_interval": "poll_interval",
    "mysql_source": "source",
}
#: The values of ``mysql_source``.
SOURCES = ("triggers", "binlog", "auto")


@dataclasses.dataclass(frozen=True)
class MySQLOptions:
    """The MySQL/MariaDB dialect's options.

    ``mysql_retention`` (default one hour)
        How long change-log rows are kept before listeners prune them.
    ``mysql_poll_interval`` (default 0.1 s)
        The longest pause between two reads of the change log while idle
        (after activity the listener reads again within a millisecond).
    ``mysql_source`` (default ``"triggers"``)
        Where events come from: ``"triggers"`` (a change log the triggers
        write), ``"binlog"`` (the binary log, read as a replica reads it;
        :meth:`Notifier.start` fails naming each missing server setting or
        privilege), or ``"auto"`` (the binlog where the server allows it,
        else the triggers).
    """

    retention: float = 3600.0
    poll_interval: float = 0.1
    source: str = "triggers"

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> MySQLOptions:
        values: dict[str, Any] = {}
        for key, field, value in dialect_fields(options, OPTION_NAMES, "a MySQL"):
            if field == "source":
                if value not in SOURCES:
                    raise SQLNotifyConfigurationError(
                        f"mysql_source must be one of {', '.join(map(repr, SOURCES))},"
                        f" not {value!r}"
                    )
                values[field] = value
            else:
                values[field] = at_least(key, value, 0.001 if field == "poll_interval" else 0.0)
        return cls(**values)
