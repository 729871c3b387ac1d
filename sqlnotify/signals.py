"""Notifier-wide blinker signals.

Each is sent with the :class:`~sqlnotify.Notifier` as sender, so a receiver
can listen to one notifier (``connect(fn, sender=notifier)``) or to all.
Connect receivers at configuration time: blinker's connect is not
thread-safe against a concurrent send.

``event_received``
    Every event, before the per-watch receivers run.  Keyword ``event``.
    Runs on the dispatcher thread.
``listener_connected``
    The listener connected (or reconnected) and listens.  Keyword
    ``reconnect`` (bool).  Runs on the listener thread.
``listener_disconnected``
    The listener lost its connection.  Keyword ``error`` (the exception).
    Runs on the listener thread.
``receiver_failed``
    A receiver raised.  Keywords ``receiver``, ``event``, ``exception``.
    Runs on the thread the receiver ran on.
``notification_dropped``
    A notification could not be decoded or routed and was dropped.
    Keywords ``channel``, ``reason``.  Runs on the dispatcher thread.
``gap``
    Events of some channels may have been missed, so state derived from
    them should be re-read from the database.  Keywords ``start`` and
    ``end`` (timezone-aware :class:`~datetime.datetime` in UTC: the window
    in which events may be missing), ``channels`` (a tuple of the channel
    names affected), ``reason`` (``"disconnected"``: the listener lost its
    connection; ``"overflow"``: the in-process queue was full and events
    were dropped; ``"retention"``: a durable consumer fell behind the
    journal's retention) and ``count`` (events known to be dropped, or
    ``None`` when unknown).  Runs on the dispatcher thread, in order with
    the events: every event received before the gap was dispatched first.
``stream_overflow``
    An event stream's buffer was full and an event was dropped.  Keywords
    ``stream``, ``event`` (the dropped event), ``policy``.  Runs on the
    dispatcher thread.
``async_overflow``
    The queue of an ``async def`` callback was full (``async_maxsize``) and
    an event was dropped for it.  Keywords ``receiver`` (the callback),
    ``event`` (the dropped event), ``policy``.  Runs on the dispatcher
    thread.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "async_overflow",
    "event_received",
    "gap",
    "listener_connected",
    "listener_disconnected",
    "notification_dropped",
    "receiver_failed",
    "stream_overflow",
]

_signals = Namespace()

event_received = _signals.signal("sqlnotify.event-received", doc="Every delivered event.")
listener_connected = _signals.signal(
    "sqlnotify.listener-connected", doc="The listener listens (again)."
)
listener_disconnected = _signals.signal(
    "sqlnotify.listener-disconnected", doc="The listener lost its connection."
)
receiver_failed = _signals.signal("sqlnotify.receiver-failed", doc="A receiver raised.")
notification_dropped = _signals.signal(
    "sqlnotify.notification-dropped", doc="A notification was undecodable and dropped."
)
gap = _signals.signal(
    "sqlnotify.gap", doc="Events in a time window may be missing: resync from the database."
)
stream_overflow = _signals.signal(
    "sqlnotify.stream-overflow", doc="A full event stream dropped an event."
)
async_overflow = _signals.signal(
    "sqlnotify.async-overflow", doc="A full async callback queue dropped an event."
)
