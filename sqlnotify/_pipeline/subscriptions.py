"""Watches, their signals and subscriptions, and the asyncio side that runs ``async def`` ones.

:class:`Registry` holds the ``watch()`` calls (:class:`Entry`: request,
resolved watch, signal).  :class:`Subscription` is the receiver behind
``subscribe()``; :class:`AsyncSubscription` hands the event to the event
loop through :class:`AsyncSide`, which also owns the loop bridge's
lifecycle and the open streams.

Receivers are checked when they are added, not when the first event reaches them.

:func:`check_receiver` raises at registration when a callable cannot be
called the way its registration will call it.  :class:`WatchSignal` is the
blinker signal of one watch: it checks every receiver connected to it, and
holds receivers strongly unless ``weak=True`` is passed, so a lambda or a
function defined inside another (a Flask app factory's receivers) is never
dropped silently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import blinker
from sqlalchemy.exc import NoSuchTableError

from .. import signals
from .._watch import (
    Watch,
    WatchRequest,
    describe_target,
    normalise_filters,
    split_name,
    table_of,
)
from ..dialects.base import Dialect
from ..events import ChangeEvent, Gap, Operation
from ..exceptions import SQLNotifyConfigurationError
from ..streams import EventStream
from .bridge import LoopBridge, LoopThread
from .delivery import Delivery
from .durable import Acks
from .route import receiver_name, send_isolated
from .stats import Stats

__all__ = [
    "AsyncSide",
    "AsyncSubscription",
    "Entry",
    "Registry",
    "Subscription",
    "WatchSignal",
    "check_receiver",
    "is_async_callable",
]

F = TypeVar("F", bound=Callable[..., Any])

#: How :meth:`Notifier.subscribe` and :meth:`Notifier.on_gap` call a function.
ONE_ARGUMENT = "fn(value)"
#: How a watch's signal calls its receivers.
SENDER_AND_EVENT = "fn(sender, event=ChangeEvent)"

_HINTS = {
    ONE_ARGUMENT: (
        "for a receiver written as fn(sender, event), connect it with"
        " notifier.signal(model, operation).connect(fn) instead"
    ),
    SENDER_AND_EVENT: (
        "write it as def receiver(sender, event): ... (or add **kwargs); for a function"
        " taking the event alone, use @notifier.subscribe(model, operation)"
    ),
}


def check_receiver(fn: Any, form: str, where: str, *, arg: str = "event") -> None:
    """Raise unless ``fn`` accepts the arguments ``form`` describes.

    :param form: :data:`ONE_ARGUMENT` or :data:`SENDER_AND_EVENT`.
    :param where: the registration, for the message (``"subscribe()"``).
    :param arg: the name of the one argument, for the message.
    :raises SQLNotifyConfigurationError: naming the callable, its
        signature and the form expected.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): accepted as it is
    if form == ONE_ARGUMENT:
        args: tuple[Any, ...] = (object(),)
        kwargs: dict[str, Any] = {}
        shown = f"fn({arg})"
    else:
        args, kwargs, shown = (object(),), {"event": object()}, form
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise SQLNotifyConfigurationError(
            f"{where} calls its receivers as {shown}, but {receiver_name(fn)}{signature}"
            f" cannot be called that way ({exc}); {_HINTS[form]}"
        ) from None


class WatchSignal(blinker.Signal):
    """The blinker signal of one watch (see :meth:`Notifier.signal`).

    Differs from :class:`blinker.Signal` in two ways: :meth:`connect`
    checks that the receiver accepts ``(sender, event=...)``, and holds it
    strongly unless ``weak=True`` is passed.
    """

    def __init__(self, description: str) -> None:
        super().__init__(f"row changes of {description}")
        self.description = description

    def connect(self, receiver: F, sender: Any = blinker.ANY, weak: bool = False) -> F:
        """Call ``receiver(sender, event=ChangeEvent)`` for each event, on the dispatcher thread.

        :param sender: only events whose sender is this object (the watched
            model, Table or name as given to :meth:`Notifier.watch`).
        :param weak: hold the receiver by weak reference, so it is
            disconnected once nothing else refers to it (blinker's default;
            here the default is a strong reference, so a lambda or a nested
            function keeps being called until :meth:`disconnect`).
        :raises SQLNotifyConfigurationError: when ``receiver`` cannot be
            called as ``receiver(sender, event=...)``.
        """
        check_receiver(receiver, SENDER_AND_EVENT, f"the signal of {self.description}")
        if weak and getattr(receiver, "__name__", None) == "<lambda>":
            warnings.warn(
                f"a lambda connected with weak=True to the signal of {self.description} is"
                " garbage-collected as soon as connect() returns and will never be called;"
                " connect it without weak=True (the default holds it), or keep a reference",
                RuntimeWarning,
                stacklevel=2,
            )
        return super().connect(receiver, sender, weak)


@dataclasses.dataclass
class Entry:
    """One ``watch()`` call: the request, its resolution, its signal, its subscriptions."""

    request: WatchRequest
    signal: blinker.Signal
    watch: Watch | None = None
    pending_filters: list[tuple[Any, Any]] = dataclasses.field(default_factory=list)

    def matches(self, target: Any) -> bool:
        if self.watch is not None:
            return self.watch.matches_target(target)
        # A table given by name, not yet reflected.
        mine = self.request.target
        if target is mine or target == mine:
            return True
        if isinstance(target, str) and isinstance(mine, str):
            return split_name(target)[1] == split_name(mine)[1] and (
                split_name(target)[0] in (None, split_name(mine)[0])
            )
        return False


class Registry:
    """The watches of one notifier, in the order ``watch()`` added them."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, model: Any, request: WatchRequest, running: bool) -> None:
        """Add one watch; the same request again does nothing.

        A model or Table is resolved now; a table given by name once reflected.
        """
        watch = None
        if not isinstance(model, str):
            table = table_of(model)
            assert table is not None
            watch = request.resolve(table)
        for entry in self.entries:
            same = entry.request.operation is request.operation and (
                entry.request.channel_label == request.channel_label
            )
            if same and entry.matches(model):
                if entry.request == request:
                    return
                raise SQLNotifyConfigurationError(
                    f"{describe_target(model)} is already watched for"
                    f" {request.operation.value!r}"
                    + (
                        f" with channel_label {request.channel_label!r}"
                        if request.channel_label
                        else ""
                    )
                    + " with different options; use another channel_label for a second watch"
                )
        if running:
            raise SQLNotifyConfigurationError(
                "watch() must be called before start(); stop the notifier to add watches"
            )
        signal = WatchSignal(f"{describe_target(model)} {request.operation.value}")
        self.entries.append(Entry(request=request, signal=signal, watch=watch))

    def find(self, target: Any, operation: Operation | str, channel_label: str | None) -> Entry:
        """The one watch of ``target`` and ``operation``; raise naming what is watched."""
        op = Operation.coerce(operation)
        candidates = [
            e
            for e in self.entries
            if e.request.operation is op and e.request.channel_label == channel_label
        ]
        exact = [e for e in candidates if e.request.target is target]
        found = exact or [e for e in candidates if e.matches(target)]
        if len(found) == 1:
            return found[0]
        label = f" with channel_label {channel_label!r}" if channel_label else ""
        if not found:
            watched = ", ".join(
                f"{describe_target(e.request.target)} {e.request.operation.value}"
                + (f" [{e.request.channel_label}]" if e.request.channel_label else "")
                for e in self.entries
            )
            raise SQLNotifyConfigurationError(
                f"no watch for {describe_target(target)} {op.value!r}{label}; call"
                f" watch() first. Watched: {watched or 'nothing yet'}"
            )
        raise SQLNotifyConfigurationError(
            f"{describe_target(target)} {op.value!r}{label} is ambiguous: it matches"
            f" {len(found)} watches; pass the model class or 'schema.table'"
        )

    @property
    def watches(self) -> list[Watch]:
        return [e.watch for e in self.entries if e.watch is not None]

    def resolve(self, dialect: Dialect, default_schema: str | None) -> list[Watch]:
        """Resolve every watch, reflecting the tables given by name."""
        watches = []
        for entry in self.entries:
            if entry.watch is None:
                name = entry.request.target
                try:
                    table = dialect.reflect(name)
                except NoSuchTableError as exc:
                    raise SQLNotifyConfigurationError(
                        f"cannot watch table {name!r}: no such table in the database"
                        + (f" (default schema {default_schema!r})" if default_schema else "")
                    ) from exc
                entry.watch = entry.request.resolve(table)
                for filters, receiver in entry.pending_filters:
                    receiver.filters = normalise_filters(filters, entry.watch)
                entry.pending_filters.clear()
            if entry.watch.default_schema != default_schema:
                entry.watch = entry.watch.with_default_schema(default_schema)
            watches.append(entry.watch)
        seen: dict[str, Watch] = {}
        for w in watches:
            other = seen.setdefault(w.channel, w)
            if other is not w:
                raise SQLNotifyConfigurationError(
                    f"two watches share the channel {w.channel!r}: {other.describe()} and"
                    f" {w.describe()}"
                )
        return watches


class Subscription:
    """The blinker receiver behind ``subscribe()``: filters, then calls ``fn(event)``."""

    __slots__ = ("filters", "fn")

    def __init__(self, fn: Callable[..., Any], filters: tuple[tuple[str, Any], ...]) -> None:
        self.fn = fn
        self.filters = filters

    def __call__(self, sender: Any, event: ChangeEvent, **_: Any) -> Any:
        if self.filters and not self.matches(event):
            return None
        return self.fn(event)

    def matches(self, event: ChangeEvent) -> bool:
        row = event._row
        for column, value in self.filters:
            if column not in row:
                return False
            got = row[column]
            if got != value or isinstance(got, bool) is not isinstance(value, bool):
                return False
        return True

    def __repr__(self) -> str:
        return f"<subscription {receiver_name(self.fn)}>"


class AsyncSubscription(Subscription):
    """The receiver for an ``async def`` function: filters, then hands the event to the loop."""

    __slots__ = ("submit",)

    def __init__(
        self,
        fn: Callable[..., Any],
        filters: tuple[tuple[str, Any], ...],
        submit: Callable[[Any, ChangeEvent], None],
    ) -> None:
        super().__init__(fn, filters)
        self.submit = submit

    def __call__(self, sender: Any, event: ChangeEvent, **_: Any) -> Any:
        if self.filters and not self.matches(event):
            return None
        self.submit(self, event)
        return None


def is_async_callable(fn: Any) -> bool:
    """``True`` for an ``async def`` function or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


class AsyncSide:
    """The notifier's asyncio side: the bridge running ``async def`` callbacks, and the streams.

    The bridge exists while the notifier runs with async callbacks (or was
    started by ``astart()``); :attr:`delivery` flushes it after each batch.
    """

    def __init__(
        self,
        delivery: Delivery,
        *,
        maxsize: int,
        overflow: str,
        block_timeout: float | None,
        stop_timeout: float,
    ) -> None:
        self.delivery = delivery
        self.maxsize = maxsize
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.stop_timeout = stop_timeout
        self.lock = threading.Lock()
        self.streams: set[EventStream] = set()
        #: An ``async def`` callback was subscribed: a start needs a loop.
        self.wants_loop = False

    @property
    def bridge(self) -> LoopBridge | None:
        return self.delivery.bridge

    @property
    def _stats(self) -> Stats:
        return self.delivery.stats

    @property
    def _log(self) -> logging.Logger:
        return self.delivery.log

    def set_bridge(self, bridge: LoopBridge | None) -> LoopBridge | None:
        """Make ``bridge`` the current one; return the one it replaces."""
        with self.lock:
            old, self.delivery.bridge = self.delivery.bridge, bridge
        return old

    def new_bridge(self, loop: asyncio.AbstractEventLoop | None, acks: Acks | None) -> LoopBridge:
        """A bridge to ``loop``, or to a new private loop thread when ``None``."""
        thread = None
        if loop is None:
            thread = LoopThread(self._log)
            thread.start(self.stop_timeout)
            loop = thread.loop
        bridge = LoopBridge(
            loop,
            log=self._log,
            on_error=self.delivery.receiver_failed,
            on_abandoned=self.count_abandoned,
            thread=thread,
            maxsize=self.maxsize,
            overflow=self.overflow,
            block_timeout=self.block_timeout,
            on_drop=self.async_dropped,
        )
        bridge.acks = acks
        return bridge

    def ensure_loop(self, dispatcher_ident: int | None, acks: Acks | None) -> LoopBridge:
        """The current bridge, made (with a private loop thread) if there is none."""
        with self.lock:
            bridge = self.delivery.bridge
            if bridge is None:
                bridge = self.delivery.bridge = self.new_bridge(None, acks)
                bridge.batch_thread = dispatcher_ident
            return bridge

    def submit(self, sub: Any, event: Any) -> None:
        """Queue ``sub``'s callback with ``event`` (dispatcher thread)."""
        bridge = self.delivery.bridge
        if bridge is None:
            self.count_abandoned(1)
            self._log.warning("an async callback was not run: the notifier is not running")
            return
        bridge.submit(sub, event)

    def count_abandoned(self, count: int) -> None:
        with self._stats.lock:
            self._stats.async_abandoned += count

    def async_dropped(self, sub: Any, event: ChangeEvent, policy: str) -> None:
        with self._stats.lock:
            self._stats.async_dropped += 1
        send_isolated(
            signals.async_overflow,
            self.delivery.sender,
            self._log,
            receiver=getattr(sub, "fn", sub),
            event=event,
            policy=policy,
        )

    def close(self, bridge: LoopBridge | None, drain_timeout: float) -> None:
        """Drain ``bridge``'s callbacks (up to ``drain_timeout``), then end its loop thread."""
        if bridge is None:
            return
        bridge.drain_blocking(drain_timeout)
        bridge.stop_thread(self.stop_timeout)

    def gap_receiver(self, fn: Callable[[Gap], Any]) -> Callable[..., None]:
        """The receiver of :data:`sqlnotify.signals.gap` that calls ``fn(gap)``.

        A plain ``fn`` runs on the dispatcher thread; an ``async def`` one on
        the event loop, like async subscriptions.
        """
        if is_async_callable(fn):
            self.wants_loop = True
            submit = self.submit
            sub = AsyncSubscription(fn, (), submit)

            def receiver(sender: Any, **gap: Any) -> None:
                submit(sub, Gap(**gap))

        else:

            def receiver(sender: Any, **gap: Any) -> None:
                fn(Gap(**gap))

        receiver.fn = fn  # type: ignore[attr-defined]
        return receiver

    # -- streams --------------------------------------------------------------
    def open_stream(
        self,
        entry: Entry,
        filters: Any,
        maxsize: int,
        overflow: str,
        block_timeout: float,
    ) -> EventStream:
        """A stream of ``entry``'s events, buffering from now on (see ``Notifier.stream``)."""
        watch = entry.watch
        checked = normalise_filters(filters, watch) if watch is not None else ()
        stream = EventStream(
            signal=entry.signal,
            log=self._log,
            description=(
                watch.describe()
                if watch is not None
                else f"{describe_target(entry.request.target)} {entry.request.operation.value}"
            ),
            maxsize=maxsize,
            overflow=overflow,
            block_timeout=block_timeout,
            on_drop=self.stream_dropped,
            on_end=self.stream_ended,
        )
        receiver = Subscription(stream.put, checked)
        stream.receiver = receiver
        if watch is None and filters:
            entry.pending_filters.append((filters, receiver))
        with self.lock:
            self.streams.add(stream)
        entry.signal.connect(receiver, weak=False)
        return stream

    def stream_dropped(self, stream: EventStream, event: ChangeEvent) -> None:
        with self._stats.lock:
            self._stats.stream_dropped += 1
        send_isolated(
            signals.stream_overflow,
            self.delivery.sender,
            self._log,
            stream=stream,
            event=event,
            policy=stream.overflow,
        )

    def stream_ended(self, stream: EventStream) -> None:
        with self.lock:
            self.streams.discard(stream)

    def stopping(self) -> None:
        """The notifier stops: full ``"block"`` streams and queues must not hold the dispatcher."""
        with self.lock:
            streams = list(self.streams)
            bridge = self.delivery.bridge
        for stream in streams:
            stream.stopping()
        if bridge is not None:
            bridge.stopping()

    def end_streams(self) -> None:
        with self.lock:
            streams = list(self.streams)
        for stream in streams:
            stream.end()

    def after_fork(self) -> None:
        """In a forked child: the loop thread and the streams are the parent's."""
        self.lock = threading.Lock()
        self.delivery.bridge = None
        self.streams = set()
