"""What travels from a database to the pipeline: raw notifications and their payload.

A :class:`Notification` is what a source hands the listener: a channel and
the payload text, still encoded.  (The payload keys, and how one payload is
read, are documented here too: this module is their one home.)
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["Notification", "RawNotification"]


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
