"""Waking a polling listener: file events.

A listener that finds changes by checking the database (SQLite) needs a
cheap signal that something may have changed (:class:`FileWatch`, inotify on
Linux), and a schedule for checking again (:class:`sqlnotify._pacer.Pacer`,
shared with PostgreSQL's poll mode).  Neither knows SQL; both belong to the
listener thread.
"""

from __future__ import annotations

import os
import struct

__all__ = ["FileWatch"]

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
