"""The thread pattern of the pipeline, written once.

Every thread sqlnotify starts (listener, dispatcher, maintenance, private
event loop) is a :class:`Worker`: a named daemon thread, a stop
:class:`threading.Event` its loop checks, and a join bounded by a timeout
that logs when the thread overran it.  Joining from the thread itself (a
receiver stopping its notifier) returns at once.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["Worker"]


class Worker:
    """A named daemon thread running :meth:`run` until :attr:`stopping` is set.

    :param name: the thread's name (``sqlnotify-...``).
    :param what: how the warning names the thread when a join times out
        (``"the listener thread"``).
    :param hint: appended to that warning (``" (a receiver is still running?)"``).
    """

    def __init__(self, *, name: str, log: logging.Logger, what: str, hint: str = "") -> None:
        self._log = log
        self._what = what
        self._hint = hint
        #: Set to ask the thread to end; its loop checks it at every turn.
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def run(self) -> None:
        """The thread's body (overridden)."""
        raise NotImplementedError

    def start_thread(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the thread to end; log and return ``False`` if it did not.

        From the thread itself it does not wait (the thread ends once the
        current call returns).
        """
        thread = self._thread
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        if thread.is_alive():
            self._log.warning("%s did not stop within %.1fs%s", self._what, timeout, self._hint)
            return False
        return True

    @property
    def on_thread(self) -> bool:
        """``True`` when called on this worker's own thread."""
        return self._thread is threading.current_thread()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def name(self) -> str:
        return self._thread.name

    @property
    def ident(self) -> int | None:
        """The thread's identifier once started."""
        return self._thread.ident

    @property
    def thread(self) -> threading.Thread:
        return self._thread
