"""PostgreSQL: row triggers that ``pg_notify()`` a JSON payload, and a LISTEN socket.

One module per part:

- :mod:`.dialect`: :class:`PostgresDialect`, building and installing each watch's trigger;
- :mod:`.sql`: every SQL text sent to PostgreSQL, as data;
- :mod:`.dsn`: libpq connection keywords from an engine's URL (:func:`listener_dsn`);
- :mod:`.source`: :class:`PostgresSource`, the listener's LISTEN connection;
- :mod:`.journal`: the journal of durable watches (:class:`PostgresJournal`);
- :mod:`.overflow`: the overflow table of rows too large for one notification;
- :mod:`.install`, :mod:`.ownership`: bounded DDL, the registry of notifiers, channel locks;
- :mod:`.probe`: bounded connections, and the first contact with a server.
"""

from __future__ import annotations

from .dialect import PostgresDialect
from .dsn import listener_dsn
from .journal import PostgresJournal, SnapshotPosition
from .overflow import PgOverflow
from .source import PostgresSource
from .sql import MAX_IDENTIFIER, MAX_PAYLOAD, OVERFLOW_TABLE, WAKE_PAYLOAD, dollar_quote

__all__ = [
    "MAX_IDENTIFIER",
    "MAX_PAYLOAD",
    "OVERFLOW_TABLE",
    "WAKE_PAYLOAD",
    "PgOverflow",
    "PostgresDialect",
    "PostgresJournal",
    "PostgresSource",
    "SnapshotPosition",
    "dollar_quote",
    "listener_dsn",
]
