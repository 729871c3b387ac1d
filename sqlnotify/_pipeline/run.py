"""One start to one stop of a notifier: the threads, their wiring, and the stop order.

:meth:`Run.start` builds the pipeline of one start: routes for the
delivery, the dispatcher thread, the intake (with the journal of durable
watches), the listener thread, then the maintenance thread.  A live event
then goes listener -> intake -> dispatcher -> delivery (-> bridge) without
coming back here.

:meth:`Run.stop` takes it down in the one order that keeps a durable
consumer's saved position behind every unfinished callback: the listener
first (nothing new arrives), then the dispatcher (what was queued is
delivered), then the async callbacks (drained or cancelled), and only then
the intake saves the final position.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import signal as _signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import blinker

from .._backfill import BackfillRequest, unwrap
from .._ownership import Policy
from .._watch import Watch
from ..dialects.base import Dialect
from .delivery import Delivery
from .dispatcher import Dispatcher
from .durable import open_journal
from .intake import Intake
from .listener import Listener
from .maintenance import Maintenance, Ownership
from .route import Route
from .stats import Stats, percentile
from .subscriptions import AsyncSide

__all__ = ["Run", "health_report", "wait_for_stop"]


class Run:
    """The threads and state of one start of a notifier, until its stop.

    ``sender`` is the notifier, the sender of every signal the run sends.
    """

    def __init__(
        self,
        *,
        sender: Any,
        dialect: Dialect,
        delivery: Delivery,
        async_side: AsyncSide,
        log: logging.Logger,
        stop_timeout: float,
    ) -> None:
        self.sender = sender
        self.dialect = dialect
        self.delivery = delivery
        self.async_side = async_side
        self.log = log
        self.stop_timeout = stop_timeout
        self.listener: Listener | None = None
        self.dispatcher: Dispatcher | None = None
        self.intake: Intake | None = None
        self.maintenance: Maintenance | None = None
        self.owners: Ownership | None = None
        self.watches: list[Watch] = []
        self.started_at: dt.datetime | None = None

    def start(
        self,
        watches: Sequence[Watch],
        watch_signals: Sequence[blinker.Signal],
        *,
        loop: asyncio.AbstractEventLoop | None,
        timeout: float,
        consumer: str | None,
        max_queue: int,
        queue_timeout: float,
        retention: float,
        consumer_expiry: float,
        wants_loop: bool,
        backfills: Sequence[tuple[Watch, BackfillRequest]] = (),
    ) -> None:
        """Start the dispatcher and the listener; return once the listener listens."""
        dialect, delivery, log = self.dialect, self.delivery, self.log
        self.watches = list(watches)
        delivery.routes = {
            w.channel: Route(w, signal, dialect.name)
            for w, signal in zip(watches, watch_signals, strict=True)
        }
        channels = list(delivery.routes)
        side = self.async_side
        bridge = side.new_bridge(loop, None) if loop is not None or wants_loop else None
        side.set_bridge(bridge)
        try:
            journal = open_journal(dialect, watches, consumer, log, backfills)
        except BaseException:
            side.set_bridge(None)
            side.close(bridge, 0.0)
            raise
        dispatcher = Dispatcher(delivery.handle_batch, log=log)
        intake = Intake(
            sender=self.sender,
            dispatcher=dispatcher,
            stats=delivery.stats,
            log=log,
            send_gap=delivery.send_gap,
            channels=channels,
            journal=journal,
            replays_log=dialect.capabilities.replays_log,
            consumer=consumer,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            retention=retention,
            consumer_expiry=consumer_expiry,
            wake_payload=dialect.capabilities.wake_payload,
            drop=delivery.drop,
        )
        delivery.halt = dispatcher
        dispatcher.start()
        if bridge is not None:
            bridge.batch_thread = dispatcher.ident
            bridge.acks = intake.acks
        resume_at = journal.resume_at
        listener = Listener(
            lambda stop: dialect.open_source(channels, stop=stop, position=resume_at),
            intake.push,
            log=log,
            on_connected=intake.on_connected,
            on_disconnected=intake.on_disconnected,
            on_tick=intake.tick,
        )
        self.intake = intake
        try:
            listener.start(timeout)
        except BaseException:
            dispatcher.stop(self.stop_timeout)
            self.intake = None
            dialect.close()
            side.set_bridge(None)
            side.close(bridge, 0.0)
            raise
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.dispatcher = dispatcher
        self.listener = listener
        dialect.attach(listener.wake)

    def start_maintenance(self, policy: Policy, cleanup: bool) -> None:
        """Start the maintenance thread (after :meth:`start`): registry upkeep, pruning."""
        watches = self.watches
        self.owners = Ownership(
            self.dialect, watches, dataclasses.replace(policy, live=True), self.log, cleanup=cleanup
        )
        self.maintenance = Maintenance(self.dialect, watches, self.owners, self.log)
        store = self.dialect.overflow
        schemas = {w.effective_schema for w in watches}
        self.maintenance.start(
            any(w.use_overflow_table for w in watches)
            or (store is not None and store.has_tables(schemas))
        )

    def stop(self, drain_timeout: float) -> Ownership | None:
        """Stop every thread, in the order the module docstring gives; return the upkeep."""
        listener, dispatcher = self.listener, self.dispatcher
        self.listener = self.dispatcher = None
        self.dialect.detach()
        if self.maintenance is not None:
            self.maintenance.stop(self.stop_timeout)
        intake = self.intake
        if intake is not None:
            intake.stopping.set()
        if listener is not None:
            listener.stop(self.stop_timeout)
        side = self.async_side
        side.stopping()  # a full "block" stream or callback queue must not hold the dispatcher now
        drained = dispatcher.stop(self.stop_timeout) if dispatcher is not None else True
        side.close(side.set_bridge(None), drain_timeout)
        if intake is not None:
            # After the callbacks: the position never passes one not finished.
            intake.close(drained)
        side.end_streams()
        owners, self.owners = self.owners, None
        return owners

    def abandon(self) -> None:
        """In a forked child: let go of the parent's listener without touching it."""
        listener, self.listener, self.dispatcher = self.listener, None, None
        if listener is not None:
            listener.abandon()

    @property
    def prune_due(self) -> float | None:
        return self.maintenance.prune_due if self.maintenance is not None else None


def health_report(
    run: Run | None,
    stats: Stats,
    lags: collections.deque[float],
    *,
    running: bool,
    max_queue: int,
    consumer: str | None,
    server_queue_usage: float | None,
) -> dict[str, Any]:
    """The dictionary of ``Notifier.health()`` (any thread), for the current or last run."""
    intake = run.intake if run is not None else None
    dispatcher = run.dispatcher if run is not None else None
    ordered = sorted(lags.copy())  # one C call: safe while the dispatcher appends
    report: dict[str, Any] = {
        "running": running,
        "connected": bool(intake and intake.connected and running),
        "since": intake.since if intake is not None else (run.started_at if run else None),
        "received": stats.received,
        "dispatched": stats.dispatched,
        "failed": stats.receiver_errors,
        "dropped": stats.dropped,
        "overflowed": stats.overflowed,
        "duplicates": stats.duplicates,
        "gaps": stats.gaps,
        "reconnects": stats.reconnects,
        "large_fetched": stats.overflow_fetched,
        "hydrated": stats.hydrated,
        "keys_only": stats.truncated,
        "async_abandoned": stats.async_abandoned,
        "stream_dropped": stats.stream_dropped,
        "async_dropped": stats.async_dropped,
        "queue_depth": dispatcher.depth if dispatcher is not None else 0,
        "max_queue": max_queue,
        "lag_p50": percentile(ordered, 0.5) if ordered else None,
        "lag_p99": percentile(ordered, 0.99) if ordered else None,
        "server_queue_usage": server_queue_usage,
    }
    feed = intake.feed if intake is not None else None
    if feed is not None and feed.acked is not None:
        report["consumer"] = consumer
        report["position"] = feed.store.stamp(unwrap(feed.acked))
    if feed is not None and feed.backfill is not None:
        report["backfill"] = feed.backfill.report()
    return report


@contextlib.contextmanager
def catching_signals(stop_signals: Sequence[int]) -> Iterator[list[int]]:
    """Within the block, ``stop_signals`` are recorded in the list it yields.

    On the main thread, handlers are installed on entry and the previous
    ones restored on exit (so a second Ctrl-C during a slow stop acts as
    usual); elsewhere none is installed and the list stays empty.
    """
    received: list[int] = []
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)  # no lock here: the main thread may hold any

    if threading.current_thread() is threading.main_thread():
        for signum in stop_signals:
            previous[signum] = _signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, old in previous.items():
            _signal.signal(signum, old)


def wait_for_stop(stopped: threading.Event, received: list[int]) -> int | None:
    """Block until a signal is in ``received`` or ``stopped`` is set; return the signal, if any."""
    while not received and not stopped.wait(0.2):
        pass
    return received[0] if received else None
