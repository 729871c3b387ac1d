"""Event streams: ``async for event in notifier.stream(...)``.

:class:`EventStream` is the pulling side of the asyncio support: a bounded
buffer filled by the dispatcher thread and read with ``async for`` on any
loop.  (The pushing side, ``async def`` callbacks, is the pipeline's bridge.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

import blinker

from .events import ChangeEvent
from .exceptions import SQLNotifyConfigurationError, SQLNotifyStreamOverflowError

__all__ = ["OVERFLOW_POLICIES", "EventStream"]

#: What a full stream buffer or async callback queue does.
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "block", "raise")


class EventStream:
    """An async iterator over the events of one watch, with a bounded buffer.

    Created by :meth:`Notifier.stream`.  The dispatcher thread appends events
    to the buffer; ``async for`` reads them on whichever loop iterates.  The
    stream ends (``StopAsyncIteration``) once the notifier stops and the
    events already buffered have been read, or after :meth:`aclose`.

    When the buffer holds ``maxsize`` events, the ``overflow`` policy decides:

    ``"drop_oldest"`` (default)
        The oldest buffered event is dropped to make room.
    ``"drop_newest"``
        The arriving event is dropped.
    ``"block"``
        The dispatcher thread waits up to ``block_timeout`` seconds for room
        (holding back every other receiver of the notifier meanwhile), then
        drops the arriving event.  Once the notifier is stopping it no
        longer waits.
    ``"raise"``
        The arriving event (and every later one) is dropped, and the consumer
        gets :class:`~sqlnotify.exceptions.SQLNotifyStreamOverflowError` after
        the events buffered before the overflow.

    Every drop is counted (:attr:`dropped`, the notifier's
    ``stats.stream_dropped``), sent on
    :data:`sqlnotify.signals.stream_overflow` (dispatcher thread), and
    logged: a warning when the buffer first overflows and one with the total
    when it has room again.
    """

    def __init__(
        self,
        *,
        signal: blinker.Signal,
        log: logging.Logger,
        description: str,
        maxsize: int,
        overflow: str,
        block_timeout: float,
        on_drop: Callable[[EventStream, ChangeEvent], None],
        on_end: Callable[[EventStream], None],
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise SQLNotifyConfigurationError(
                f"overflow={overflow!r} is not a stream overflow policy;"
                f" use one of {', '.join(map(repr, OVERFLOW_POLICIES))}"
            )
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise SQLNotifyConfigurationError(
                f"a stream's maxsize must be a positive integer, not {maxsize!r}"
            )
        if block_timeout < 0:
            raise SQLNotifyConfigurationError(
                f"block_timeout must be zero or more seconds, not {block_timeout!r}"
            )
        self.maxsize = maxsize
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.description = description
        #: Events this stream dropped because its buffer was full.
        self.dropped = 0
        self._signal = signal
        self._log = log
        self._on_drop = on_drop
        self._on_end = on_end
        self._buffer: collections.deque[ChangeEvent] = collections.deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._waiter: asyncio.Future[None] | None = None
        self._waiter_loop: asyncio.AbstractEventLoop | None = None
        self._ended = False
        self._stopping = False
        self._error: BaseException | None = None
        self._overflowing = 0  # drops in the current overflow episode
        self.receiver: Any = None  # the signal receiver; set by the notifier

    # -- the dispatcher side ------------------------------------------------
    def put(self, event: ChangeEvent) -> None:
        """Buffer one event (dispatcher thread); applies the overflow policy."""
        dropped: ChangeEvent | None = None
        wake: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        with self._lock:
            if self._ended:
                return
            buffer = self._buffer
            if self._error is not None:
                dropped = event
            elif len(buffer) >= self.maxsize:
                policy = self.overflow
                if policy == "drop_oldest":
                    dropped = buffer.popleft()
                    buffer.append(event)
                elif policy == "block":
                    if not self._stopping:
                        self._room.wait_for(
                            lambda: self._ended or self._stopping or len(buffer) < self.maxsize,
                            self.block_timeout,
                        )
                    if self._ended:
                        return
                    if len(buffer) >= self.maxsize:
                        dropped = event
                    else:
                        buffer.append(event)
                elif policy == "raise":
                    dropped = event
                    self._error = SQLNotifyStreamOverflowError(
                        f"the stream on {self.description} overflowed its buffer of"
                        f" {self.maxsize} events (overflow='raise'); read it faster or pass"
                        " a larger maxsize",
                        maxsize=self.maxsize,
                    )
                else:  # drop_newest
                    dropped = event
            else:
                buffer.append(event)
            first_drop = dropped is not None and self._overflowing == 0
            recovered = 0
            if dropped is not None:
                self.dropped += 1
                self._overflowing += 1
            elif self._overflowing:
                recovered, self._overflowing = self._overflowing, 0
            waiter = self._waiter
            if waiter is not None and self._waiter_loop is not None:
                wake = (self._waiter_loop, waiter)
                self._waiter = None
        if wake is not None:
            self._wake(*wake)
        if first_drop:
            self._log.warning(
                "the stream on %s is full (maxsize=%d): dropping events (overflow=%r)",
                self.description,
                self.maxsize,
                self.overflow,
            )
        if recovered:
            self._log.warning(
                "the stream on %s dropped %d event(s) while it was full",
                self.description,
                recovered,
            )
        if dropped is not None:
            self._on_drop(self, dropped)

    @staticmethod
    def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> None:
        def resolve() -> None:
            if not waiter.done():
                waiter.set_result(None)

        try:
            loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # the consumer's loop is closed
            pass

    def stopping(self) -> None:
        """The notifier is stopping: a full ``"block"`` stream drops instead of waiting."""
        with self._lock:
            self._stopping = True
            self._room.notify_all()

    def end(self) -> None:
        """End the stream (any thread): readers get the buffered events, then the end."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._room.notify_all()
            waiter, loop = self._waiter, self._waiter_loop
            self._waiter = None
            leftover = self._overflowing
            self._overflowing = 0
        if self.receiver is not None:
            self._signal.disconnect(self.receiver)
        if waiter is not None and loop is not None:
            self._wake(loop, waiter)
        if leftover:
            self._log.warning(
                "the stream on %s dropped %d event(s) while it was full",
                self.description,
                leftover,
            )
        self._on_end(self)

    # -- the consumer side --------------------------------------------------
    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ChangeEvent:
        while True:
            with self._lock:
                if self._buffer:
                    event = self._buffer.popleft()
                    if self.overflow == "block":
                        self._room.notify()
                    return event
                if self._error is not None:
                    error, self._error = self._error, None
                    ended = True
                elif self._ended:
                    raise StopAsyncIteration
                else:
                    ended = False
                    loop = asyncio.get_running_loop()
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiter, self._waiter_loop = waiter, loop
            if ended:
                self.end()
                raise error
            try:
                await waiter
            finally:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None

    def __len__(self) -> int:
        """How many events are buffered now."""
        with self._lock:
            return len(self._buffer)

    @property
    def ended(self) -> bool:
        """``True`` once the stream stopped receiving events."""
        return self._ended

    async def aclose(self) -> None:
        """Stop receiving events; events already buffered can still be read."""
        self.end()

    def close(self) -> None:
        """:meth:`aclose` for synchronous code."""
        self.end()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.end()

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return (
            f"<EventStream {self.description} {state} buffered={len(self._buffer)}"
            f" dropped={self.dropped} overflow={self.overflow!r}>"
        )
