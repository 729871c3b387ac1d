"""From raw notification to :class:`ChangeEvent` and into the receivers.

Runs on the dispatcher thread.  :class:`Delivery` takes each batch the
dispatcher dequeues: it finds the channel's :class:`Route`, decodes the
payload (the keys are those of :mod:`sqlnotify._payload`), converts the
values and calls the watch's receivers.  Each receiver is called in
isolation: an exception is logged with its traceback, counted, sent on
:data:`sqlnotify.signals.receiver_failed`, and the next receiver still runs.
A notification no watch can take is dropped: counted, logged and sent on
:data:`sqlnotify.signals.notification_dropped`.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .. import signals
from .._journal import JournalEvent
from .._payload import (
    ERR,
    MSG,
    OVF,
    POS,
    ROWS,
    TRUNC,
    Decoded,
    RawNotification,
    decode_json,
)
from ..events import ChangeEvent
from .backfill import SnapshotBatch, deliver_snapshot
from .bridge import LoopBridge
from .dispatcher import Dispatcher, JournalBatch
from .route import Route, receiver_name, send_isolated
from .stats import Stats

__all__ = ["Delivery", "Pending"]

_event_received = signals.event_received


class Pending:
    """One parsed notification of a batch, waiting to be decoded."""

    __slots__ = ("data", "raw", "route", "status")

    def __init__(self, route: Route, data: dict[str, Any], raw: str) -> None:
        self.route = route
        self.data = data
        self.raw = raw
        #: The event's status when it differs from what the payload says.
        self.status: str | None = None


class Resolver(Protocol):
    """Completes the references and keys-only rows of a batch (see :mod:`.overflow`)."""

    def resolve(self, items: list[Pending]) -> list[Pending]: ...


def payload_of(n: RawNotification) -> Any:
    """The decoded payload of one notification (a journal event may carry it decoded)."""
    if type(n) is Decoded:
        return n.data
    if type(n) is JournalEvent:
        data = n.data
        if data is None:  # read from the journal: the position is apart
            data = decode_json(n.payload)
            data[POS] = n.position
        return data
    return decode_json(n.payload)


class Delivery:
    """Decodes the dispatcher's batches into events and calls the receivers.

    One per notifier; each start gives it the run's routes, dispatcher and
    bridge.  Every method runs on the dispatcher thread, except
    :meth:`receiver_failed` (also the event loop's, for ``async def``
    callbacks).  ``sender`` is the notifier: the sender of every signal.

    :param advice: how log messages name the settings they advise.
    """

    #: How many recent events the lag percentiles of ``health()`` cover.
    LAG_WINDOW = 4096

    def __init__(
        self,
        sender: Any,
        stats: Stats,
        log: logging.Logger,
        advice: Mapping[str, str],
    ) -> None:
        self.sender = sender
        self.stats = stats
        self.log = log
        self.advice = advice
        self.routes: dict[str, Route] = {}
        #: Resolves overflow references and keys-only rows (set per run).
        self.large: Resolver | None = None
        #: The last started dispatcher (kept after stop): receivers check it.
        self.halt: Dispatcher | None = None
        #: The bridge of ``async def`` callbacks, flushed after each batch.
        self.bridge: LoopBridge | None = None
        #: Seconds from the trigger's timestamp to receipt, most recent last.
        self.lags: collections.deque[float] = collections.deque(maxlen=self.LAG_WINDOW)
        self._warned: set[tuple[str, bool]] = set()

    def handle_batch(self, batch: Sequence[RawNotification]) -> None:
        """The dispatcher's handler: deliver one batch, then wake the event loop once."""
        try:
            if type(batch) is JournalBatch:
                self.decode_journal(batch)
            elif type(batch) is SnapshotBatch:
                deliver_snapshot(self, batch)
            else:
                self.decode_batch(batch)
        finally:
            bridge = self.bridge
            if bridge is not None:
                bridge.flush()

    def decode_batch(self, batch: Sequence[RawNotification]) -> None:
        # The hot path: one loop, names bound locally, no call per event but
        # the decoder's, the route's and the receivers'.
        routes = self.routes
        stats = self.stats
        deliver = self.deliver
        received_at = getattr(batch, "received_at", None)
        lags = self.lags
        loads = decode_json
        halt = self.halt
        ovf, trunc = OVF, TRUNC
        for index, n in enumerate(batch):
            if halt is not None and halt.halted:
                return  # stop() returned: no receiver runs any more
            channel = n.channel
            route = routes.get(channel)
            if route is None:
                self.drop(channel, "no watch uses this channel", n.payload)
                continue
            try:
                if type(n) is Decoded:
                    data = n.data
                elif type(n) is JournalEvent:
                    data = payload_of(n)
                else:
                    data = loads(n.payload)
                if (ovf in data or trunc in data) and type(data) is dict:
                    # The rest of the batch takes the slower path, in order.
                    self._decode_large(route, data, n.payload, batch[index + 1 :], received_at)
                    return
                if ROWS in data and type(data) is dict:
                    self._decode_rows(route, data, n.payload, received_at)
                    continue
                event = route.decode(data)
            except Exception as exc:
                self.undecodable(channel, exc, n.payload)
                continue
            stats.received += 1
            epoch = event._epoch
            if received_at is not None and type(epoch) is float:
                lags.append(received_at - epoch)
            if event._status != "complete":
                self.incomplete(route, event, data.get(ERR), data.get(MSG))
            deliver(route, event)

    def decode_journal(self, batch: JournalBatch) -> None:
        """Deliver rows read from the journal of durable watches.

        Each payload is decoded once; the event's position comes from the
        journal (``batch.stamp``), never from the payload.
        """
        routes = self.routes
        stats = self.stats
        deliver = self.deliver
        received_at = batch.received_at
        lags = self.lags
        loads = decode_json
        stamp = batch.stamp
        halt = self.halt
        ovf, trunc = OVF, TRUNC
        for index, (token, channel, payload) in enumerate(batch):
            if halt is not None and halt.halted:
                return  # stop() returned: no receiver runs any more
            route = routes.get(channel)
            if route is None:
                self.drop(channel, "no watch uses this channel", payload)
                continue
            try:
                data = loads(payload)
                if (ovf in data or trunc in data) and type(data) is dict:
                    # The rest of the batch takes the slower path, in order.
                    data[POS] = stamp(token)
                    rest = [JournalEvent(c, p, None, stamp(t), t) for t, c, p in batch[index + 1 :]]
                    self._decode_large(route, data, payload, rest, received_at)
                    return
                event = route.decode(data, None, stamp(token))
            except Exception as exc:
                self.undecodable(channel, exc, payload)
                continue
            stats.received += 1
            epoch = event._epoch
            if type(epoch) is float:
                lags.append(received_at - epoch)
            if event._status != "complete":
                self.incomplete(route, event, data.get(ERR), data.get(MSG))
            deliver(route, event)

    def _decode_rows(self, route: Route, data: dict[str, Any], raw: str, at: float | None) -> None:
        """Deliver a multi-row payload's events in order (raises before any if malformed)."""
        for item in route.split(data):
            if self.halt is not None and self.halt.halted:
                return  # stop() returned: no receiver runs any more
            try:
                event = route.decode(item)
            except Exception as exc:
                self.undecodable(route.channel, exc, raw)
                continue
            self.stats.received += 1
            if at is not None and type(event._epoch) is float:
                self.lags.append(at - event._epoch)
            self.deliver(route, event)

    def _decode_large(
        self,
        route: Route,
        data: dict[str, Any],
        raw: str,
        rest: Sequence[RawNotification],
        received_at: float | None,
    ) -> None:
        """Deliver a batch holding references or keys-only rows, resolving them in bulk."""
        items = [Pending(route, data, raw)]
        for n in rest:
            other = self.routes.get(n.channel)
            if other is None:
                self.drop(n.channel, "no watch uses this channel", n.payload)
                continue
            try:
                parsed = payload_of(n)
            except Exception as exc:
                self.undecodable(n.channel, exc, n.payload)
                continue
            if type(parsed) is not dict:
                self.drop(n.channel, "undecodable payload (not a JSON object)", n.payload)
                continue
            if ROWS in parsed:
                try:
                    items.extend(Pending(other, row, n.payload) for row in other.split(parsed))
                except Exception as exc:
                    self.undecodable(n.channel, exc, n.payload)
                continue
            items.append(Pending(other, parsed, n.payload))
        if self.large is not None:
            items = self.large.resolve(items)
        for item in items:
            try:
                event = item.route.decode(item.data, item.status)
            except Exception as exc:
                self.undecodable(item.route.channel, exc, item.raw)
                continue
            self.stats.received += 1
            epoch = event.epoch
            if received_at is not None and type(epoch) is float:
                self.lags.append(received_at - epoch)
            if event.status != "complete":
                self.incomplete(item.route, event, item.data.get(ERR), item.data.get(MSG))
            self.deliver(item.route, event)

    def deliver(self, route: Route, event: ChangeEvent) -> None:
        """Call every receiver of the route's watch with ``event``, each in isolation."""
        halt = self.halt
        if halt is not None and halt.halted:
            return  # stop() returned: no receiver runs any more
        if _event_received.receivers:
            send_isolated(_event_received, self.sender, self.log, event=event)
        sender = route.sender
        for receiver in route.receivers():
            if halt is not None and halt.halted:
                return
            try:
                receiver(sender, event=event)
            except Exception as exc:
                self.receiver_failed(receiver, event, exc)
        self.stats.dispatched += 1

    def receiver_failed(self, receiver: Any, event: Any, exc: BaseException) -> None:
        """Count, log and signal a receiver's exception (dispatcher or loop thread)."""
        with self.stats.lock:  # async callbacks fail on the loop's thread
            self.stats.receiver_errors += 1
        name = receiver_name(getattr(receiver, "fn", receiver))
        if isinstance(event, ChangeEvent):
            what = f"{event.operation.value} event from channel {event.channel!r}"
        else:
            what = type(event).__name__
        self.log.error("receiver %s failed on %s", name, what, exc_info=exc)
        send_isolated(
            signals.receiver_failed,
            self.sender,
            self.log,
            receiver=receiver,
            event=event,
            exception=exc,
        )

    def drop(self, channel: str, reason: str, payload: str | None = None) -> None:
        """Count, log and signal a notification no receiver gets."""
        self.stats.dropped += 1
        self.log.warning("dropped a notification on channel %r: %s", channel, reason)
        if payload is not None:
            self.log.debug("dropped payload on %r: %.500s", channel, payload)
        send_isolated(
            signals.notification_dropped, self.sender, self.log, channel=channel, reason=reason
        )

    def undecodable(self, channel: str, exc: Exception, payload: str) -> None:
        # The exception's text may quote a row value: DEBUG only.
        self.log.debug("cannot decode a payload on %r: %s", channel, exc)
        self.drop(channel, f"undecodable payload ({type(exc).__name__})", payload)

    def incomplete(
        self,
        route: Route,
        event: ChangeEvent,
        error: str | None = None,
        message: str | None = None,
    ) -> None:
        """Count an event without all its values; say why, once per watch."""
        self.stats.truncated += 1
        if error is not None:
            self.log.warning(
                "the trigger for %s could not build its payload (SQLSTATE %s): the table no"
                " longer matches the watch (a column dropped or renamed?); the event carries"
                " no values. Restart the notifier to replace the trigger",
                route.watch.describe(),
                error,
            )
            # The server's message may quote a value: DEBUG only.
            self.log.debug("trigger error on %r: %s", route.channel, message)
            return
        lost = event.status == "lost"
        if (route.channel, lost) in self._warned:
            return
        self._warned.add((route.channel, lost))
        if lost:
            self.log.warning(
                "a row of %s was too large for one notification, and so were its keys alone;"
                " the event carries no values (%s delivers it whole)."
                " This is logged once per watch.",
                route.watch.describe(),
                self.advice["overflow_table"],
            )
            return
        self.log.warning(
            "rows of %s are too large for one notification: their events are sent by key and"
            " the columns re-read from the table (status 'hydrated', or 'row_gone' once the row"
            " is deleted); %s delivers them whole, as of the"
            " change. This is logged once per watch.",
            route.watch.describe(),
            self.advice["overflow_table"],
        )

    def send_gap(
        self,
        start: dt.datetime,
        end: dt.datetime,
        channels: tuple[str, ...],
        reason: str,
        count: int | None,
    ) -> None:
        """Log and signal a window in which events may be missing (dispatcher thread)."""
        self.log.warning(
            "events of %d channel(s) may be missing between %s and %s (%s)",
            len(channels),
            start.isoformat(),
            end.isoformat(),
            reason,
        )
        send_isolated(
            signals.gap,
            self.sender,
            self.log,
            start=start,
            end=end,
            channels=channels,
            reason=reason,
            count=count,
        )
        bridge = self.bridge
        if bridge is not None:
            bridge.flush()  # async on_gap callbacks, submitted outside a batch
