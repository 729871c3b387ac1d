"""The boundary between the generic machinery and one database.

A :class:`Dialect` installs and removes triggers, sends custom
notifications, and opens :class:`Source` objects.  A :class:`Source` is owned
by the listener thread: it waits (with a bound) for notifications and returns
them as :class:`Notification` items, which the dispatcher decodes.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa

from .._ownership import Policy
from .._watch import Watch
from ..exceptions import SQLNotifyConfigurationError

__all__ = ["Dialect", "InstallState", "Notification", "Source", "SourceDisconnected"]


def run_sql(conn: sa.Connection, sql: str) -> sa.CursorResult[Any]:
    """Run one statement that takes no parameters, passing the driver none.

    psycopg2 treats ``%`` in a statement as a placeholder as soon as any
    parameters (even an empty set) come with it, and names may hold ``%``.
    """
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


class Notification(NamedTuple):
    """A raw notification: the channel and the payload text, still encoded."""

    channel: str
    payload: str


class RawNotification(Protocol):
    """Anything with ``channel`` and ``payload`` (psycopg2's ``Notify`` qualifies)."""

    @property
    def channel(self) -> str: ...

    @property
    def payload(self) -> str: ...


class SourceDisconnected(Exception):
    """The source's connection is gone; the listener reconnects."""


@dataclasses.dataclass
class InstallState:
    """What installation found or did for one watch.

    ``state`` is one of ``"unchanged"``, ``"installed"``, ``"replaced"``,
    ``"outdated"`` (differs from the watch, left in place because
    ``revoke_on_model_change=False``), or ``"missing"``.
    """

    watch: Watch
    state: str
    installed_fingerprint: str | None = None


class Source(abc.ABC):
    """One listening connection, used only by the listener thread."""

    #: Wall-clock time (``time.time()``) the server last sent data; after a
    #: disconnect, notifications may be missing from then on.
    last_alive: float | None = None
    #: The server's notification queue usage (0..1) at the last check, if known.
    queue_usage: float | None = None

    @abc.abstractmethod
    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        """Return the notifications that arrived, waiting at most ``timeout`` seconds.

        Returns early (possibly with nothing) when ``wake_fd`` becomes
        readable.  Raises :class:`SourceDisconnected` when the connection is
        lost or stops answering.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; never raises."""

    def abandon(self) -> None:
        """Forget the connection in a forked child, without a word to the server.

        The parent process still owns the connection: the child must neither
        read from it nor close it (closing sends a goodbye on the shared
        socket).  The default does nothing; sources whose connection is a
        socket replace it in the child by a dead one.
        """


class Dialect(abc.ABC):
    """Everything sqlnotify needs from one database."""

    #: SQLAlchemy dialect name.
    name: str = ""
    #: Largest payload, in UTF-8 bytes, one notification carries; ``None``: no limit.
    max_payload: int | None = None
    #: The payload of a durable watch's notification (a wake-up; the event
    #: is in the journal).  Any other payload on such a channel is foreign.
    wake_payload: str | None = None
    #: Seconds an overflowed payload stays stored; ``None``: no overflow table.
    overflow_retention: float | None = None
    #: Seconds between two prunes of the overflow table.
    overflow_prune_interval: float | None = None
    #: Most rows one bounded DELETE of the prune removes.
    overflow_prune_batch: int = 500
    #: How :meth:`Notifier.notify` spells ``bytes`` values: ``"base64"`` or ``"hex"``.
    binary_encoding: str = "base64"
    #: The keyword options a notifier for this database accepts.
    OPTIONS: frozenset[str] = frozenset()

    def __init__(self, engine: sa.Engine, log: logging.Logger, options: dict[str, Any]) -> None:
        self.engine = engine
        self.log = log
        self.options = options

    def check_reachable(self, timeout: float) -> None:
        """Raise :class:`SQLNotifyListenerError` unless the server answers within ``timeout``.

        The first step of :meth:`Notifier.install`, so no later step blocks
        on an address that never answers.  The default does nothing (an
        embedded database has no address).
        """

    def default_schema(self) -> str | None:
        """The schema unqualified table names resolve to (``None`` if the database has none)."""
        return None

    def reflect(self, name: str) -> sa.Table:
        """Reflect a table given by name (``"orders"`` or ``"shop.orders"``)."""
        from .._watch import split_name

        schema, table = split_name(name)
        if table in sa.inspect(self.engine).get_view_names(schema=schema):
            from .._watch import view_message
            from ..exceptions import SQLNotifyConfigurationError

            raise SQLNotifyConfigurationError(view_message(f"{name!r}"))
        return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=self.engine)

    @abc.abstractmethod
    def fingerprint(self, watch: Watch) -> str:
        """A hash of everything the installed objects of ``watch`` depend on."""

    @abc.abstractmethod
    def ddl(self, watch: Watch) -> list[str]:
        """The statements that install ``watch``'s trigger, for offline use."""

    @abc.abstractmethod
    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy | None = None
    ) -> list[InstallState]:
        """Install what is missing or changed; safe when several processes run it at once.

        Records ``policy.user`` as a user of every watch's trigger first, and
        takes every lock under ``policy``'s bounds.
        """

    @abc.abstractmethod
    def uninstall(self, watches: Sequence[Watch], *, policy: Policy | None = None) -> int:
        """Stop using the watches' triggers; remove those nobody else uses.

        ``policy.user`` stops being a user of each; a trigger is removed only
        when no other notifier is live on it nor was seen within
        ``policy.grace`` (see :mod:`sqlnotify._ownership`).  Returns how many
        were removed.
        """

    @abc.abstractmethod
    def cleanup(
        self, watches: Sequence[Watch], *, policy: Policy | None = None, keep_own: bool = False
    ) -> int:
        """Remove the unused sqlnotify triggers on the watches' tables; return how many.

        ``keep_own`` spares the watches' own triggers (the deferred cleanup
        of ``cleanup_on_start``); otherwise ``policy.user`` first stops using them.
        """

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        """Refresh ``policy.user``'s registry rows for the watches (maintenance thread)."""

    @abc.abstractmethod
    def status(self) -> list[dict[str, Any]]:
        """Every sqlnotify-owned object in the database, with its state."""

    @abc.abstractmethod
    def send(self, channel: str, payload: str) -> None:
        """Send one custom notification (committed at once)."""

    @abc.abstractmethod
    def open_source(self, channels: Sequence[str]) -> Source:
        """Connect, listen on ``channels`` and prove it with a round trip."""

    def journal(self) -> Any:
        """The journal store of durable watches (a ``JournalStore``)."""
        from ..exceptions import SQLNotifyConfigurationError

        raise SQLNotifyConfigurationError(
            f"durable watches are not available on {self.name or 'this database'}"
        )

    #: ``(key, consumer name)`` of the lock held for a named consumer, if any.
    consumer_lock: tuple[int, str] | None = None
    #: The source reads every watch from a change log and resumes its position
    #: after a reconnect, so nothing is lost while disconnected (SQLite).
    replays_log: bool = False

    def attach(self, wake: Callable[[], None]) -> None:
        """Called by :meth:`Notifier.start` with the listener's ``wake``.

        A dialect whose listener polls calls ``wake`` when the notifier's own
        engine commits, so changes made in this process are found at once.
        ``wake`` is thread-safe and never blocks.  The default does nothing.
        """

    def detach(self) -> None:
        """Undo :meth:`attach` (called by :meth:`Notifier.stop`)."""

    def after_fork(self) -> None:
        """In a forked child: forget the connections and locks inherited from the parent.

        Runs right after ``fork()``, while the child has a single thread, so
        it must take no lock another thread of the parent may have held, and
        neither use nor close what the parent still owns.  The default does
        nothing.
        """

    def close(self) -> None:
        """Release what the dialect holds (pools it created)."""

    # -- large payloads (databases with a notification size limit) -----------
    def send_overflow(self, schema: str | None, channel: str, payload: str) -> int:
        """Store a payload too large for one notification and send its reference."""
        raise SQLNotifyConfigurationError(
            f"the {self.name} dialect has no overflow table; its notifications have no size limit"
        )

    def has_overflow(self, schemas: set[str | None]) -> bool:
        """Whether any of ``schemas`` has an overflow table to prune."""
        return False

    def fetch_overflow(self, schema: str | None, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Stored payloads by id, as ``{id: (channel, payload)}``."""
        return {}

    def prune_overflow(self, schemas: Sequence[str | None], retention: float, limit: int) -> int:
        """Delete stored payloads older than ``retention`` seconds; return how many."""
        return 0

    def reread(self, watch: Watch, keys: Sequence[Sequence[Any]]) -> list[str]:
        """Re-read rows by raw key values; return each found row's payload JSON (``row`` part)."""
        return []
