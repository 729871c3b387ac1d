"""The boundary between the generic pipeline and one database.

The pipeline uses a database only through the names declared here, never
through ``getattr`` probes or attributes it sets:

========================  ==========================================================
group                     names
========================  ==========================================================
what it can do            :attr:`Dialect.capabilities` (a frozen :class:`Capabilities`)
where watches live        :meth:`~Dialect.check_reachable`, :meth:`~Dialect.default_schema`,
                          :meth:`~Dialect.reflect`
triggers                  :meth:`~Dialect.fingerprint`, :meth:`~Dialect.ddl`,
                          :meth:`~Dialect.install`, :meth:`~Dialect.uninstall`,
                          :meth:`~Dialect.cleanup`, :meth:`~Dialect.touch`,
                          :meth:`~Dialect.status`
events                    :meth:`~Dialect.open_source` (a :class:`Source`, owned by the
                          listener thread), :meth:`~Dialect.send`
server facts              :meth:`~Dialect.server_queue_usage`, :meth:`~Dialect.inspect`
optional stores           :meth:`~Dialect.journal` (a :class:`JournalStore`, where
                          ``capabilities.durable``), :meth:`~Dialect.journal_on`,
                          :attr:`~Dialect.overflow` (an :class:`OverflowStore` or
                          ``None``)
process lifecycle         :meth:`~Dialect.attach`, :meth:`~Dialect.detach`,
                          :meth:`~Dialect.after_fork`, :meth:`~Dialect.close`
========================  ==========================================================

What the notifier knows that a dialect needs (the journal's schema, the
consumer's name, ...) is handed over once, at construction, as
:class:`Settings`.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import sqlalchemy as sa

from .._backfill import BackfillRequest, BackfillState, Page
from .._journal import JournalReader, Row
from .._ownership import Policy
from .._payload import Notification, RawNotification
from .._watch import Watch, split_name, view_message
from ..exceptions import SQLNotifyConfigurationError

__all__ = [
    "BackfillStore",
    "Capabilities",
    "CommitWake",
    "Dialect",
    "InstallState",
    "JournalStore",
    "Notification",
    "OverflowStore",
    "RawNotification",
    "Settings",
    "Source",
    "SourceDisconnected",
]


class CommitWake:
    """The wake-up of a polling listener when the notifier's own engine commits.

    A dialect whose listener polls (SQLite, MySQL's triggers, PostgreSQL's
    poll mode) keeps one and delegates :meth:`Dialect.attach` /
    :meth:`Dialect.detach` to it: changes made in this process are then
    found at once instead of at the next poll.  The engine's ``commit``
    hook runs on the committing thread, just before the commit lands, and
    only calls ``wake`` (thread-safe, never blocks); the listener then
    checks again quickly a few times, so it sees the commit as it lands.
    """

    __slots__ = ("_engine", "_hooked", "_wake")

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._wake: Callable[[], None] | None = None
        self._hooked = False

    def attach(self, wake: Callable[[], None], *, hook: bool = True) -> None:
        """Wake with ``wake`` from now on; ``hook``: also on the engine's commits."""
        self._wake = wake
        if hook and not self._hooked:
            sa.event.listen(self._engine, "commit", self._on_commit)
            self._hooked = True

    def detach(self) -> None:
        self._wake = None
        if self._hooked:
            sa.event.remove(self._engine, "commit", self._on_commit)
            self._hooked = False

    def forget(self) -> None:
        """In a forked child: the parent's listener is not this process's."""
        self._wake = None

    def poke(self) -> None:
        """Wake the listener now (after a write the dialect made itself: ``send``)."""
        wake = self._wake
        if wake is not None:
            wake()

    def _on_commit(self, conn: Any) -> None:
        self.poke()


class SourceDisconnected(Exception):
    """The source's connection is gone; the listener reconnects."""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What one database can do; the pipeline branches on these, never on a dialect's type."""

    #: SQLAlchemy dialect name (``"postgresql"``, ``"sqlite"``).
    name: str
    #: The keyword options a notifier for this database accepts.
    options: frozenset[str] = frozenset()
    #: Largest payload, in UTF-8 bytes, one notification carries; ``None``: no limit.
    max_payload: int | None = None
    #: How :meth:`Notifier.notify` spells ``bytes`` values: ``"base64"`` or ``"hex"``.
    binary_encoding: str = "base64"
    #: The payload of a durable watch's notification (a wake-up; the event is
    #: in the journal).  Any other payload on such a channel is foreign.
    wake_payload: str | None = None
    #: The source reads every watch from a change log and resumes its position
    #: after a reconnect, so nothing is lost while disconnected (SQLite).  A
    #: named consumer's saved position is passed to :meth:`Dialect.open_source`.
    replays_log: bool = False
    #: :meth:`Dialect.journal` returns a store (durable watches, named consumers).
    durable: bool = False


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the notifier hands a dialect at construction; a dialect never learns more later."""

    #: The dialect-specific keyword options given to the notifier (checked
    #: against :attr:`Capabilities.options` before the dialect is built).
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Schema of the journal tables (``None``: the default schema).
    journal_schema: str | None = None
    #: The named consumer of durable watches, if any.
    consumer: str | None = None
    #: Seconds after which a consumer not seen stops holding journal rows back.
    consumer_expiry: float = 7 * 86400.0


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
    #: Where the source replays a change log (``Capabilities.replays_log``):
    #: its reader, whose position only grows and survives reconnects.
    reader: JournalReader | None = None

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

    def checked(self, found: bool) -> None:
        """The journal read that this source's wake-ups asked for is done (listener thread).

        ``found``: it read events.  A source that decides itself when the
        journal is read (PostgreSQL's poll mode) paces its next wake-up by
        it; the default does nothing.
        """

    @property
    def uses_inotify(self) -> bool:
        """Whether commits wake the source through a file watch rather than a poll."""
        return False

    def abandon(self) -> None:
        """Forget the connection in a forked child, without a word to the server.

        The parent process still owns the connection: the child must neither
        read from it nor close it (closing sends a goodbye on the shared
        socket).  The default does nothing; sources whose connection is a
        socket replace it in the child by a dead one.
        """


class JournalStore(Protocol):
    """A dialect's journal of durable watches, with consumers' saved positions.

    Positions are opaque tokens the store hands out (ordered: a reader's
    only grow); the caller never builds one, it only saves one it was given.
    Every method runs on the thread that calls it and is bounded in time.
    """

    def ensure(self) -> None:
        """Make sure the store's tables exist (or say clearly who must create them)."""
        ...

    def acquire(self, consumer: str) -> None:
        """Take the named consumer's exclusive claim (raises if another process holds it)."""
        ...

    def start_position(self) -> Any:
        """The position of a new reader: the journal's end."""
        ...

    def read(self, after: Any, channels: Sequence[str], limit: int) -> Sequence[Row]:
        """Up to ``limit`` rows of ``channels`` after ``after``, in order.

        A row without a payload only moves the position (past rows of other
        channels, or to the end of a read window).
        """
        ...

    def stamp(self, position: Any) -> int:
        """The number an event at ``position`` carries as ``event.position``."""
        ...

    def load(self, consumer: str) -> tuple[Any, dt.datetime] | None:
        """A consumer's saved position and when it was saved; ``None`` if unknown."""
        ...

    def save(self, consumer: str, position: Any) -> None:
        """Store a consumer's position (never moving it backwards)."""
        ...

    def behind(self, position: Any) -> dt.datetime | None:
        """When retention removed rows ``position`` had not consumed, the newest
        such row's time; ``None`` otherwise."""
        ...

    def prune(self, retention: float, consumer_expiry: float) -> int:
        """Remove a bounded batch of rows no known consumer needs; return how many."""
        ...

    def close(self) -> None:
        """Release connections and locks."""
        ...


@runtime_checkable
class BackfillStore(Protocol):
    """A journal store that can also backfill (snapshot, then stream; PostgreSQL).

    Every method runs on the listener thread, bounded in time.  States are
    saved with the consumer's position: ``save(consumer, BackfillMark)``.
    """

    def backfill_load(self, consumer: str, watch: Watch) -> BackfillState | None:
        """A consumer's saved backfill of ``watch``'s table; ``None`` if it never began one."""
        ...

    def backfill_begin(self, watch: Watch, channels: Sequence[str], start: Any) -> BackfillState:
        """A new backfill of ``watch``'s table from the journal position ``start``.

        ``channels``: the table's durable channels.  Raises
        :class:`~sqlnotify.exceptions.SQLNotifyConfigurationError` when the
        table cannot be read in key order.
        """
        ...

    def backfill_page(
        self,
        watch: Watch,
        channels: Sequence[str],
        state: BackfillState,
        request: BackfillRequest,
    ) -> Page:
        """The next page: each row's payload (as its trigger builds it), the new
        state, and the journal rows to deliver before them."""
        ...


class OverflowStore(Protocol):
    """Payloads too large for one notification, stored in a table (PostgreSQL).

    Used by the dispatcher thread (``fetch``, ``reread``), the maintenance
    thread (``prune``) and the caller of :meth:`Notifier.notify` (``send``).
    """

    #: Seconds a stored payload stays; ``None``: never pruned.
    retention: float | None
    #: Seconds between two prunes.
    prune_interval: float | None
    #: Most rows one bounded DELETE of the prune removes.
    prune_batch: int

    def send(self, schema: str | None, channel: str, payload: str) -> int:
        """Store a payload and send its reference; return the stored row's id."""
        ...

    def has_tables(self, schemas: set[str | None]) -> bool:
        """Whether any of ``schemas`` has an overflow table to prune."""
        ...

    def fetch(self, schema: str | None, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Stored payloads by id, as ``{id: (channel, payload)}``."""
        ...

    def prune(self, schemas: Sequence[str | None], retention: float, limit: int) -> int:
        """Delete stored payloads older than ``retention`` seconds; return how many."""
        ...

    def reread(self, watch: Watch, keys: Sequence[Sequence[Any]]) -> list[str]:
        """Re-read rows by raw key values; return each found row's payload JSON (``row`` part)."""
        ...

    def tables(self) -> list[dict[str, Any]]:
        """Every overflow table, with its row count (for ``sqlnotify status``)."""
        ...


class Dialect(abc.ABC):
    """Everything sqlnotify needs from one database (see the module's table)."""

    #: What this database can do.
    capabilities: ClassVar[Capabilities]
    #: The overflow store, where the database has a payload limit and one.
    overflow: OverflowStore | None = None

    def __init__(self, engine: sa.Engine, log: logging.Logger, settings: Settings) -> None:
        self.engine = engine
        self.log = log
        self.settings = settings

    @property
    def name(self) -> str:
        """The SQLAlchemy dialect name (``capabilities.name``)."""
        return self.capabilities.name

    # -- where watches live ---------------------------------------------------
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
        schema, table = split_name(name)
        if table in sa.inspect(self.engine).get_view_names(schema=schema):
            raise SQLNotifyConfigurationError(view_message(f"{name!r}"))
        return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=self.engine)

    # -- triggers ---------------------------------------------------------------
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

    # -- events -------------------------------------------------------------------
    @abc.abstractmethod
    def send(self, channel: str, payload: str) -> None:
        """Send one custom notification (committed at once)."""

    @abc.abstractmethod
    def open_source(
        self, channels: Sequence[str], *, stop: threading.Event, position: Any = None
    ) -> Source:
        """Connect, listen on ``channels`` and prove it with a round trip (listener thread).

        ``stop`` is the listener's stop event: a source checks it while it
        connects, so :meth:`Notifier.stop` is prompt even when a server never
        answers.  ``position`` (``Capabilities.replays_log`` only) is a named
        consumer's saved position, where the first source of a run resumes;
        later sources of the same run resume where the last one stopped.
        """

    def server_queue_usage(self, timeout: float) -> float | None:
        """The server's notification queue usage (0..1), read within ``timeout`` (``health()``).

        ``None`` when the database has no such queue or the read failed (the default).
        """
        return None

    def inspect(self, timeout: float) -> dict[str, Any]:
        """Facts about the server for ``sqlnotify status``, bounded by ``timeout``.

        Known keys: ``notification_queue_usage`` (0..1, PostgreSQL),
        ``overflow_tables`` (list of dicts), ``change_log`` (dict, SQLite).
        A key is left out when the database has no such thing.  The default
        returns ``{}``.
        """
        return {}

    # -- optional stores --------------------------------------------------------
    def journal(self) -> JournalStore:
        """The journal store of durable watches (``capabilities.durable`` only)."""
        raise SQLNotifyConfigurationError(
            f"durable watches are not available on {self.name or 'this database'}"
        )

    def journal_on(self, source: Source) -> JournalStore:
        """A journal store reading on ``source``'s own session, where the database can.

        Used by one thread, the one that owns ``source`` (the relay's): one
        database session serves both the wake-ups and the journal reads.
        Closing the store leaves ``source`` open.  The default is
        :meth:`journal` (a connection of its own).
        """
        return self.journal()

    # -- process lifecycle --------------------------------------------------------
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
        """Release what the dialect holds (pools it created, stores it opened)."""
