"""The pauses of a listener that finds changes by checking: quick after activity, slow when idle.

Used by SQLite's and MySQL's change-log sources and PostgreSQL's poll mode, on the
listener thread.  Knows no SQL.
"""

from __future__ import annotations

__all__ = ["Pacer"]


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
