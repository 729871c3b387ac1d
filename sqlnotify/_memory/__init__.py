"""An in-memory database behind a complete dialect, for tests that need no server.

:class:`MemoryDatabase` (:mod:`.database`) holds rows, the installed watches
(:mod:`.triggers`), the open listening connections (:mod:`.source`) and a
journal of durable watches; :class:`MemoryDialect` (:mod:`.dialect`)
implements the closed contract of :mod:`sqlnotify.dialects.base` over it.
Both are public as :mod:`sqlnotify.testing` names.
"""

from __future__ import annotations

from .database import WAKE_PAYLOAD, MemoryDatabase, MemoryJournal, encode_value
from .dialect import MemoryDialect
from .source import MemorySource

__all__ = [
    "WAKE_PAYLOAD",
    "MemoryDatabase",
    "MemoryDialect",
    "MemoryJournal",
    "MemorySource",
    "encode_value",
]
