"""The relay's health thread (``sqlnotify-relay-health``): lag measured, health published.

Every ``publish_interval`` seconds it measures the relay's lag from the journal
(on a connection of its own, opened only while the active relay does not keep
up, or on a standby) and publishes the relay's health to Redis.  It never
waits for the relay's thread, so a relay blocked on Redis still shows its lag
growing.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ._pipeline.worker import Worker
from .dialects.base import JournalStore

__all__ = ["HealthMonitor", "Measured"]


class Measured(Protocol):
    """What the health thread needs of a relay."""

    log: logging.Logger
    notifier: Any
    publish_interval: float

    def measure(self, store: JournalStore) -> None: ...

    def publish(self) -> None: ...


class HealthMonitor(Worker):
    """Measures a relay's lag and publishes its health, every ``publish_interval`` seconds."""

    def __init__(self, relay: Measured) -> None:
        super().__init__(
            name="sqlnotify-relay-health", log=relay.log, what="the relay's health thread"
        )
        self.relay = relay

    def run(self) -> None:
        relay = self.relay
        # A dialect of its own: the notifier's hands out one shared journal
        # connection, which the relay's thread uses.
        main = relay.notifier.dialect
        twin = type(main)(main.engine, relay.log, main.settings)
        store = twin.journal()
        ready = False
        try:
            while True:
                try:
                    if not ready:
                        store.ensure()
                        ready = True
                    relay.measure(store)
                except Exception as exc:
                    store.close()
                    ready = False
                    relay.log.debug("could not measure the relay's lag: %s", exc)
                relay.publish()
                if self.stopping.wait(relay.publish_interval):
                    break
        finally:
            store.close()
            twin.close()
