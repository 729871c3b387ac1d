"""The SQLite dialect: row triggers append to a change log; the listener reads it in order.

Modules, in the order a change travels:

* :mod:`.sql`: every SQL statement (change log, triggers, consumers, registry), as data
* :mod:`.options`: the ``sqlite_*`` options, checked
* :mod:`.connection`: the database file, the application's SQLite module, connections
* :mod:`.dialect`: :class:`SQLiteDialect`: installation, status, ``notify()``
* :mod:`.owners`: which notifiers use which trigger (``sqlnotify_users``)
* :mod:`.source`: the listener's reads of the change log, and its pruning
* :mod:`.wake`: inotify and the pauses between the listener's checks
* :mod:`.consumers`: named consumers' saved positions and lock files
"""

from __future__ import annotations

from .connection import database_path, driver_for, is_busy
from .consumers import SQLiteConsumers
from .dialect import SQLiteDialect
from .options import SQLiteOptions
from .source import SQLiteSource, prune_log
from .sql import LOG_TABLE

__all__ = [
    "LOG_TABLE",
    "SQLiteConsumers",
    "SQLiteDialect",
    "SQLiteOptions",
    "SQLiteSource",
    "database_path",
    "driver_for",
    "is_busy",
    "prune_log",
]
