"""Positions in the binary log, the server checks of the binlog source, and its consumers.

A :class:`BinlogPosition` is a file and offset at a transaction boundary
(where a replica may start reading), plus ``skip``: how many events of the
transaction that starts there were already read.  A reader stopped in the
middle of a large transaction thus resumes at its start and skips what it
delivered: nothing is lost, nothing comes twice.  The GTID of that
transaction (MariaDB's ``domain-server-sequence``, MySQL's ``uuid:n``) is
kept for the record; resuming uses the file and offset, which every server
version has.

The end of the log comes from ``SHOW BINARY LOGS`` (the last file and its
size), never from ``SHOW MASTER STATUS``, which MySQL 8.4 removed.  A saved
position whose file is no longer listed was purged: a gap.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import json
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..._watch import Watch
from ...exceptions import SQLNotifyListenerError
from . import sql
from .connection import MySQLServer, execute
from .consumers import hold_consumer, release_consumer

__all__ = [
    "COMPRESSED",
    "BinlogConsumers",
    "BinlogPosition",
    "binlog_end",
    "binlog_files",
    "binlog_problems",
    "compressed_lost",
]


@functools.lru_cache(maxsize=64)
def _file_number(file: str) -> int:
    """The sequence number ending a binary log file's name (one per file, so cached)."""
    match = re.search(r"(\d+)$", file)
    return int(match.group(1)) if match else 0


class BinlogPosition(NamedTuple):
    """A transaction boundary ``(file, pos)`` and the events of that transaction already read.

    A named tuple: one is made for each row read, on the listener thread.
    """

    file: str
    pos: int
    skip: int = 0
    gtid: str | None = None

    @property
    def number(self) -> int:
        """The number events carry as ``event.position`` (grows along the log)."""
        return (_file_number(self.file) << 80) | (self.pos << 40) | self.skip

    def dumps(self) -> str:
        return json.dumps(
            {"file": self.file, "pos": self.pos, "skip": self.skip, "gtid": self.gtid}
        )

    @classmethod
    def loads(cls, text: str) -> BinlogPosition:
        data = json.loads(text)
        return cls(str(data["file"]), int(data["pos"]), int(data.get("skip", 0)), data.get("gtid"))


def binlog_files(conn: Any) -> list[tuple[str, int]]:
    """Every binary log file still on the server, oldest first, with its size."""
    return [(str(row[0]), int(row[1])) for row in execute(conn, sql.BINARY_LOGS_SQL)]


def binlog_end(conn: Any) -> BinlogPosition:
    """The position at the log's end (the last file and its size)."""
    files = binlog_files(conn)
    if not files:
        raise SQLNotifyListenerError("the MySQL server lists no binary log (is log_bin on?)")
    name, size = files[-1]
    return BinlogPosition(name, size)


#: MySQL 8.0.20+'s TRANSACTION_PAYLOAD event: a whole transaction, compressed.
COMPRESSED = 0x28


def compressed_lost(log: Any, gtid: str | None, file: str, data: bytes) -> int:
    """Log the compressed transaction in the event ``data`` as lost (the source cannot read
    it); the position after it."""
    end = int.from_bytes(data[14:18], "little")
    log.error(
        "a compressed transaction (GTID %s) ending at %s:%d was not read: its row events of"
        " watched tables, if any, are lost (binlog_transaction_compression is ON in a"
        " writer's session; this source needs it OFF)",
        gtid,
        file,
        end,
    )
    return end


_SLAVE = ("ALL PRIVILEGES", "REPLICATION SLAVE", "REPLICATION REPLICA")
_CLIENT = ("ALL PRIVILEGES", "REPLICATION CLIENT", "BINLOG MONITOR", "SUPER")


def _granted(grants: Sequence[str], names: Sequence[str]) -> bool:
    for grant in grants:
        text = grant.upper()
        if " ON *.* " in text and any(n in text.split(" ON ")[0] for n in names):
            return True
    return False


def binlog_problems(conn: Any, watches: Sequence[Watch] = ()) -> list[str]:
    """What keeps the binlog source from reading ``watches`` on this server.

    Each problem names the setting, privilege or package, and what it needs.
    """
    log_bin, fmt, image, _version = execute(conn, sql.BINLOG_SETTINGS_SQL)[0]
    problems = []
    if importlib.util.find_spec("pymysqlreplication") is None:
        problems.append("the mysql-replication package is not installed (the mysql extra)")
    for watch in watches:
        if watch.condition is not None:
            problems.append(f"{watch.describe()} has a where= condition (triggers only)")
    if not int(log_bin or 0):
        problems.append("log_bin is OFF (start the server with --log-bin)")
    if str(fmt).upper() != "ROW":
        problems.append(f"binlog_format is {fmt}, not ROW (SET GLOBAL binlog_format = 'ROW')")
    if str(image).upper() != "FULL":
        problems.append(
            f"binlog_row_image is {image}, not FULL (SET GLOBAL binlog_row_image = 'FULL')"
        )
    try:
        meta = execute(conn, sql.BINLOG_METADATA_SQL)[0][0]
    except Exception:  # older servers lack the variable
        meta = None
    if meta is not None and str(meta).upper() != "FULL":
        problems.append(
            f"binlog_row_metadata is {meta}, not FULL (SET GLOBAL binlog_row_metadata = 'FULL':"
            " the row events then name their columns)"
        )
    try:
        compressed = execute(conn, sql.BINLOG_COMPRESSION_SQL)[0][0]
    except Exception:  # MariaDB and MySQL before 8.0.20 lack the variable
        compressed = None
    if compressed is not None and int(compressed):
        problems.append(
            "binlog_transaction_compression is ON, not OFF (SET GLOBAL"
            " binlog_transaction_compression = OFF: compressed transactions are not read)"
        )
    grants = [str(row[0]) for row in execute(conn, sql.GRANTS_SQL)]
    if not _granted(grants, _SLAVE):
        problems.append("the user lacks the REPLICATION SLAVE privilege (GRANT ... ON *.*)")
    if not _granted(grants, _CLIENT):
        problems.append(
            "the user lacks the REPLICATION CLIENT privilege (BINLOG MONITOR on MariaDB 10.5+)"
        )
    return problems


class BinlogConsumers:
    """Named consumers of the binary log: saved positions, one process per name."""

    def __init__(self, server: MySQLServer, db: str) -> None:
        self._server = server
        self._db = db
        self._lock_conn: Any = None

    def _run(self, sql_text: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._server.connection() as conn:
            return execute(conn, sql_text, params)

    def ensure(self) -> None:
        self._run(sql.binlog_consumers_table_sql(self._db))

    def stamp(self, position: BinlogPosition) -> int:
        return position.number

    def start_position(self) -> BinlogPosition:
        with self._server.connection() as conn:
            return binlog_end(conn)

    def load(self, consumer: str) -> tuple[BinlogPosition, dt.datetime] | None:
        rows = self._run(sql.load_binlog_consumer_sql(self._db), (consumer,))
        if not rows:
            return None
        text, updated = rows[0]
        return BinlogPosition.loads(text), dt.datetime.fromtimestamp(updated, dt.timezone.utc)

    def save(self, consumer: str, position: BinlogPosition) -> None:
        self._run(
            sql.save_binlog_consumer_sql(self._db),
            (consumer, position.number, position.dumps(), time.time()),
        )

    def behind(self, position: BinlogPosition) -> None:
        """The source reports purged logs itself (``replays_log``)."""
        return None

    def read(self, after: Any, channels: Sequence[str], limit: int) -> list[Any]:
        """Unused: the binlog source reads the log itself."""
        return []

    def prune(self, retention: float, consumer_expiry: float) -> int:
        """The server purges its binary logs (``binlog_expire_logs_seconds``)."""
        return 0

    def acquire(self, consumer: str) -> None:
        """Hold ``consumer`` for this process (a named lock on a connection kept open)."""
        key = f"{self._db}{chr(31)}{consumer}"
        self._lock_conn = hold_consumer(self._server, key, consumer, prefix="b:")

    def close(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        release_consumer(conn)
