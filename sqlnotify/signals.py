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
``stream_overflow``
    An event stream's buffer was full and an event was dropped.  Keywords
    ``stream``, ``event`` (the dropped event), ``policy``.  Runs on the
    dispatcher thread.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "event_received",
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
stream_overflow = _signals.signal(
    "sqlnotify.stream-overflow", doc="A full event stream dropped an event."
)
