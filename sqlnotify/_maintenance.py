"""The maintenance thread: periodic housekeeping such as pruning the overflow table."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Periodic"]


class Periodic:
    """A named daemon thread that calls ``task()`` every ``interval`` seconds until stopped.

    The first call happens one interval after :meth:`start`.  An exception
    from ``task`` is logged and the loop goes on.
    """

    def __init__(
        self,
        task: Callable[[], object],
        interval: float,
        *,
        log: logging.Logger,
        name: str = "sqlnotify-maintenance",
    ) -> None:
        self._task = task
        self._interval = interval
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop and join the thread; ``False`` if it did not end within ``timeout``."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._log.warning("the maintenance thread did not stop within %.1fs", timeout)
            return False
        return True

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._task()
            except Exception:
                self._log.warning("sqlnotify maintenance failed; retrying later", exc_info=True)
