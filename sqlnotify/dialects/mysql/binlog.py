"""The binlog source: row events read from the binary log, as a replica reads them.

Used by the listener thread only.  A ``BinLogStreamReader`` (the
``mysql-replication`` package) streams the server's binary log from a
:class:`~.binlog_position.BinlogPosition`; writers pay nothing, and an
UPDATE's before and after images give ``changed_columns`` and ``old``.
Each row event of a watched table becomes the payload its trigger would
have written (same keys, see :mod:`sqlnotify._payload`; values encoded as
the trigger encodes them: decimals as text, binary as hex, JSON embedded),
so delivery and typed values do not depend on the source.  Rows inserted
into the change log (``Notifier.notify()``) are delivered as they are.

Waiting is bounded: the source sleeps in ``select()`` on the stream's
socket and the listener's wake-up descriptor, and reads an event only when
bytes are there (the server's heartbeat, every :attr:`BinlogSource.HEARTBEAT`
seconds, bounds a read that a skipped packet leaves waiting).
TRUNCATE and DDL of watched tables arrive as query events: they are logged.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import select
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..._journal import JournalReader, with_position
from ..._payload import CUSTOM, POS, Decoded, Notification
from ..._watch import Watch
from ..base import RawNotification, Source, SourceDisconnected
from . import sql
from .binlog_packets import Packets, StreamEnded
from .binlog_payload import RowShape
from .binlog_position import COMPRESSED, BinlogPosition, binlog_end, binlog_files, compressed_lost
from .binlog_rows import OPS, RowDecoder, plan_of
from .connection import CONNECT_TIMEOUT, IO_TIMEOUT, MySQLServer
from .source import LogCursor

__all__ = ["BinlogSource"]

_CUSTOM = f'"{CUSTOM}":true'
# Event types read from the packet's header without the reader's decoding
# (the binary log format's numbers, the same on MySQL 5.1+ and MariaDB).
_QUERY = 0x02
_XID = 0x10
_TABLE_MAP = 0x13
_MYSQL_GTID = 0x21
_HEARTBEAT = 0x1B
_MARIADB_GTID = 0xA2
_ROWS = frozenset({0x17, 0x18, 0x19, 0x1E, 0x1F, 0x20})
#: Events this source never needs: INTVAR, RAND, USER_VAR, ROWS_QUERY, ANONYMOUS_GTID,
#: PREVIOUS_GTIDS, MariaDB's ANNOTATE_ROWS, BINLOG_CHECKPOINT and GTID_LIST.
_UNUSED = frozenset({0x05, 0x0D, 0x0E, 0x1D, 0x22, 0x23, 0xA0, 0xA1, 0xA3})
_HEADER = 20  # the OK byte and the 19-byte event header
_QUERY_TABLE = re.compile(
    r"^\s*(TRUNCATE|ALTER|DROP|RENAME)\s+(?:TABLE\s+)?(?:IF\s+EXISTS\s+)?"
    r"(?:`?(\w+)`?\.)?`?(\w+)`?",
    re.IGNORECASE,
)


def _connect(driver: Any, **kwargs: Any) -> Any:
    """A PyMySQL connection from the reader's keywords (in PyMySQL's current spelling)."""
    for old, new in (("db", "database"), ("passwd", "password")):
        if old in kwargs:
            kwargs[new] = kwargs.pop(old)
    return driver.connect(**kwargs)


def _replication() -> Any:
    import pymysqlreplication  # the mysql extra; checked when the source is chosen

    return pymysqlreplication


class _Replay:
    """A connection's ``_read_packet`` that returns one packet already read, then reads on
    from the source's :class:`~.binlog_packets.Packets`."""

    def __init__(self, packet: Any, then: Callable[..., Any]) -> None:
        self._packet: Any = packet
        self._then = then

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        packet, self._packet = self._packet, None
        if packet is not None:
            return packet
        return self._then(*args, **kwargs)


def _make(channel: str, payload: Any, label: int) -> RawNotification:
    """One row read: a row event's payload (a dict) as :class:`Decoded`, a text as it is."""
    if type(payload) is dict:
        payload[POS] = label
        return Decoded(channel, payload)
    return Notification(channel, with_position(payload, label))


class BinlogSource(Source):
    """The listener's replication stream."""

    reader: JournalReader

    #: Seconds between the server's heartbeats while the log is idle.
    HEARTBEAT = 1.0
    #: Rows handed to the dispatcher per wait at most.
    MAX_ROWS = 10_000

    def __init__(
        self,
        server: MySQLServer,
        db: str,
        watches: Mapping[str, Watch],
        channels: Sequence[str],
        cursor: LogCursor,
        *,
        log: logging.Logger,
        on_gap: Callable[[int, int], None] | None = None,
    ) -> None:
        repl = _replication()
        self._log = log
        self._db = db
        self._error = (server.Error, OSError, EOFError, struct.error)
        wanted = set(channels)
        self._by_table: dict[tuple[str, str, str], list[RowShape]] = {}
        for channel in sorted(wanted):
            watch = watches.get(channel)
            if watch is None:
                continue
            key = (watch.effective_schema or db, watch.table, watch.operation.value)
            self._by_table.setdefault(key, []).append(RowShape(watch))
        self._tables = {(s, t) for s, t, _ in self._by_table}
        self._channels = wanted
        self._gap_at: BinlogPosition | None = None
        try:
            with server.connection() as conn:
                reader = cursor.reader
                if reader is None:
                    reader = JournalReader(
                        binlog_end(conn),
                        channels,
                        on_gap=on_gap,
                        log=log,
                    )
                start: BinlogPosition = reader.position
                files = [name for name, _ in binlog_files(conn)]
        except self._error as exc:
            raise SourceDisconnected(f"cannot read the MySQL binary log: {exc}") from exc
        if files and start.file not in files:
            # Purged before this reader read it: reported at the first read, once
            # the intake listens for gaps; reading goes on from the oldest file.
            self._gap_at = start
            start = BinlogPosition(files[0], 4)
            reader.position = start
        # The source moves the reader's position itself (see :meth:`_wait`).
        self.reader = reader
        cursor.reader = reader
        self._boundary = start
        self._skip = start.skip
        self._count = 0
        self._gtid: str | None = start.gtid
        #: Between a transaction's GTID event and its commit.
        self._open = False
        kw = server.connect_kwargs()
        settings = {
            "host": kw["host"],
            "port": kw["port"],
            "user": kw["user"],
            "password": kw["password"],
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": IO_TIMEOUT,
            "write_timeout": IO_TIMEOUT,
        }
        if "unix_socket" in kw:
            settings["unix_socket"] = kw["unix_socket"]
        ev = repl.event
        rows = repl.row_event
        self._handlers: dict[type, Callable[[Any, list[tuple[Any, str, Any]]], None]] = {
            ev.RotateEvent: self._rotate,
            # The reader returns after each heartbeat: a read that skipped
            # packets of other tables waits for the next one at most.
            ev.HeartbeatLogEvent: self._nothing,
            ev.XidEvent: self._xid,
            ev.QueryEvent: self._query_event,
            ev.GtidEvent: self._gtid_event,
            ev.MariadbGtidEvent: self._gtid_event,
            rows.WriteRowsEvent: functools.partial(self._rows, op="insert"),
            rows.UpdateRowsEvent: functools.partial(self._rows, op="update"),
            rows.DeleteRowsEvent: functools.partial(self._rows, op="delete"),
        }
        # Only the tables read are mapped: a row event of another table is
        # dropped by the reader after its table id, before any column is decoded
        # (schemas and names filter apart, so the product may hold pairs this
        # source does not read; :meth:`_rows` looks the exact pair up).
        read = self._read = {*self._tables, (db, sql.LOG_TABLE)}
        #: Table ids of tables this source does not read (their events are skipped).
        self._unread_ids: set[int] = set()
        #: Per table id: the mapped table and how its rows are decoded here (``None``: not).
        self._plans: dict[int, tuple[Any, Any]] = {}
        #: Row events of the tables read, decoded from their bytes here or by the reader.
        self.decoded = {"from_bytes": 0, "by_reader": 0}
        self._encoding: Callable[[str], str] = repl.row_event.RowsEvent.charset_to_encoding
        self._stream = repl.BinLogStreamReader(
            connection_settings=settings,
            server_id=1_000_000 + (os.getpid() * 7919 + id(self)) % 2_000_000_000,
            blocking=True,
            resume_stream=True,
            log_file=start.file,
            log_pos=start.pos,
            slave_heartbeat=self.HEARTBEAT,
            is_mariadb=False,  # file/offset dumps (the MariaDB path starts at GTIDs)
            only_events=list(self._handlers),
            only_schemas=sorted({s for s, _ in read}),
            only_tables=sorted({t for _, t in read}),
            enable_logging=False,
            freeze_schema=True,
            pymysql_wrapper=functools.partial(_connect, server.driver),
        )
        try:
            # Connects, and proves it: the server first sends a rotate event.
            self._handle(self._stream.fetchone(), [])
            # From here on the source reads the socket (see :mod:`.binlog_packets`).
            self._packets = Packets(self._stream._stream_connection, IO_TIMEOUT)
            #: Events end with a CRC32 (the reader asked the server at connect).
            self._checksum = bool(getattr(self._stream, "_BinLogStreamReader__use_checksum", True))
            self._decoder = RowDecoder(self._checksum)
        except self._error as exc:
            self.close()
            raise SourceDisconnected(f"cannot stream the MySQL binary log: {exc}") from exc
        self.last_alive = time.time()

    # -- reading --------------------------------------------------------------------
    def wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        if self._gap_at is not None and self.reader.on_gap is not None:
            lost, self._gap_at = self._gap_at, None
            self._log.warning(
                "the MySQL binary log %s was purged before this reader read it; its events"
                " are lost",
                lost.file,
            )
            self.reader.on_gap(lost.number, lost.number - 1)  # how many: unknown
        try:
            return self._wait(timeout, wake_fd)
        except self._error as exc:
            raise SourceDisconnected(f"MySQL binlog stream error: {exc}") from exc

    def _wait(self, timeout: float, wake_fd: int) -> Sequence[RawNotification]:
        rows: list[tuple[Any, str, Any]] = []
        packets = self._packets
        deadline = time.monotonic() + timeout
        read = False
        handled = 0
        while len(rows) < self.MAX_ROWS:
            data = packets.next()
            if data is None:
                if self._open:
                    # Inside a transaction its next event is on its way (the server
                    # sends a committed transaction's events together).
                    packets.wait()
                    read = True
                    continue
                if rows:
                    break  # handed on now; the next wait reads on
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock = packets.fileno()
                ready, _, _ = select.select([sock, wake_fd], [], [], left)
                if sock not in ready or not packets.receive():
                    break
                read = True
                continue
            self._next(data, rows)
            handled += 1
            if not handled & 0xFF and time.monotonic() >= deadline:
                break  # a long backlog: the listener checks its stop event between waits
        if read:
            self.last_alive = time.time()
        if not rows:
            return []
        # What the journal reader's read() would make of these rows, in one pass.
        self.reader.position = rows[-1][0]
        return [_make(c, p, n.number) for n, c, p in rows if p is not None]

    def _next(self, data: bytes, rows: list[tuple[Any, str, Any]]) -> None:
        """Handle one packet: most are taken from their header alone (commits, GTIDs,
        heartbeats, tables already mapped, tables not read); the rest go to the reader."""
        if data and data[0] == 0:
            if len(data) > _HEADER + 8 and self._skim(data, rows):
                return
        elif data and data[0] == 0xFE and len(data) < 9:
            raise StreamEnded("the MySQL binlog stream ended (the server sent its end)")
        packets = self._packets
        packet = packets.packet(data)  # an error packet raises the server's error
        stream = self._stream
        conn = stream._stream_connection
        conn._read_packet = _Replay(packet, packets.read_packet)  # the reader reads it
        try:
            event = stream.fetchone()
        finally:
            conn.__dict__.pop("_read_packet", None)
        if event is None:
            raise StreamEnded("the MySQL binlog stream ended")
        self._handle(event, rows)

    def _skim(self, data: bytes, rows: list[tuple[Any, str, Any]]) -> bool:
        """Handle the event in ``data`` from its bytes if it needs no decoding.

        The stream's position moves at commits only (where positions are taken).
        """
        kind = data[5]
        stream = self._stream
        if kind == _XID:
            stream.log_pos = int.from_bytes(data[14:18], "little") or stream.log_pos
            self._commit(rows)
            return True
        if kind == _HEARTBEAT or kind in _UNUSED:
            return True
        if kind == _MARIADB_GTID:
            seq, domain = struct.unpack_from("<QI", data, _HEADER)
            server = int.from_bytes(data[6:10], "little")
            self._gtid = f"{domain}-{server}-{seq}"
            self._open = not data[_HEADER + 12] & 0x01  # FL_STANDALONE: no commit event follows
            return True
        if kind == _MYSQL_GTID:
            sid = data[_HEADER + 1 : _HEADER + 17].hex()
            gno = int.from_bytes(data[_HEADER + 17 : _HEADER + 25], "little")
            self._gtid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}:{gno}"
            self._open = True
            return True
        if kind == _QUERY:
            return self._begins(data)
        if kind == COMPRESSED:
            stream.log_pos = compressed_lost(self._log, self._gtid, stream.log_file, data)
            self._commit(rows)
            return True
        if kind != _TABLE_MAP and kind not in _ROWS:
            return False
        table_id = int.from_bytes(data[_HEADER : _HEADER + 6], "little")
        if kind == _TABLE_MAP and table_id not in stream.table_map:
            if table_id not in self._unread_ids:
                at = _HEADER + 8
                end = at + 1 + data[at]
                schema = data[at + 1 : end].decode("utf-8", "replace")
                name = data[end + 2 : end + 2 + data[end + 1]].decode("utf-8", "replace")
                if (schema, name) in self._read:
                    return False  # a table read: the reader maps it
                self._unread_ids.add(table_id)
        elif kind != _TABLE_MAP:
            table = stream.table_map.get(table_id)
            if table is not None:
                # A row event of a table read: decoded here when its columns are
                # simple, else by the reader.
                decoded = self._decode(data, table_id, table)
                if decoded is None:
                    return False
                self.decoded["from_bytes"] += 1
                op = OPS[kind]
                ts = float(int.from_bytes(data[1:5], "little"))
                self._rows_of(str(table.schema), str(table.table), op, ts, decoded, rows, True)
        return True

    def _begins(self, data: bytes) -> bool:
        """Whether the query event in ``data`` is a transaction's ``BEGIN`` (nothing to do)."""
        at = _HEADER + 13 + int.from_bytes(data[_HEADER + 11 : _HEADER + 13], "little")
        at += data[_HEADER + 8] + 1  # the schema's name and its NUL
        end = len(data) - (4 if self._checksum else 0)
        return end - at == 5 and data[at:end] == b"BEGIN"

    def _decode(self, data: bytes, table_id: int, table: Any) -> list[dict[str, Any]] | None:
        plans = self._plans
        cached = plans.get(table_id)
        if cached is None or cached[0] is not table:
            cached = plans[table_id] = (table, plan_of(table, self._encoding))
        plan = cached[1]
        return None if plan is None else self._decoder.rows(data, plan)

    def _rotate(self, event: Any, rows: list[tuple[Any, str, Any]]) -> None:
        self._open = False
        self._unread_ids.clear()  # a new log may come from a restarted server

    def _handle(self, event: Any, rows: list[tuple[Any, str, Any]]) -> None:
        if event is not None:
            handler = self._handlers.get(type(event))
            if handler is not None:
                handler(event, rows)

    def _nothing(self, event: Any, rows: list[tuple[Any, str, Any]]) -> None:
        return None

    def _gtid_event(self, event: Any, rows: list[tuple[Any, str, Any]]) -> None:
        self._gtid = str(event.gtid)
        self._open = True

    def _xid(self, event: Any, rows: list[tuple[Any, str, Any]]) -> None:
        self._commit(rows)

    def _query_event(self, event: Any, rows: list[tuple[Any, str, Any]]) -> None:
        query = event.query if isinstance(event.query, str) else str(event.query)
        if query.strip().upper() != "BEGIN":
            self._query(event, query)
            self._commit(rows)

    def _commit(self, rows: list[tuple[Any, str, Any]]) -> None:
        stream = self._stream
        self._boundary = BinlogPosition(stream.log_file, stream.log_pos, 0, self._gtid)
        if self._count == 0:
            # Nothing delivered: the position moves past the transaction.  After
            # events it stays at the last one's (resuming there skips them).
            # Transactions of no event in a row need only the last boundary.
            if rows and rows[-1][2] is None:
                rows[-1] = (self._boundary, "", None)
            else:
                rows.append((self._boundary, "", None))
        self._count = 0
        self._skip = 0
        self._open = False

    def _query(self, event: Any, query: str) -> None:
        match = _QUERY_TABLE.match(query)
        if match is None:
            return
        schema = match.group(2) or (
            event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
        )
        table = (schema, match.group(3))
        if table in self._read:
            # The reader maps each table id once (``freeze_schema``); a changed
            # table gets a new id, and its old mapping goes.
            mapped = self._stream.table_map
            for table_id in [i for i, t in mapped.items() if (t.schema, t.table) == table]:
                del mapped[table_id]
        if table in self._tables:
            self._log.warning(
                "%s of watched table %s.%s (binlog query event): no row events are sent for it",
                match.group(1).upper(),
                schema,
                match.group(3),
            )

    def _rows(self, event: Any, rows: list[tuple[Any, str, Any]], *, op: str) -> None:
        self.decoded["by_reader"] += 1
        schema, table = str(event.schema), str(event.table)
        self._rows_of(schema, table, op, float(event.timestamp), event.rows, rows)

    def _rows_of(
        self,
        schema: str,
        table: str,
        op: str,
        ts: float,
        decoded: Sequence[Mapping[str, Any]],
        rows: list[tuple[Any, str, Any]],
        exact: bool = False,
    ) -> None:
        if schema == self._db and table == sql.LOG_TABLE and op == "insert":
            for row in decoded:
                values = row["values"]
                payload = values.get("payload")
                text = payload.decode() if isinstance(payload, bytes) else str(payload)
                if _CUSTOM in text:  # notify(); a trigger's row is read as its row event
                    self._emit(rows, str(values.get("channel")), text)
            return
        watches = self._by_table.get((schema, table, op))
        if not watches:
            return
        update = op == "update"
        for row in decoded:
            for shape in watches:
                if update:
                    payload = shape.body(ts, row["after_values"], row["before_values"], exact=exact)
                else:
                    payload = shape.body(ts, row["values"], exact=exact)
                if payload is not None:
                    self._emit(rows, shape.channel, payload)

    def _emit(self, rows: list[tuple[Any, str, Any]], channel: str, payload: Any) -> None:
        if channel not in self._channels:
            return
        self._count += 1
        if self._count <= self._skip:
            return  # read before the reader stopped in this transaction
        b = self._boundary
        text = payload.decode() if isinstance(payload, bytes) else payload
        rows.append((BinlogPosition(b.file, b.pos, self._count, self._gtid), channel, text))

    def close(self) -> None:
        packets = getattr(self, "_packets", None)
        if packets is not None:
            packets.release(IO_TIMEOUT)
        try:
            self._stream.close()
        except Exception:  # noqa: S110 - closing a broken connection
            pass
