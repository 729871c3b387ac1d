"""A watch's route: its channel's payloads decoded into events, and its receivers.

:class:`Route` turns one channel's payload (the keys are those of
:mod:`sqlnotify._payload`) into a :class:`~sqlnotify.events.ChangeEvent`
with the watch's typed values; :func:`ordered_receivers` and
:func:`send_isolated` call a signal's receivers in the order they were
connected, each in isolation.  Used on the dispatcher thread.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from types import MethodType
from typing import Any

import blinker

from .._payload import CHG, CUSTOM, LOST, OLD, POS, ROW, TRUNC, TS, split_rows
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
        "columns",
        "converters",
        "keys",
        "old",
        "op",
        "required",
        "schema",
        "sender",
        "signal",
        "table",
        "update",
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
        #: The key columns a row must hold (a TRUNCATE event has no row).
        self.required = () if watch.operation.value == "truncate" else watch.primary_keys
        #: UPDATE payloads carry ``chg`` (and ``old``): decoded apart.
        self.update = watch.operation.value == "update"
        #: The order of a row's values in a multi-row payload (``rows``) ...
        self.columns = watch.payload_columns
        #: ... which then hold the old ones too.
        self.old = self.update and watch.include_old
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

    def decode(
        self, data: dict[str, Any], status: str | None = None, position: int | None = None
    ) -> ChangeEvent:
        """Build the event; ``status`` overrides the one the payload's flags imply.

        ``position``: the event's journal position when it is not in ``data``.
        """
        row = data[ROW]
        if type(row) is not dict:
            raise ValueError(f"'row' is a {type(row).__name__}, not an object")
        ts = data.get(TS)
        if ts is not None and (type(ts) is not float and type(ts) is not int):
            raise ValueError(f"'ts' is a {type(ts).__name__}, not a number")
        if not data.get(LOST):
            for key in self.required:
                if key not in row:
                    raise ValueError(f"the row lacks its key column {key!r}")
        for name, fn in self.converters:
            value = row.get(name)
            if value is not None:
                row[name] = fn(value)
        changed = old = None
        if self.update:
            changed, old = self._changes(data)
        elif len(data) == 2 and status is None:
            return ChangeEvent._complete(
                self.schema, self.table, self.op, row, self.keys, data[TS], self.channel, position
            )
        if status is None:
            status = "complete"
            if data.get(TRUNC):
                status = "keys_only"
            elif data.get(LOST):
                status = "lost"
        return ChangeEvent(
            schema=self.schema,
            table=self.table,
            operation=self.op,
            row=row,
            primary_keys=self.keys,
            epoch=data.get(TS),
            channel=self.channel,
            position=data.get(POS) if position is None else position,
            custom=bool(data.get(CUSTOM)),
            status=status,
            changed_columns=changed,
            old=old,
        )

    def split(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The single-row payloads of a multi-row payload (``rows``), in order."""
        return split_rows(data, self.columns, self.update, self.old)

    def _changes(self, data: dict[str, Any]) -> tuple[tuple[str, ...] | None, Any]:
        """An UPDATE's ``chg`` and ``old``, checked and decoded (``old`` like the row)."""
        changed = data.get(CHG)
        if changed is not None and (
            type(changed) is not list or not all(type(c) is str for c in changed)
        ):
            raise ValueError(f"'chg' is not a list of column names: {changed!r}")
        old = data.get(OLD)
        if old is not None:
            if type(old) is not dict:
                raise ValueError(f"'old' is a {type(old).__name__}, not an object")
            for name, fn in self.converters:
                value = old.get(name)
                if value is not None:
                    old[name] = fn(value)
        return (None if changed is None else tuple(changed)), old


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
