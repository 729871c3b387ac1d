"""The :class:`Notifier`: the one object users configure, start and stop.

It holds the configuration (watches, subscriptions, options) and hands each
start to a :class:`~sqlnotify._pipeline.run.Run`; events flow through the
pipeline (:mod:`sqlnotify._pipeline`) without coming back here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import blinker
import sqlalchemy as sa

from . import signals
from ._lifecycle import NOTIFIERS, Lifecycle
from ._options import check_consumer, positive_int, seconds, sync_engine_of
from ._ownership import Policy
from ._payload import encode_custom
from ._pipeline.bridge import LoopBridge, check_queue_options
from ._pipeline.delivery import Delivery
from ._pipeline.overflow import LargeRows, send_custom
from ._pipeline.run import Run, health_report
from ._pipeline.stats import Stats
from ._pipeline.subscriptions import (
    ONE_ARGUMENT,
    AsyncSide,
    AsyncSubscription,
    Entry,
    Registry,
    Subscription,
    check_receiver,
    is_async_callable,
)
from ._watch import (
    WatchRequest,
    normalise_filters,
)
from .dialects import create_dialect, get_dialect_class
from .dialects.base import Dialect, InstallState
from .events import Operation
from .exceptions import (
    SQLNotifyConfigurationError,
)
from .streams import EventStream

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Notifier"]

F = TypeVar("F", bound=Callable[..., Any])

_null_logger = logging.Logger("sqlnotify.disabled")
_null_logger.disabled = True


class Notifier(Lifecycle):
    """Turns committed row changes of watched tables into events for receivers.

    :param db_engine: a SQLAlchemy :class:`~sqlalchemy.engine.Engine` or
        :class:`~sqlalchemy.ext.asyncio.AsyncEngine` for PostgreSQL or SQLite.
        Any PostgreSQL driver works (psycopg2, psycopg, asyncpg, pg8000): the
        listener always uses its own psycopg2 connection to the same server.
        Write ``postgresql+psycopg2://`` for a sync engine: psycopg2 comes
        with sqlnotify, while SQLAlchemy 2.1 opens a bare ``postgresql://``
        with psycopg 3, which the base install does not bring.
    :param revoke_on_model_change: on start, replace installed triggers whose
        definition differs from the watch (otherwise they are left in place
        and reported as outdated).
    :param cleanup_on_start: after start, remove the sqlnotify triggers on
        the watched tables that no live notifier uses and nobody used within
        ``cleanup_grace``.  The maintenance thread does it, each attempt
        within ``lock_timeout``, retrying later while a lock is busy, so it
        never delays :meth:`start` nor waits behind a reader.
    :param use_logger: log through the ``sqlnotify`` logger; ``False`` keeps
        sqlnotify silent (failures are still counted and signalled).
    :param cleanup_on_stop: remove the watches' triggers when :meth:`stop`
        runs (by default they stay, so a restart needs no DDL).
    :param start_timeout: how long :meth:`start` waits for the listener.
    :param drain_timeout: how long :meth:`stop` and :meth:`astop` wait for
        ``async def`` callbacks already queued or running before cancelling
        them (and logging how many).  A durable consumer's saved position
        stays before the events of callbacks cancelled or not run, so they
        come again after a restart.
    :param async_maxsize: most events waiting in the queue of one ``async
        def`` callback (default 10,000).
    :param async_overflow: what a full callback queue does, as for
        :meth:`stream`: ``"block"`` (default: the dispatcher thread waits
        for room, up to ``async_block_timeout`` seconds, ``None`` for as long
        as it takes while the notifier runs, so the listener is held back
        as by a slow sync receiver), ``"drop_oldest"``, ``"drop_newest"`` or
        ``"raise"`` (the arriving event is dropped and reported as the
        callback's failure).  Every drop is counted (``async_dropped`` in
        :meth:`health`), logged and sent on
        :data:`sqlnotify.signals.async_overflow`; a durable consumer's
        position then stays before the dropped event.
    :param async_block_timeout: see ``async_overflow``.
    :param dialect_options: options of the database's dialect, each in the
        parameter table of the documentation with its default (PostgreSQL
        ``listener_connect_args``, ``pg_*``, ``overflow_*``; SQLite
        ``sqlite_*``; MySQL ``mysql_*``).  An unknown one is an error.
    :param max_queue: most events queued between the listener and the
        dispatcher.  When full, durable watches leave their events in the
        journal until there is room; other watches wait up to
        ``queue_timeout`` seconds, then drop the newest notifications
        (counted, logged, and reported by a ``gap`` signal).
    :param queue_timeout: see ``max_queue``.
    :param consumer: a name under which the position of durable watches is
        kept in the database, so a restarted process resumes where it
        stopped.  One name is read by one process at a time (a second
        process starting with it gets :class:`SQLNotifyListenerError`).
    :param journal_retention: seconds (or a :class:`~datetime.timedelta`)
        journal rows are kept at least; older rows go once no known
        consumer still needs them.
    :param consumer_expiry: seconds (or a timedelta) after which a consumer
        that has not been seen stops holding journal rows back.
    :param journal_schema: schema of the journal tables (default: the
        database's default schema).
    :param lock_timeout: seconds (or a timedelta) one DDL statement waits
        for its table lock (default 0.5).  Writers of the table queue behind
        a waiting DDL statement, so this is the longest they can be held up.
    :param install_timeout: seconds (or a timedelta) installing the triggers
        may take, retrying with backoff while locks are busy (default 30).
        Then :meth:`start` raises
        :class:`~sqlnotify.exceptions.SQLNotifyLockTimeoutError` naming the
        sessions that held the lock.
    :param cleanup_grace: seconds (or a timedelta) a trigger is kept after
        the last notifier that used it was last seen (default one day: a
        rolling deploy, a rollback or a restart finds its trigger in place).
        Applies to ``cleanup_on_start``, :meth:`cleanup`, :meth:`uninstall`
        and ``stop(cleanup=True)``; a trigger a live notifier uses is never
        removed.  See the "Sharing a database" documentation.
    :param dialect: a :class:`~sqlnotify.dialects.base.Dialect` subclass to
        use instead of the one registered for the engine's database: the
        in-memory :class:`sqlnotify.testing.MemoryDialect` in tests, or a
        database sqlnotify does not ship.

    Threads: plain receivers connected with :meth:`subscribe` or
    :meth:`signal` run on the notifier's dispatcher thread
    (``sqlnotify-dispatcher``), one event at a time, in the order the
    database committed them.  ``async def`` callbacks run on the event loop
    that called :meth:`astart` (or, after :meth:`start`, on a private loop
    thread named ``sqlnotify-asyncio``), one at a time per subscription, in
    the same order.

    Processes: a notifier started before ``os.fork()`` is stopped in the
    child (its threads do not exist there), and the child never touches the
    parent's listening connection.  Call :meth:`start` in the child to give
    it a listener of its own (gunicorn's ``post_fork``, Celery's
    ``worker_process_init``); :attr:`forked` tells it happened.
    """

    # The settings that log messages advise, as the Python API spells them;
    # the command line replaces them with its flags (see :attr:`_advice`).
    _DEFAULT_ADVICE: Mapping[str, str] = {
        "keep_outdated": "revoke_on_model_change=False",
        "overflow_table": "watch(..., use_overflow_table=True)",
    }
    #: How many recent events the lag percentiles of :meth:`health` cover.
    LAG_WINDOW = Delivery.LAG_WINDOW

    def __init__(
        self,
        db_engine: sa.Engine | AsyncEngine,
        revoke_on_model_change: bool = True,
        cleanup_on_start: bool = False,
        use_logger: bool = True,
        *,
        cleanup_on_stop: bool = False,
        start_timeout: float = 30.0,
        max_queue: int = 100_000,
        queue_timeout: float = 5.0,
        consumer: str | None = None,
        journal_retention: float | dt.timedelta = 86400.0,
        consumer_expiry: float | dt.timedelta = 7 * 86400.0,
        journal_schema: str | None = None,
        drain_timeout: float = 10.0,
        async_maxsize: int = 10_000,
        async_overflow: str = "block",
        async_block_timeout: float | None = None,
        lock_timeout: float | dt.timedelta = 0.5,
        install_timeout: float | dt.timedelta = 30.0,
        cleanup_grace: float | dt.timedelta = 86400.0,
        dialect: type[Dialect] | None = None,
        **dialect_options: Any,
    ) -> None:
        sync_engine = sync_engine_of(db_engine)
        self.db_engine = db_engine
        self.revoke_on_model_change = revoke_on_model_change
        self.cleanup_on_start = cleanup_on_start
        self.cleanup_on_stop = cleanup_on_stop
        self.start_timeout = start_timeout
        self.drain_timeout = drain_timeout
        check_queue_options(async_maxsize, async_overflow, async_block_timeout, "async_")
        self.async_maxsize = async_maxsize
        self.async_overflow = async_overflow
        self.async_block_timeout = async_block_timeout
        self.log = logging.getLogger("sqlnotify") if use_logger else _null_logger
        self.consumer = check_consumer(consumer)
        self.journal_retention = seconds(journal_retention, "journal_retention")
        self.consumer_expiry = seconds(consumer_expiry, "consumer_expiry")
        self.journal_schema = journal_schema
        self._dialect: Dialect = create_dialect(
            sync_engine,
            self.log,
            dialect,
            dialect_options,
            Notifier.__init__,
            journal_schema=journal_schema,
            consumer=self.consumer,
            consumer_expiry=self.consumer_expiry,
        )
        self._registry = Registry()
        self._lock = threading.RLock()
        self._running = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._fork_error: str | None = None
        #: ``True`` in a child process forked while this notifier was running.
        self.forked = False
        self.stats = Stats()
        self.install_states: list[InstallState] = []
        self._policy = Policy.build(lock_timeout, install_timeout, cleanup_grace)
        self._delivery = Delivery(self, self.stats, self.log, self._DEFAULT_ADVICE)
        self._delivery.large = LargeRows(self._dialect, self.stats, self.log, self._delivery.drop)
        self._async = AsyncSide(
            self._delivery,
            maxsize=async_maxsize,
            overflow=async_overflow,
            block_timeout=async_block_timeout,
            stop_timeout=self.STOP_TIMEOUT,
        )
        self.max_queue = positive_int(max_queue, "max_queue")
        self.queue_timeout = float(queue_timeout)
        #: The current run, or the last one once stopped.
        self._run: Run | None = None
        NOTIFIERS.add(self)

    @classmethod
    def from_redis(
        cls, db_engine: Any, redis_url: str, *, group: str, consumer: str, **options: Any
    ) -> Notifier:
        """A notifier reading the Redis Streams a :class:`~sqlnotify.relay.Relay` writes.

        ``db_engine`` is the relay's database, used only to reflect the
        watched tables (declare the watches as the relay does); ``group``
        is the consumer group (each gets every event, each of its consumers
        a share), ``consumer`` this process's name in it.  Receivers run on
        the dispatcher thread.  More options: the notifier's, and those of
        :class:`~sqlnotify.dialects.redis.RedisStreams`.
        """
        return cls(
            db_engine,
            dialect=get_dialect_class("redis"),
            redis_url=redis_url,
            group=group,
            consumer=consumer,
            **options,
        )

    # -- configuration --------------------------------------------------------
    def watch(
        self,
        model: Any,
        operation: Operation | str,
        extra_columns: Sequence[str] | None = None,
        trigger_columns: Sequence[str] | None = None,
        primary_keys: Sequence[str] | None = None,
        channel_label: str | None = None,
        use_overflow_table: bool = False,
        durable: bool = False,
        where: Any = None,
        include_old: bool = False,
        per_statement: bool = False,
    ) -> Notifier:
        """Watch one operation on one table; return the notifier, so calls chain.

        :param model: a mapped model class (declarative or SQLModel), a
            :class:`~sqlalchemy.Table`, or a table name (``"orders"`` or
            ``"shop.orders"``, reflected when the notifier starts).
        :param operation: an :class:`Operation` or its value (``"insert"``).
        :param extra_columns: columns sent with the keys (default: none).
        :param trigger_columns: UPDATE only: fire only when one of these
            columns' values actually changed.
        :param primary_keys: the key columns that make ``event.id`` (default:
            the table's primary key); each must be a primary key column.
        :param channel_label: a label for a separate channel on the same table
            and operation; letters, digits, ``_``, ``.``, ``-``.
        :param use_overflow_table: deliver rows larger than the database's
            notification limit (PostgreSQL: 7999 bytes of JSON) whole: the
            trigger stores them in the ``sqlnotify_overflow`` table of the
            watched table's schema, in the same transaction, and notifies a
            reference the listener resolves.  Without it such rows arrive
            by key, re-read from the table (see :attr:`ChangeEvent.status`).
        :param durable: also append each event to a journal table in the
            writer's transaction, so events committed while the listener was
            disconnected or the process was down are delivered later (at
            least once, each with ``event.position``).
        :param where: a server-side condition: a SQLAlchemy boolean expression
            over the table's columns (``Order.total > 100``,
            ``Order.status.in_(["paid", "sent"])``, ``and_``/``or_``/``not_``,
            ``.is_(None)``).  It becomes the trigger's ``WHEN`` condition, on
            the new row for INSERT and UPDATE and on the old row for DELETE;
            a write it rejects sends nothing and journals nothing.  Values are
            written as literals of their column's type.  Part of the watch's
            spec: a different condition is a different trigger.
        :param include_old: UPDATE only: the event also carries the old
            values of the key and extra columns (:attr:`ChangeEvent.old`),
            typed like the new ones.  Every UPDATE event carries
            :attr:`ChangeEvent.changed_columns`.
        :param per_statement: PostgreSQL: one trigger call per statement
            instead of one per row.  It reads the statement's rows from its
            transition tables and sends many rows per notification (a durable
            watch journals them with one ``INSERT ... SELECT``); the events
            are the same as row by row.  Cheaper for statements of many rows,
            dearer for single rows: see :ref:`statement-mode`.  Part of the
            watch's spec.  The other databases fire row triggers either way.
        :raises SQLNotifyConfigurationError: naming the model, column or label at fault.
        """
        request = WatchRequest.build(
            model,
            operation,
            extra_columns,
            trigger_columns,
            primary_keys,
            channel_label,
            use_overflow_table,
            durable,
            where,
            include_old,
            per_statement,
        )
        with self._lock:
            self._registry.add(model, request, self._running)
        return self

    def _entry(self, target: Any, operation: Operation | str, channel_label: str | None) -> Entry:
        return self._registry.find(target, operation, channel_label)

    def signal(
        self, model_or_name: Any, operation: Operation | str, channel_label: str | None = None
    ) -> blinker.Signal:
        """The blinker signal of one watch, for connecting receivers with blinker's API.

        Receivers are called as ``receiver(sender, event=ChangeEvent)``,
        where ``sender`` is the watched model class (or the
        :class:`~sqlalchemy.Table`, or the table name string as given to
        :meth:`watch`), so ``sig.connect(fn, sender=User)`` works.  They run
        on the dispatcher thread, so connect plain functions here; an
        ``async def`` function goes through :meth:`subscribe`, which runs it
        on the event loop.

        Unlike a plain blinker signal, it holds receivers strongly unless
        ``connect(fn, weak=True)`` says otherwise (a lambda or a function
        defined inside another is kept, and called), and ``connect()``
        raises :class:`SQLNotifyConfigurationError` for a receiver that
        cannot be called as ``fn(sender, event=...)``.
        """
        return self._entry(model_or_name, operation, channel_label).signal

    def subscribe(
        self,
        model_or_name: Any,
        operation: Operation | str,
        filters: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        channel_label: str | None = None,
    ) -> Callable[[F], F]:
        """Decorator: call the function with each matching :class:`ChangeEvent`.

        :param model_or_name: the watched model, Table, or a name: the model
            class's name (``"User"``) or the table's (``"user"``, ``"shop.user"``).
        :param filters: ``[{"column": "id", "value": 42}, ...]``: all must
            match; values compare with their Python types (42 is not "42").
            A mapping ``{"id": 42}`` is accepted as shorthand.  Each column
            must be in the watch's payload (a key or an extra column).

        The function is returned unchanged.  A plain function runs on the
        dispatcher thread.  An ``async def`` function (or an object whose
        ``__call__`` is one) runs on the event loop that called
        :meth:`astart`, or on the notifier's private loop thread after
        :meth:`start`; its calls for one subscription never overlap and
        follow commit order.  The dispatcher does not wait for it unless
        its queue is full (see ``async_maxsize``).

        :raises SQLNotifyConfigurationError: when the function cannot be
            called as ``fn(event)`` (checked here, not at the first event).
        """
        entry = self._entry(model_or_name, operation, channel_label)
        checked = normalise_filters(filters, entry.watch) if entry.watch is not None else ()

        def decorator(fn: F) -> F:
            if not callable(fn):
                raise SQLNotifyConfigurationError(f"subscribe() decorates a callable, not {fn!r}")
            check_receiver(fn, ONE_ARGUMENT, "subscribe()")
            receiver = self._make_receiver(fn, checked)
            if entry.watch is None and filters:
                entry.pending_filters.append((filters, receiver))
            if isinstance(receiver, AsyncSubscription) and self._running:
                self._ensure_loop()
            entry.signal.connect(receiver, weak=False)
            return fn

        return decorator

    def _make_receiver(self, fn: Callable[..., Any], filters: tuple[tuple[str, Any], ...]) -> Any:
        if is_async_callable(fn):
            self._async.wants_loop = True
            return AsyncSubscription(fn, filters, self._async.submit)
        return Subscription(fn, filters)

    def stream(
        self,
        model_or_name: Any,
        operation: Operation | str,
        filters: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        channel_label: str | None = None,
        maxsize: int = 1000,
        overflow: str = "drop_oldest",
        block_timeout: float = 1.0,
    ) -> EventStream:
        """An async iterator over one watch's events: ``async for event in notifier.stream(...)``.

        Events are buffered from the moment this returns.  The stream ends
        once the notifier stops (after the buffered events are read) or when
        it is closed (``await stream.aclose()``, or leaving ``async with``).

        :param filters: as for :meth:`subscribe`.
        :param maxsize: the buffer's size, in events.
        :param overflow: what happens when the buffer is full:
            ``"drop_oldest"`` (default), ``"drop_newest"``, ``"block"`` (the
            dispatcher thread waits up to ``block_timeout`` seconds, then
            drops the arriving event) or ``"raise"`` (the reader gets
            :class:`~sqlnotify.exceptions.SQLNotifyStreamOverflowError`).
            Every drop is counted, logged and signalled
            (:data:`sqlnotify.signals.stream_overflow`); see :class:`EventStream`.
        """
        entry = self._entry(model_or_name, operation, channel_label)
        return self._async.open_stream(entry, filters, maxsize, overflow, block_timeout)

    def _ensure_loop(self) -> LoopBridge:
        dispatcher, intake = self._dispatcher, self._intake
        return self._async.ensure_loop(
            dispatcher.ident if dispatcher is not None else None,
            intake.acks if intake is not None else None,
        )

    def on_gap(self, fn: F) -> F:
        """Decorator: call ``fn(gap)`` with a :class:`~sqlnotify.events.Gap` after each gap.

        A gap is a window in which events may have been missed (the listener
        was disconnected, the in-process queue overflowed, or a durable
        consumer fell behind retention).  A plain function runs on the
        dispatcher thread, after every event received before the gap; an
        ``async def`` function runs on the event loop, like async
        subscriptions.  The function is returned unchanged.
        """
        if not callable(fn):
            raise SQLNotifyConfigurationError(f"on_gap() decorates a callable, not {fn!r}")
        check_receiver(fn, ONE_ARGUMENT, "on_gap()", arg="gap")
        signals.gap.connect(self._async.gap_receiver(fn), sender=self, weak=False)
        return fn

    def unsubscribe(
        self,
        fn: Callable[..., Any],
        model_or_name: Any,
        operation: Operation | str,
        channel_label: str | None = None,
    ) -> bool:
        """Disconnect a function connected with :meth:`subscribe`; ``True`` if it was."""
        signal = self._entry(model_or_name, operation, channel_label).signal
        for receiver in list(signal.receivers_for(blinker.ANY)):
            if isinstance(receiver, Subscription) and receiver.fn is fn:
                signal.disconnect(receiver)
                return True
        return False

    # -- lifecycle ------------------------------------------------------------
    # -- custom notifications -------------------------------------------------
    def encode_custom(
        self,
        model: Any,
        operation: Operation | str,
        payload: Mapping[str, Any],
        channel_label: str | None = None,
        use_overflow_table: bool = False,
    ) -> tuple[str, str]:
        """The channel and payload text :meth:`notify` would send (checks included)."""
        entry = self._entry(model, operation, channel_label)
        if entry.watch is None or entry.watch.default_schema is None:
            self.prepare()  # reflects tables given by name, resolves the default schema
        assert entry.watch is not None
        caps = self._dialect.capabilities
        body = encode_custom(
            payload,
            entry.watch.channel,
            binary=caps.binary_encoding,
            limit=None if use_overflow_table else caps.max_payload,
        )
        return entry.watch.channel, body

    def notify(
        self,
        model: Any,
        operation: Operation | str,
        payload: Mapping[str, Any],
        channel_label: str | None = None,
        use_overflow_table: bool = False,
    ) -> None:
        """Send a custom payload to the subscribers of a watch, committed at once.

        Receivers get a :class:`ChangeEvent` with ``custom=True``; values of
        the watch's columns are converted to their Python types as for row
        events.  Values that JSON cannot hold are sent as text (datetime as
        ISO 8601, Decimal and UUID as strings, bytes as base64).

        With ``use_overflow_table=True``, a payload over the database's limit
        is stored in the overflow table and only its reference is notified;
        receivers get the whole payload all the same.  Payloads that fit are
        always sent directly.

        :raises SQLNotifyPayloadSizeError: when the payload is over the
            database's limit and ``use_overflow_table`` is false; nothing is sent.
        """
        _, body = self.encode_custom(model, operation, payload, channel_label, use_overflow_table)
        watch = self._entry(model, operation, channel_label).watch
        assert watch is not None
        if send_custom(self._dialect, watch, body) and self._running and self._prune_due is None:
            with self._lock:
                if self._running:
                    assert self._run is not None and self._run.maintenance is not None
                    self._run.maintenance.start(overflow=True)

    async def anotify(
        self,
        model: Any,
        operation: Operation | str,
        payload: Mapping[str, Any],
        channel_label: str | None = None,
        use_overflow_table: bool = False,
    ) -> None:
        """:meth:`notify` for async code: the same checks and result, run in a worker thread."""
        await asyncio.to_thread(
            self.notify, model, operation, payload, channel_label, use_overflow_table
        )

    def health(self, server_timeout: float = 2.0) -> dict[str, Any]:
        """A snapshot of the notifier's state, for health checks and metrics.

        Keys: ``running``; ``connected`` and ``since`` (when the listener last
        connected or disconnected, an aware datetime); ``received``,
        ``dispatched``, ``failed`` (receiver exceptions), ``dropped``
        (undecodable or unroutable notifications), ``overflowed`` (dropped
        because the queue was full), ``duplicates`` (durable events
        suppressed as already delivered), ``gaps``, ``reconnects``;
        ``large_fetched`` (rows read back from the overflow table),
        ``hydrated`` (oversized rows re-read by key), ``keys_only`` (rows too
        large for one notification), ``async_abandoned`` (async callbacks not
        run at stop), ``stream_dropped`` (events a full stream dropped) and
        ``async_dropped`` (events a full async callback queue dropped);
        ``queue_depth`` and ``max_queue``; ``lag_p50`` and ``lag_p99``
        (seconds from the trigger's timestamp to receipt, over the last
        :attr:`LAG_WINDOW` events; ``None`` before any event); and
        ``server_queue_usage`` (PostgreSQL's ``pg_notification_queue_usage()``,
        0 to 1, read on a separate connection within ``server_timeout``
        seconds; ``None`` when unavailable).  Durable watches add
        ``consumer`` and ``position`` (the last position whose receivers ran),
        and a backfill ``backfill``: one dict per table (see :meth:`backfill`).

        Safe to call from any thread; it blocks at most ``server_timeout``.
        """
        intake = self._intake
        usage = self._dialect.server_queue_usage(server_timeout)
        if usage is None and intake is not None and intake.source is not None:
            usage = intake.source.queue_usage
        return health_report(
            self._run,
            self.stats,
            self._delivery.lags,
            running=self._running,
            max_queue=self.max_queue,
            consumer=self.consumer,
            server_queue_usage=usage,
        )

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<Notifier {self.dialect_name} {state} watches={len(self._registry.entries)}>"
