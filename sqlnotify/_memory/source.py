"""One listening connection to a memory database: a queue, a pipe and ``select``."""

from __future__ import annotations

import collections
import os
import select
import time
from collections.abc import Callable, Sequence

from .._payload import Notification
from ..dialects.base import RawNotification, Source, SourceDisconnected

__all__ = ["MemorySource"]


class MemorySource(Source):
    """One listening connection (its :meth:`wait` is the listener thread's).

    The database calls :meth:`deliver` from the writing thread; :meth:`wait`
    blocks in ``select`` on the source's own pipe and the listener's wake
    pipe, never in a sleep.  :meth:`kill` breaks the connection as a server
    restart would: the next :meth:`wait` raises :class:`SourceDisconnected`.
    """

    def __init__(self, channels: Sequence[str], on_close: Callable[[MemorySource], None]) -> None:
        self.channels = frozenset(channels)
        self._on_close = on_close
        self._items: collections.deque[Notification] = collections.deque()
        self._dead = False
        self._closed = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self.last_alive = time.time()

    def deliver(self, note: Notification) -> None:
        """Queue a notification and wake the waiting thread (any thread, never blocks)."""
        self._items.append(note)
        self._poke()

    def kill(self) -> None:
        """Break the connection (any thread)."""
        self._dead = True
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._write_fd, b"\0")
        except OSError:
            pass  # the pipe is full (a wake-up is pending) or closed

    def _take(self) -> list[Notification]:
        items = self._items
        out = []
        while items:
            out.append(items.popleft())
        return out

    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        if self._dead:
            raise SourceDisconnected("the memory database closed this connection")
        out = self._take()
        if not out:
            select.select([self._read_fd, wake_fd], [], [], max(0.0, timeout))
            try:
                while os.read(self._read_fd, 4096):
                    pass
            except OSError:
                pass  # drained (BlockingIOError) or closed
            if self._dead:
                raise SourceDisconnected("the memory database closed this connection")
            out = self._take()
        self.last_alive = time.time()
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._on_close(self)
        finally:
            for fd in (self._read_fd, self._write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
