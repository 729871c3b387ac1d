"""From raw notification to :class:`ChangeEvent` and into the receivers.

Runs on the dispatcher thread.  Each receiver is called in isolation: an
exception is logged with its traceback, counted, sent on
:data:`sqlnotify.signals.receiver_failed`, and the next receiver still runs.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from types import MethodType
from typing import Any

import blinker

from .._values import Converter, converter_for
from .._watch import Watch
from ..events import ChangeEvent

__all__ = ["Route", "ordered_receivers", "receiver_name", "send_isolated"]


class Route:
    """Everything the dispatcher needs for one channel."""

    __slots__ = (
        "__weakref__",
        "_generation",
        "_lock",
        "_receivers",
        "channel",
        "converters",
        "keys",
        "op",
        "schema",
        "sender",
        "signal",
        "table",
        "watch",
    )

    def __init__(self, watch: Watch, signal: blinker.Signal, dialect: str) -> None:
        self.watch = watch
        self.signal = signal
        self.sender = watch.sender
        self.channel = watch.channel
        self.schema = watch.effective_schema if dialect != "sqlite" else None
        self.table = watch.table
        self.op = watch.operation
        self.keys = watch.primary_keys
        conv: list[tuple[str, Converter]] = []
        for name, type_ in watch.column_types.items():
            fn = converter_for(type_, dialect)
            if fn is not None:
                conv.append((name, fn))
        self.converters = tuple(conv)
        self._receivers: tuple[Callable[..., Any], ...] | None = None
        self._generation = 0
        self._lock = threading.Lock()
        # The receiver list is cached; connecting or disconnecting a receiver
        # drops the cache (weakly held: an old route goes away with its notifier run).
        signal.receiver_connected.connect(self._forget_receivers)
        signal.receiver_disconnected.connect(self._forget_receivers)

    def _forget_receivers(self, *_: Any, **__: Any) -> None:
        with self._lock:
            self._generation += 1
            self._receivers = None

    def receivers(self) -> tuple[Callable[..., Any], ...]:
        """The receivers for this route's sender, as :func:`ordered_receivers` lists them.

        Cached while every receiver is strongly connected; a weakly connected
        receiver may die at any time, so then blinker is asked on every call.
        """
        cached = self._receivers
        if cached is not None:
            return cached
        signal = self.signal
        generation = self._generation
        if not signal.receivers:
            found: tuple[Callable[..., Any], ...] = ()
        else:
            found = tuple(ordered_receivers(signal, self.sender))
        if not any(isinstance(r, weakref.ref) for r in list(signal.receivers.values())):
            with self._lock:
                if generation == self._generation:
                    self._receivers = found
        return found

    def decode(self, data: dict[str, Any], status: str | None = None) -> ChangeEvent:
        """Build the event; ``status`` overrides the one the payload's flags imply."""
        row = data["row"]
        if type(row) is not dict:
            raise ValueError(f"'row' is a {type(row).__name__}, not an object")
        ts = data.get("ts")
        if ts is not None and (type(ts) is not float and type(ts) is not int):
            raise ValueError(f"'ts' is a {type(ts).__name__}, not a number")
        if not data.get("lost"):
            for key in self.keys:
                if key not in row:
                    raise ValueError(f"the row lacks its key column {key!r}")
        for name, fn in self.converters:
            value = row.get(name)
            if value is not None:
                row[name] = fn(value)
        if len(data) == 2 and status is None:
            return ChangeEvent._complete(
                self.schema, self.table, self.op, row, self.keys, data["ts"], self.channel
            )
        if status is None:
            status = "complete"
            if data.get("trunc"):
                status = "keys_only"
            elif data.get("lost"):
                status = "lost"
        return ChangeEvent(
            schema=self.schema,
            table=self.table,
            operation=self.op,
            row=row,
            primary_keys=self.keys,
            epoch=data.get("ts"),
            channel=self.channel,
            position=data.get("pos"),
            custom=bool(data.get("custom")),
            status=status,
        )


def ordered_receivers(signal: blinker.Signal, sender: Any) -> list[Callable[..., Any]]:
    """The receivers of ``signal`` for ``sender``, in the order they were connected.

    blinker yields them from a set, in no particular order; receivers of one
    watch should run in the order the application subscribed them.
    """
    live = list(signal.receivers_for(sender))
    if len(live) < 2:
        return live
    connected = [
        ref() if isinstance(ref, weakref.ref) else ref for ref in signal.receivers.values()
    ]

    def position(receiver: Any) -> int:
        for i, other in enumerate(connected):
            if other is receiver or (isinstance(receiver, MethodType) and other == receiver):
                return i
        return len(connected)

    live.sort(key=position)
    return live


def send_isolated(
    signal: blinker.Signal,
    sender: Any,
    log: logging.Logger,
    on_error: Callable[[Any, BaseException], None] | None = None,
    **kwargs: Any,
) -> None:
    """``signal.send`` where one receiver's exception does not stop the others."""
    if not signal.receivers:
        return
    for receiver in ordered_receivers(signal, sender):
        try:
            receiver(sender, **kwargs)
        except Exception as exc:
            if on_error is not None:
                on_error(receiver, exc)
            else:
                log.exception("receiver %r of %s failed", receiver, getattr(signal, "name", signal))


def receiver_name(receiver: Any) -> str:
    return getattr(receiver, "__qualname__", None) or repr(receiver)
