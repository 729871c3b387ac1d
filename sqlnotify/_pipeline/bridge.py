"""The asyncio bridge's core: ``async def`` callbacks of the dispatcher's events on one loop.

For an ``async def`` subscription the dispatcher thread only appends the
event to the subscription's queue in a :class:`LoopBridge`; at the end of
each dispatcher batch the bridge wakes the target event loop once
(``loop.call_soon_threadsafe``).  On the loop, one worker task per
subscription drains its queue, so its callbacks run one at a time, in commit
order.

Each queue is bounded (``maxsize``); a full one applies the same overflow
policies as an :class:`~sqlnotify.streams.EventStream`.  The default,
``"block"``, makes the dispatcher wait for the loop, which holds the
listener back like a slow sync receiver would, so nothing is dropped.

For a durable consumer every queued callback carries a delivery number of
:class:`~sqlnotify._pipeline.durable.Acks`, done when the callback returns or raises:
callbacks cancelled or never run at stop (or dropped by a full queue) keep
the consumer's saved position before their events.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..events import ChangeEvent
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyStreamOverflowError
from ..streams import OVERFLOW_POLICIES
from .durable import Acks
from .worker import Worker

__all__ = ["LoopBridge", "LoopThread", "check_queue_options", "running_loop"]


_QUEUED, _DROPPED, _ABANDON = "queued", "dropped", "abandon"


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, or ``None``."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopThread(Worker):
    """A private event loop running forever on a named daemon thread."""

    def __init__(self, log: logging.Logger, name: str = "sqlnotify-asyncio") -> None:
        super().__init__(name=name, log=log, what="the private event loop thread")
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()

    def start(self, timeout: float = 10.0) -> None:
        self.start_thread()
        if not self._started.wait(timeout):
            raise RuntimeError(f"the private event loop did not start within {timeout:g}s")

    def run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._started.set)
        try:
            loop.run_forever()
            leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
            if leftover:
                # Tasks that callbacks started and left running.
                self._log.warning(
                    "cancelling %d task(s) left on the private event loop", len(leftover)
                )
                for task in leftover:
                    task.cancel()
                loop.run_until_complete(asyncio.wait(leftover, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(
                asyncio.wait([loop.create_task(loop.shutdown_default_executor())], timeout=5.0)
            )
        except Exception:
            self._log.exception("the private event loop failed")
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self, timeout: float) -> bool:
        """Stop the loop and join the thread; ``False`` if it did not end within ``timeout``."""
        self.stopping.set()
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            pass
        return self.join(timeout)


class _SubState:
    """One subscription's queue on one loop, and the worker task draining it.

    Events are ``(event, seq)`` pairs (``seq``: the delivery number of
    :class:`~sqlnotify._pipeline.durable.Acks`, 0 when untracked).  Submissions wait in
    ``staged`` (under the bridge's lock) until the loop's next wake moves
    them to ``queue``, which only the loop's worker consumes: the worker
    takes a whole dispatcher batch at a time instead of racing the
    dispatcher for each event.  ``listed``: the state waits for that wake.
    """

    __slots__ = ("blocked", "current", "dropping", "listed", "queue", "staged", "task")

    def __init__(self) -> None:
        self.queue: collections.deque[tuple[ChangeEvent, int]] = collections.deque()
        self.staged: list[tuple[ChangeEvent, int]] = []
        self.task: asyncio.Task[None] | None = None
        self.current: ChangeEvent | None = None
        self.listed = False
        self.blocked = 0  # dispatcher waits for room (overflow="block")
        self.dropping = 0  # drops in the current overflow episode


class LoopBridge:
    """Hands events from the dispatcher thread to ``async def`` callbacks on one loop.

    :param loop: the loop the callbacks run on.
    :param on_error: called with ``(subscription, event, exception)`` when a
        callback raises (on the loop thread), or, with
        :class:`~sqlnotify.exceptions.SQLNotifyStreamOverflowError`, when a
        full ``overflow="raise"`` queue refuses an event (on the submitting
        thread).
    :param on_abandoned: called with a count of callbacks that will never
        run (the loop closed, or the notifier stopped before they could).
    :param thread: the private loop thread, when the bridge owns one.
    :param maxsize: most events waiting in one subscription's queue.
    :param overflow: what a full queue does, as for :class:`~sqlnotify.streams.EventStream`:
        ``"block"`` (the submitting thread waits up to ``block_timeout``
        seconds, ``None``: until there is room or the notifier stops),
        ``"drop_oldest"``, ``"drop_newest"``, ``"raise"`` (the arriving
        event is dropped and reported through ``on_error``).
    :param on_drop: called with ``(subscription, event, policy)`` for each
        event a full queue dropped, on the submitting thread.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        log: logging.Logger,
        on_error: Callable[[Any, ChangeEvent, BaseException], None],
        on_abandoned: Callable[[int], None],
        thread: LoopThread | None = None,
        maxsize: int = 10_000,
        overflow: str = "block",
        block_timeout: float | None = None,
        on_drop: Callable[[Any, ChangeEvent, str], None] | None = None,
    ) -> None:
        check_queue_options(maxsize, overflow, block_timeout, "async_")
        self.loop = loop
        self.thread = thread
        self.maxsize = maxsize
        self.overflow = overflow
        self.block_timeout = block_timeout
        self._log = log
        self._on_error = on_error
        self._on_abandoned = on_abandoned
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._ready: list[tuple[Any, _SubState]] = []
        self._scheduled = False
        self._closed = False
        self._stopping = False
        self._states: dict[Any, _SubState] = {}
        self._closed_loop_logged = False
        self._exempt: asyncio.Task[Any] | None = None
        #: Ident of the thread that calls :meth:`flush` after each batch (the
        #: dispatcher); a submission from any other thread flushes at once.
        self.batch_thread: int | None = None
        #: Completion tracking of a durable consumer's deliveries, if any.
        self.acks: Acks | None = None

    # -- any thread -----------------------------------------------------------
    def submit(self, sub: Any, event: ChangeEvent) -> None:
        """Queue one callback; waits only when a ``"block"`` queue is full."""
        acks = self.acks
        seq = acks.begin() if acks is not None else 0
        dropped: ChangeEvent | None = None
        dropped_seq = 0
        wake = False
        recovered = episode = 0
        with self._lock:
            if self._closed:
                outcome = _ABANDON
            else:
                state = self._states.get(sub)
                if state is None:
                    state = self._states[sub] = _SubState()
                if len(state.staged) + len(state.queue) < self.maxsize:
                    state.staged.append((event, seq))
                    outcome = _QUEUED
                else:
                    outcome, dropped, dropped_seq = self._full(state, event, seq)
                if dropped is not None:
                    state.dropping += 1
                    episode = state.dropping
                elif state.dropping and outcome is _QUEUED:
                    recovered, state.dropping = state.dropping, 0
                if outcome is _QUEUED and not state.listed:
                    state.listed = True
                    self._ready.append((sub, state))
                    if not self._scheduled and threading.get_ident() != self.batch_thread:
                        self._scheduled = wake = True
        if wake:
            self._schedule()
        if outcome is _ABANDON:
            self._abandon(1, "the notifier is stopping")
        if dropped is not None:
            if acks is not None:
                acks.hold(dropped_seq)
            self._dropped(sub, dropped, episode == 1)
        elif recovered:
            self._log.warning(
                "the async queue of %s dropped %d event(s) while it was full",
                _describe(sub),
                recovered,
            )

    def _full(self, state: _SubState, event: ChangeEvent, seq: int) -> tuple[str, Any, int]:
        # Under the lock, with the state full: the outcome, and the
        # event dropped (if any) with its ``seq``, which is never done, so a
        # durable consumer's position holds before it.
        policy = self.overflow
        if policy == "drop_oldest":
            try:
                oldest, oldest_seq = state.queue.popleft()
            except IndexError:  # the oldest is still staged (or just taken)
                if state.staged:
                    oldest, oldest_seq = state.staged.pop(0)
                else:
                    oldest, oldest_seq = None, 0
            state.staged.append((event, seq))
            return _QUEUED, oldest, oldest_seq
        if policy != "block":
            return _DROPPED, event, seq
        if self._ready and not self._scheduled:
            # The loop must run to make room: wake it now, not at the batch's end.
            self._scheduled = True
            self._schedule_locked()
        self._wait_room(state)
        full = len(state.staged) + len(state.queue) >= self.maxsize
        if self._closed or (self._stopping and full):
            return _ABANDON, None, 0
        if full:
            return _DROPPED, event, seq
        state.staged.append((event, seq))
        return _QUEUED, None, 0

    def _wait_room(self, state: _SubState) -> None:
        timeout = self.block_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        state.blocked += 1
        try:
            while len(state.staged) + len(state.queue) >= self.maxsize and not (
                self._closed or self._stopping
            ):
                remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if remaining <= 0:
                    return
                self._room.wait(remaining)
        finally:
            state.blocked -= 1

    def _dropped(self, sub: Any, event: ChangeEvent, first: bool) -> None:
        policy = self.overflow
        if first:
            self._log.warning(
                "the async queue of %s is full (%d events): dropping events (overflow=%r)",
                _describe(sub),
                self.maxsize,
                policy,
            )
        if self._on_drop is not None:
            self._on_drop(sub, event, policy)
        if policy == "raise":
            self._on_error(
                sub,
                event,
                SQLNotifyStreamOverflowError(
                    f"the async queue of {_describe(sub)} overflowed its {self.maxsize} events"
                    " (overflow='raise'); the event was dropped: make the callback faster or"
                    " raise async_maxsize",
                    maxsize=self.maxsize,
                ),
            )

    def stopping(self) -> None:
        """The notifier is stopping: a full ``"block"`` queue no longer waits."""
        with self._lock:
            self._stopping = True
            self._room.notify_all()

    def exempt(self, task: asyncio.Task[Any] | None) -> None:
        """Do not wait for ``task`` when draining: it is the callback stopping the notifier."""
        self._exempt = task

    def flush(self) -> None:
        """Wake the loop once for everything submitted since the last wake."""
        if not self._ready:
            return
        with self._lock:
            if self._scheduled or not self._ready:
                return
            self._scheduled = True
        self._schedule()

    def _schedule(self) -> None:
        with self._lock:
            self._schedule_locked()

    def _schedule_locked(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._run_pending)
        except RuntimeError:  # the loop is closed
            count = 0
            acks = self.acks
            for _, state in self._ready:
                count += len(state.staged)
                if acks is not None and state.staged:
                    acks.hold(state.staged[0][1])
                state.staged = []
                state.listed = False
            self._ready = []
            self._scheduled = False
            self._abandon(count, "its event loop is closed")

    def _abandon(self, count: int, why: str) -> None:
        if not count:
            return
        self._on_abandoned(count)
        level = logging.DEBUG if self._closed_loop_logged else logging.WARNING
        self._closed_loop_logged = True
        self._log.log(level, "%d async callback(s) not run: %s", count, why)

    # -- the loop's thread ----------------------------------------------------
    def _run_pending(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._scheduled = False
            for _, state in ready:
                state.queue.extend(state.staged)
                state.staged = []
                state.listed = False
        create_task = self.loop.create_task
        for sub, state in ready:
            if state.task is None and state.queue:
                state.task = create_task(self._work(sub, state))

    async def _work(self, sub: Any, state: _SubState) -> None:
        queue = state.queue
        fn = sub.fn
        on_error = self._on_error
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        try:
            while True:
                try:
                    event, seq = queue.popleft()
                except IndexError:  # empty (a full queue may drop its oldest meanwhile)
                    return
                state.current = event
                if state.blocked:
                    with self._lock:
                        self._room.notify_all()
                try:
                    await fn(event)
                except Exception as exc:
                    on_error(sub, event, exc)
                except asyncio.CancelledError as exc:
                    if cancelling is None or cancelling():
                        raise  # this worker is being cancelled
                    on_error(sub, event, exc)  # the callback's own cancelled await
                if seq:
                    self.acks.done(seq)  # type: ignore[union-attr]
        finally:
            state.current = None
            state.task = None

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            self._room.notify_all()
        self._run_pending()

    def _give_up(self, waited: float) -> list[asyncio.Task[None]]:
        """Count, log and cancel what is still pending; return the cancelled tasks."""
        running = queued = 0
        tasks = []
        exempt = self._exempt
        with self._lock:
            for state in self._states.values():
                task = state.task
                if task is not None and task is not exempt:
                    if state.current is not None:
                        running += 1
                    tasks.append(task)
                queued += len(state.queue) + len(state.staged)
                state.queue.clear()
                state.staged = []
        if running or queued:
            self._on_abandoned(running + queued)
            self._log.warning(
                "%d async callback(s) still pending after waiting %.1fs for them at stop:"
                " %d running (cancelled), %d queued (not run)",
                running + queued,
                waited,
                running,
                queued,
            )
        for task in tasks:
            task.cancel()
        return tasks

    async def drain(self, timeout: float) -> None:
        """Stop accepting events, wait up to ``timeout`` for queued callbacks, cancel the rest."""
        self._close()
        exempt = self._exempt
        tasks = [s.task for s in self._states.values() if s.task not in (None, exempt)]
        started = time.monotonic()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        cancelled = self._give_up(time.monotonic() - started)
        if cancelled:
            await asyncio.wait(cancelled, timeout=1.0)

    # -- stopping from any thread ---------------------------------------------
    def drain_blocking(self, timeout: float) -> None:
        """:meth:`drain` for a synchronous caller (on any thread, the loop's included)."""
        loop = self.loop
        if running_loop() is loop:
            # The caller blocks the loop itself: nothing can run any more.
            # A callback stopping the notifier finishes after stop() returns.
            self.exempt(asyncio.current_task(loop))
            self._close()
            self._give_up(0.0)
            return
        if loop.is_closed() or not loop.is_running():
            with self._lock:
                self._closed = True
                self._room.notify_all()
                ready, self._ready = self._ready, []
            count = 0
            for _, state in ready:
                count += len(state.staged)
                state.staged = []
            if self._states:
                try:
                    self._give_up(0.0)
                except RuntimeError:  # tasks of a closed loop
                    pass
            self._abandon(count, "its event loop is not running")
            return
        future = asyncio.run_coroutine_threadsafe(self.drain(timeout), loop)
        try:
            future.result(timeout + 5.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._log.warning(
                "the event loop did not finish the async callbacks within %.1fs", timeout
            )
        except Exception:
            self._log.exception("stopping the async callbacks failed")

    def stop_thread(self, timeout: float) -> None:
        """Stop and join the private loop thread, if the bridge owns one."""
        if self.thread is not None:
            self.thread.stop(timeout)


def _describe(sub: Any) -> str:
    fn = getattr(sub, "fn", sub)
    return f"callback {getattr(fn, '__qualname__', None) or fn!r}"


def check_queue_options(
    maxsize: int, overflow: str, block_timeout: float | None, prefix: str = ""
) -> None:
    """Raise :class:`SQLNotifyConfigurationError` for a bad queue bound or overflow policy."""
    if overflow not in OVERFLOW_POLICIES:
        raise SQLNotifyConfigurationError(
            f"{prefix}overflow={overflow!r} is not an overflow policy;"
            f" use one of {', '.join(map(repr, OVERFLOW_POLICIES))}"
        )
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
        raise SQLNotifyConfigurationError(
            f"{prefix}maxsize must be a positive integer, not {maxsize!r}"
        )
    if block_timeout is not None and (
        not isinstance(block_timeout, (int, float)) or block_timeout < 0
    ):
        raise SQLNotifyConfigurationError(
            f"{prefix}block_timeout must be zero or more seconds, not {block_timeout!r}"
        )
