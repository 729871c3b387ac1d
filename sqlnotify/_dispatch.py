"""The dispatcher thread: decodes queued notifications and calls the receivers."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .dialects.base import RawNotification

__all__ = ["Dispatcher"]

_STOP: Any = object()


class Dispatcher:
    """A named daemon thread that hands each queued batch to ``handle`` in order."""

    #: Bound of one queue wait; the thread also stops on a sentinel.
    GET_TIMEOUT = 1.0

    def __init__(
        self,
        handle: Callable[[Sequence[RawNotification]], None],
        *,
        log: logging.Logger,
        name: str = "sqlnotify-dispatcher",
    ) -> None:
        self._handle = handle
        self._log = log
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, batch: Sequence[RawNotification]) -> None:
        """Queue one batch (called on the listener thread)."""
        self.queue.put(batch)

    def stop(self, timeout: float) -> bool:
        """Dispatch what is queued, then stop; ``False`` if not done within ``timeout``."""
        self._stop.set()
        self.queue.put(_STOP)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._log.warning(
                "the dispatcher thread did not stop within %.1fs (a receiver is still running?)",
                timeout,
            )
            return False
        return True

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ident(self) -> int | None:
        """The thread's identifier once started."""
        return self._thread.ident

    def _run(self) -> None:
        get = self.queue.get
        handle = self._handle
        while True:
            try:
                batch = get(timeout=self.GET_TIMEOUT)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if batch is _STOP:
                return
            try:
                handle(batch)
            except Exception:
                self._log.exception("the dispatcher failed on a batch of %d", len(batch))
