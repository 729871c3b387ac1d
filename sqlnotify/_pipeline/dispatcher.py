"""The dispatcher thread: decodes queued notifications and calls the receivers."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._payload import RawNotification
from .worker import Worker

__all__ = ["Batch", "Control", "Dispatcher", "JournalBatch"]

_STOP: Any = object()


class Batch(list[Any]):
    """A list of notifications with the wall-clock time the listener received them."""

    __slots__ = ("received_at",)

    def __init__(self, items: Sequence[Any] = (), received_at: float = 0.0) -> None:
        super().__init__(items)
        self.received_at = received_at


class JournalBatch(Batch):
    """Rows ``(token, channel, payload)`` read from the journal of durable watches.

    ``stamp(token)`` is the number the event of a row carries (the journal
    store's :meth:`~sqlnotify.dialects.base.JournalStore.stamp`): the
    dispatcher takes it there, so the reading thread builds nothing per row.
    """

    __slots__ = ("stamp",)

    def __init__(
        self, rows: Sequence[Any], received_at: float, stamp: Callable[[Any], int]
    ) -> None:
        super().__init__(rows, received_at)
        self.stamp = stamp


class Control:
    """A queued action run on the dispatcher thread, in order with the batches around it."""

    __slots__ = ("action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action


class Dispatcher(Worker):
    """A named daemon thread that hands each queued batch to ``handle`` in order.

    The queue counts the notifications it holds (:attr:`depth`) so the
    producer can bound it: :meth:`wait_room` blocks, with a timeout, until
    the dispatcher has caught up.
    """

    #: Bound of one queue wait; the thread also stops on a sentinel.
    GET_TIMEOUT = 1.0

    def __init__(
        self,
        handle: Callable[[Sequence[RawNotification]], None],
        *,
        log: logging.Logger,
        name: str = "sqlnotify-dispatcher",
    ) -> None:
        super().__init__(
            name=name,
            log=log,
            what="the dispatcher thread",
            hint=" (a receiver is still running?)",
        )
        self._handle = handle
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = self.stopping
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._depth = 0
        #: Producers waiting in :meth:`wait_room` (notified only when there are some).
        self._waiting = 0
        #: Set once the notifier stopped without waiting for this thread (a
        #: receiver called stop(), or one overran the join): no receiver may
        #: run any more, and nothing queued is dispatched.
        self.halted = False

    def start(self) -> None:
        self.start_thread()

    @property
    def depth(self) -> int:
        """How many notifications are queued and not yet dispatched."""
        return self._depth

    def put(self, batch: Sequence[RawNotification]) -> None:
        """Queue one batch (called on the listener thread)."""
        with self._lock:
            self._depth += len(batch)
        self.queue.put(batch)

    def put_control(self, action: Callable[[], None]) -> None:
        """Queue ``action`` to run on the dispatcher thread after what is queued now."""
        self.queue.put(Control(action))

    def wait_room(self, limit: int, timeout: float) -> bool:
        """Wait until fewer than ``limit`` notifications are queued; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._room:
            self._waiting += 1
            try:
                while self._depth >= limit:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        return False
                    self._room.wait(min(remaining, 0.5))
            finally:
                self._waiting -= 1
        return True

    def stop(self, timeout: float) -> bool:
        """Dispatch what is queued, then stop; ``False`` if not done within ``timeout``.

        Called on the dispatcher thread itself (by a receiver), it cannot
        wait: the thread halts after the receiver returns, leaving the rest
        undispatched, and this returns ``False``.
        """
        self._stop.set()
        self.queue.put(_STOP)
        if self.on_thread:
            self.halted = True
            return False
        if not self.join(timeout):
            self.halted = True
            return False
        return True

    def run(self) -> None:
        get = self.queue.get
        handle = self._handle
        lock = self._lock
        room = self._room
        while True:
            try:
                batch = get(timeout=self.GET_TIMEOUT)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if batch is _STOP or self.halted:
                return
            if type(batch) is Control:
                try:
                    batch.action()
                except Exception:
                    self._log.exception("a dispatcher action failed")
                continue
            try:
                handle(batch)
            except Exception:
                self._log.exception("the dispatcher failed on a batch of %d", len(batch))
            finally:
                with lock:
                    self._depth -= len(batch)
                    if self._waiting:
                        room.notify_all()
