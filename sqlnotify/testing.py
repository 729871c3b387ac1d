"""Helpers for testing code that uses sqlnotify (and for sqlnotify's own tests).

Nothing here sleeps for a fixed time: each helper waits for a condition with
a deadline and fails with a message saying what it was waiting for.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .dialects.postgresql import listener_dsn
from .events import ChangeEvent

if TYPE_CHECKING:
    from .notifier import Notifier

__all__ = [
    "EventRecorder",
    "async_wait_until",
    "kill_listener_connection",
    "listener_backend_pid",
    "wait_until",
]


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


def listener_backend_pid(notifier: Notifier) -> int | None:
    """The server process id of the listener's PostgreSQL connection, if it has one now.

    ``None`` before start, after stop, between a lost connection and the next,
    and on databases without server processes (SQLite).  Call from any thread:
    it reads the listener thread's current connection without waiting for it.
    """
    # Reads the notifier's private state: the listener thread's current source.
    listener = notifier._listener
    source = listener.source if listener is not None else None
    pid = getattr(source, "backend_pid", None)
    return pid if isinstance(pid, int) else None


def kill_listener_connection(notifier: Notifier, timeout: float = 10.0) -> int:
    """Terminate the listener's PostgreSQL connection from a separate connection.

    Runs ``pg_terminate_backend`` on a new connection to the notifier's
    database, the way an administrator or a failover would, and waits up to
    ``timeout`` seconds for the server process to end.  Returns its process
    id; raises ``AssertionError`` when the listener has no connection or the
    process outlives ``timeout``.  The listener then reconnects on its own
    thread, as it does after any lost connection.  Call from any thread but
    the listener's.  Needs PostgreSQL 14 or later (``pg_terminate_backend``
    with a timeout).
    """
    import psycopg2  # the driver is needed only here, not to import this module

    pid = listener_backend_pid(notifier)
    if pid is None:
        raise AssertionError("the notifier's listener has no PostgreSQL connection to kill")
    dsn = listener_dsn(notifier.db_engine.url)
    dsn["connect_timeout"] = str(max(1, math.ceil(timeout)))
    conn = psycopg2.connect(**dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s, %s)", (pid, max(1, int(timeout * 1000))))
            (ended,) = cur.fetchone()
    finally:
        conn.close()
    if not ended:
        raise AssertionError(f"the listener's server process {pid} outlived {timeout:g}s")
    return pid


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
