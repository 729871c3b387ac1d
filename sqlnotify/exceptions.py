"""Errors raised by sqlnotify.

Every error derives from one root, so ``except SQLNotifyException`` catches
them all::

    SQLNotifyException
     +-- SQLNotifyConfigurationError        bad arguments: model, column, operation, label
     |    +-- SQLNotifyUnSupportedDatabaseProviderError  unsupported database
     +-- SQLNotifyPayloadSizeError          a payload is over the database's notification limit
     +-- SQLNotifyIdentifierSizeError       a name cannot be made to fit the database's limit
     +-- SQLNotifyListenerError             the listener could not connect or listen
     +-- SQLNotifyLockTimeoutError          DDL could not get its table lock within install_timeout
     +-- SQLNotifyForkError                 a notifier started before fork() was used in the child
     +-- SQLNotifyStreamOverflowError       a stream with overflow="raise" overflowed

Messages name the model, column or channel at fault and say what would be
valid.  Driver errors are wrapped at the boundary with ``raise ... from exc``,
so the original error stays on ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ListenerError",
    "PayloadSizeError",
    "SQLNotifyConfigurationError",
    "SQLNotifyException",
    "SQLNotifyForkError",
    "SQLNotifyIdentifierSizeError",
    "SQLNotifyListenerError",
    "SQLNotifyLockTimeoutError",
    "SQLNotifyPayloadSizeError",
    "SQLNotifyStreamOverflowError",
    "SQLNotifyUnSupportedDatabaseProviderError",
]


class SQLNotifyException(Exception):
    """Root of every error sqlnotify raises."""


class SQLNotifyConfigurationError(SQLNotifyException, ValueError):
    """A watch, subscription or notifier option is invalid.

    It is also a :class:`ValueError`, since it is always raised for a bad
    argument value.
    """


class SQLNotifyUnSupportedDatabaseProviderError(SQLNotifyConfigurationError):
    """The engine points at a database sqlnotify has no dialect for."""


class SQLNotifyPayloadSizeError(SQLNotifyException):
    """A custom payload is larger than the database accepts in one notification.

    :ivar size: the payload's size in bytes (UTF-8).
    :ivar limit: the largest size that can be sent directly.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class SQLNotifyIdentifierSizeError(SQLNotifyConfigurationError):
    """A database identifier would exceed the database's length limit."""


class SQLNotifyListenerError(SQLNotifyException):
    """The listener could not connect, or could not prove that it listens."""


class SQLNotifyLockTimeoutError(SQLNotifyException):
    """Installing or removing a trigger could not get its lock within ``install_timeout``.

    Each statement waits at most ``lock_timeout`` for its lock (so writers
    never queue behind it for longer) and is retried until ``install_timeout``
    runs out.  The message names the sessions that held the lock.

    :ivar blockers: one dict per blocking session: ``pid``,
        ``application_name``, ``state``, ``xact_age`` (seconds its
        transaction has been open, or ``None``) and ``query`` (its first
        characters).
    """

    def __init__(self, message: str, *, blockers: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.blockers = blockers


class SQLNotifyForkError(SQLNotifyException):
    """A notifier started before ``fork()`` was used in the child process."""


class SQLNotifyStreamOverflowError(SQLNotifyException):
    """An event stream created with ``overflow="raise"`` had to drop an event.

    Raised in the stream's consumer after the events buffered before the
    overflow; the stream has ended.

    :ivar maxsize: the stream's buffer size.
    """

    def __init__(self, message: str, *, maxsize: int) -> None:
        super().__init__(message)
        self.maxsize = maxsize


# Shorter aliases.
ConfigurationError = SQLNotifyConfigurationError
PayloadSizeError = SQLNotifyPayloadSizeError
ListenerError = SQLNotifyListenerError
