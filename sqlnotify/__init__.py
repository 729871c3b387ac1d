"""sqlnotify: committed database row changes as in-process events.

PostgreSQL triggers with LISTEN/NOTIFY, or SQLite triggers with a change log,
feed a listener thread; a dispatcher thread hands each change to blinker
receivers (and, through the asyncio bridge, to ``async def`` callbacks).
"""

from __future__ import annotations

from .events import ChangeEvent, Gap, Operation
from .exceptions import (
    SQLNotifyConfigurationError,
    SQLNotifyException,
    SQLNotifyForkError,
    SQLNotifyIdentifierSizeError,
    SQLNotifyListenerError,
    SQLNotifyLockTimeoutError,
    SQLNotifyPayloadSizeError,
    SQLNotifyStreamOverflowError,
    SQLNotifyUnSupportedDatabaseProviderError,
)
from .notifier import Notifier
from .streams import EventStream

__version__ = "0.2.0"

__all__ = [
    "ChangeEvent",
    "EventStream",
    "Gap",
    "Notifier",
    "Operation",
    "SQLNotifyConfigurationError",
    "SQLNotifyException",
    "SQLNotifyForkError",
    "SQLNotifyIdentifierSizeError",
    "SQLNotifyListenerError",
    "SQLNotifyLockTimeoutError",
    "SQLNotifyPayloadSizeError",
    "SQLNotifyStreamOverflowError",
    "SQLNotifyUnSupportedDatabaseProviderError",
    "__version__",
]
