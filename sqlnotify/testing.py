"""Helpers for testing code that uses sqlnotify (and for sqlnotify's own tests).

Nothing here sleeps for a fixed time: each helper waits for a condition with
a deadline and fails with a message saying what it was waiting for.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from .events import ChangeEvent

__all__ = ["EventRecorder", "async_wait_until", "wait_until"]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition"
) -> Any:
    """Return ``predicate()``'s first truthy value; raise ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


async def async_wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition"
) -> Any:
    """:func:`wait_until` for async code: checks between short sleeps that yield to the loop."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


class EventRecorder:
    """A receiver that records what it gets; usable with ``subscribe`` and blinker.

    ``recorder(event)`` and ``recorder(sender, event=event)`` both record.
    Thread-safe: receivers run on the dispatcher thread, tests read on theirs.
    """

    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []
        self.senders: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        event = kwargs.get("event")
        sender = args[0] if args else None
        if event is None and args:
            event, sender = args[-1], None
        with self._cond:
            self.events.append(event)  # type: ignore[arg-type]
            self.senders.append(sender)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self.events)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[ChangeEvent]:
        """Wait until at least ``count`` events arrived; return all of them so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} event(s) within {timeout:g}s, got {len(self.events)}:"
                        f" {self.events[:5]!r}"
                    )
                self._cond.wait(remaining)
            return list(self.events)

    def clear(self) -> None:
        with self._cond:
            self.events.clear()
            self.senders.clear()


# -- the in-memory dialect ------------------------------------------------------
# A complete dialect over a database kept in this process (rows, triggers,
# notifications, the journal of durable watches): see sqlnotify._memory.
from ._memory import MemoryDatabase, MemoryDialect  # noqa: E402

__all__ += ["MemoryDatabase", "MemoryDialect"]
