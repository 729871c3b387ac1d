"""The MySQL/MariaDB dialect: row triggers append to a change log; the listener polls it.

Modules, in the order a change travels:

* :mod:`.sql`: every SQL statement (change log, triggers, consumers, registry), as data
* :mod:`.options`: the ``mysql_*`` options, checked
* :mod:`.connection`: PyMySQL connections to the engine's server
* :mod:`.dialect`: :class:`MySQLDialect` and :class:`MariaDBDialect`: installation,
  status, ``notify()``
* :mod:`.owners`: which notifiers use which trigger (``sqlnotify_users``)
* :mod:`.position`: a position in a log whose ids are not commit order
* :mod:`.source`: the listener's reads of the change log, and its pruning
* :mod:`.consumers`: named consumers' saved positions, locks and retention
"""

from __future__ import annotations

from .consumers import MySQLConsumers
from .dialect import MariaDBDialect, MySQLDialect
from .options import MySQLOptions
from .position import LogPosition
from .source import MySQLSource
from .sql import LOG_TABLE

__all__ = [
    "LOG_TABLE",
    "LogPosition",
    "MariaDBDialect",
    "MySQLConsumers",
    "MySQLDialect",
    "MySQLOptions",
    "MySQLSource",
]
