"""Waking a polling listener: file events, and the pauses between checks.

A listener that finds changes by checking the database (SQLite) needs two
things: a cheap signal that something may have changed (:class:`FileWatch`,
inotify on Linux), and a schedule for checking again (:class:`Pacer`),
quick right after a wake-up or a change, slow while nothing happens.
Neither knows SQL; both belong to the listener thread.
"""

from __future__ import annotations

import os
import struct

__all__ = ["FileWatch", "Pacer"]

# struct inotify_event: wd, mask, cookie, len (then len bytes of name).
_EVENT = struct.Struct("iIII")


class FileWatch:
    """inotify on one file: readable :attr:`fd` when the file was written.

    Needs Linux and the ``inotify_simple`` package; the constructor raises
    :class:`ImportError` or :class:`OSError` where that is unavailable.
    """

    MASK_NAMES = ("MODIFY", "DELETE_SELF", "MOVE_SELF", "ATTRIB")

    def __init__(self, path: str) -> None:
        from inotify_simple import INotify, flags

        mask = 0
        for name in self.MASK_NAMES:
            mask |= int(getattr(flags, name))
        self._ino = INotify(nonblocking=True)
        try:
            self._ino.add_watch(path, mask)
        except BaseException:
            self._ino.close()
            raise
        self._lost = int(flags.DELETE_SELF) | int(flags.MOVE_SELF) | int(flags.IGNORED)
        self.fd: int = self._ino.fileno()
        self.path = path

    def drain(self) -> bool:
        """Consume pending events; ``False`` when the watched file went away."""
        # Read the events directly: this runs after every commit, and
        # inotify_simple's reader builds an object per event.
        alive = True
        fd, lost, unpack = self.fd, self._lost, _EVENT.unpack_from
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:  # includes BlockingIOError: nothing left
                return alive
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, name_len = unpack(data, offset)
                if mask & lost:
                    alive = False
                offset += _EVENT.size + name_len
            if len(data) < 4096 - _EVENT.size:
                return alive

    def close(self) -> None:
        try:
            self._ino.close()
        except OSError:
            pass


class Pacer:
    """How long a listener may sleep before it checks again.

    * After a wake-up that found nothing yet, check again quickly for a while
      (:attr:`WAKE_STEPS`): the change that caused it may still be landing.
    * After a change was read while a file watch is in use, check a few more
      times (:attr:`AFTER_READ_STEPS`): the wake-up for a change that was
      still landing may have been consumed with the one just read.
    * Otherwise sleep until woken (with a file watch), or poll, starting at
      ``min_poll`` after activity and doubling up to ``max_poll``.

    The class attributes are the schedules; tests and benchmarks may change them.
    """

    WAKE_STEPS: tuple[float, ...] = (
        *(0.0001,) * 4,
        *(0.0002,) * 4,
        *(0.0005,) * 4,
        0.001,
        0.002,
        0.004,
        0.008,
        0.016,
        0.032,
        0.064,
    )
    AFTER_READ_STEPS: tuple[float, ...] = (0.0005, 0.002, 0.008, 0.032)

    def __init__(self, min_poll: float, max_poll: float, *, watching: bool) -> None:
        self.min_poll = min_poll
        self.max_poll = max(min_poll, max_poll)
        #: A file watch wakes the listener (else it polls).
        self.watching = watching
        self._poll = min_poll
        self._steps: tuple[float, ...] = ()
        self._step = 0

    @property
    def settled(self) -> bool:
        """No quick checks pending: the next pause waits for a wake-up or the poll."""
        return self._step >= len(self._steps)

    def pause(self, timeout: float) -> float:
        """How long the next wait may last, at most ``timeout``."""
        if self._step < len(self._steps):
            return min(timeout, self._steps[self._step])
        if self.watching:
            return timeout
        return min(timeout, self._poll)

    def found(self) -> None:
        """A check found changes."""
        self._poll = self.min_poll
        self._start(self.AFTER_READ_STEPS if self.watching else ())

    def woke(self) -> None:
        """A wake-up (or a busy database) found nothing yet."""
        self._start(self.WAKE_STEPS)

    def slept(self) -> None:
        """A pause ended by its timeout, and the check after it found nothing."""
        if self._step < len(self._steps):
            self._step += 1
        elif not self.watching:
            self._poll = min(self._poll * 2, self.max_poll)

    def _start(self, steps: tuple[float, ...]) -> None:
        self._steps = steps
        self._step = 0
