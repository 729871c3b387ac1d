"""The listener thread: owns the database connection and feeds the dispatcher queue."""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Sequence

from .._payload import RawNotification
from ..dialects.base import Source
from ..exceptions import SQLNotifyListenerError
from .worker import Worker

__all__ = ["Listener"]


class Listener(Worker):
    """A named daemon thread that keeps one :class:`Source` open and drains it.

    Reconnects after any failure with capped exponential backoff and jitter,
    forever, until :meth:`stop`.  The backoff constants are class attributes
    so tests (and users) can change them.
    """

    INITIAL_DELAY = 0.5
    BACKOFF = 2.0
    MAX_DELAY = 30.0
    JITTER = 0.2
    #: Upper bound of one wait on the source; the wake pipe ends it earlier.
    WAIT_TIMEOUT = 1.0

    def __init__(
        self,
        open_source: Callable[[threading.Event], Source],
        sink: Callable[[Sequence[RawNotification]], None],
        *,
        log: logging.Logger,
        on_connected: Callable[[bool, Source], None],
        on_disconnected: Callable[[BaseException], None],
        on_tick: Callable[[], float | None] | None = None,
        name: str = "sqlnotify-listener",
    ) -> None:
        super().__init__(name=name, log=log, what="the listener thread")
        self._open_source = open_source
        self._sink = sink
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_tick = on_tick
        self._stop = self.stopping
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.source: Source | None = None

    # -- control (any thread) -------------------------------------------------
    def start(self, timeout: float) -> None:
        """Start the thread and return once it listens; raise if the first connect fails."""
        self.start_thread()
        if not self._ready.wait(timeout):
            self.stop(timeout=5.0)
            raise SQLNotifyListenerError(f"the listener was not listening after {timeout:g}s")
        if self._start_error is not None:
            self.stop(timeout=5.0)
            err = self._start_error
            if isinstance(err, SQLNotifyListenerError):
                raise err
            raise SQLNotifyListenerError(f"the listener could not start: {err}") from err

    def wake(self) -> None:
        """Make the listener's current wait return now (thread-safe, never blocks)."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake is pending) or closed

    def stop(self, timeout: float) -> bool:
        """Stop and join the thread; return ``False`` if it did not end within ``timeout``."""
        self._stop.set()
        self.wake()
        stopped = self.join(timeout)
        if stopped:
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        return stopped

    def abandon(self) -> None:
        """In a forked child: let go of the parent's connection and pipe, touching neither.

        The thread does not exist in the child, so nothing is joined and no
        lock it may have held is taken.
        """
        source, self.source = self.source, None
        if source is not None:
            source.abandon()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        # A late wake() (from a commit hook) must not write to a reused descriptor.
        self._wake_r = self._wake_w = -1

    # -- the thread ---------------------------------------------------------
    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def run(self) -> None:
        delay = self.INITIAL_DELAY
        first = True
        while not self._stop.is_set():
            try:
                # The stop event goes along: a connect in progress checks it.
                source = self._open_source(self._stop)
            except BaseException as exc:
                if self._stop.is_set():
                    return  # stop() cut the attempt short: nothing to report
                if first:
                    self._start_error = exc
                    self._ready.set()
                    return
                self._log.warning("listener reconnect failed: %s; next try in %.1fs", exc, delay)
                self._stop.wait(delay * random.uniform(1 - self.JITTER, 1 + self.JITTER))
                delay = min(delay * self.BACKOFF, self.MAX_DELAY)
                continue
            self.source = source
            delay = self.INITIAL_DELAY
            self._notify_connected(not first, source)
            first = False
            self._ready.set()
            error = self._pump(source)
            self.source = None
            source.close()
            if error is not None and not self._stop.is_set():
                self._log.warning("listener connection lost: %s; reconnecting", error)
                self._notify_disconnected(error)
                self._stop.wait(delay * random.uniform(0, self.JITTER))

    def _pump(self, source: Source) -> BaseException | None:
        stop = self._stop
        wake_r = self._wake_r
        sink = self._sink
        tick = self._on_tick
        timeout = self.WAIT_TIMEOUT
        while not stop.is_set():
            try:
                items = source.wait(timeout, wake_r)
            except Exception as exc:  # SourceDisconnected or a driver error
                return exc
            if items:
                # Queue first: the wake pipe is drained by the next empty wait
                # (a pending wake byte only makes that wait return at once).
                try:
                    sink(items)
                except Exception:
                    self._log.exception("the listener could not queue %d notifications", len(items))
            else:
                self._drain_wake()
            if tick is not None:
                try:
                    next_wait = tick()
                except Exception:
                    self._log.exception("the listener's periodic work failed")
                    next_wait = None
                timeout = self.WAIT_TIMEOUT
                if next_wait is not None:
                    timeout = max(0.0, min(next_wait, timeout))
        return None

    def _notify_connected(self, reconnect: bool, source: Source) -> None:
        try:
            self._on_connected(reconnect, source)
        except Exception:
            self._log.exception("a listener-connected receiver failed")

    def _notify_disconnected(self, error: BaseException) -> None:
        try:
            self._on_disconnected(error)
        except Exception:
            self._log.exception("a listener-disconnected receiver failed")
