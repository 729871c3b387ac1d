"""The MySQL dialect's options, given to :class:`~sqlnotify.Notifier` as keywords, checked."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from ...exceptions import SQLNotifyConfigurationError

__all__ = ["OPTION_NAMES", "MySQLOptions"]

#: Each keyword and the :class:`MySQLOptions` field it sets.
OPTION_NAMES = {
    "mysql_retention": "retention",
    "mysql_poll_interval": "poll_interval",
}


def _seconds(name: str, value: Any, minimum: float) -> float:
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise SQLNotifyConfigurationError(
            f"{name} must be a number of seconds (or a timedelta) of at least {minimum:g},"
            f" not {value!r}"
        )
    return float(value)


@dataclasses.dataclass(frozen=True)
class MySQLOptions:
    """The MySQL/MariaDB dialect's options.

    ``mysql_retention`` (default one hour)
        How long change-log rows are kept before listeners prune them.
    ``mysql_poll_interval`` (default 0.1 s)
        The longest pause between two reads of the change log while idle
        (after activity the listener reads again within a millisecond).
    """

    retention: float = 3600.0
    poll_interval: float = 0.1

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> MySQLOptions:
        values: dict[str, Any] = {}
        for key, value in options.items():
            field = OPTION_NAMES.get(key)
            if field is None:
                valid = ", ".join(sorted(OPTION_NAMES))
                raise SQLNotifyConfigurationError(
                    f"unknown option {key!r} for a MySQL notifier; valid options: {valid}"
                )
            minimum = 0.001 if field == "poll_interval" else 0.0
            values[field] = _seconds(key, value, minimum)
        return cls(**values)
