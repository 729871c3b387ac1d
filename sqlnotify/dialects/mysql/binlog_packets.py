"""The replication stream's packets, read straight from its socket (the binlog source's intake).

Used by the listener thread only.  Once the ``mysql-replication`` reader has
connected and asked the server for its binary log, :class:`Packets` takes the
connection's socket over: the socket stays non-blocking, one ``recv()``
takes every byte that is there (over TLS, which PyMySQL uses wherever the
server offers it, with the bytes already decrypted) (a committed transaction's events usually
arrive together), and the bytes are cut into the protocol's packets: a
3-byte length, a sequence number, the payload; a payload of 16 MiB or more
goes on in the packets that follow.  The driver's per-packet objects, its
timeout switching and its one-header-then-one-body reads are not paid for
each event.

The source takes most events from their bytes.  The reader still decodes
the others; it reads them through :meth:`Packets.read_packet`, which the
source installs as the connection's ``_read_packet`` for that one call, so
the reader never touches the socket while the source owns it.  Every wait
is bounded: a packet cut short waits :attr:`Packets.timeout` seconds at most
for its rest.
"""

from __future__ import annotations

import select
import ssl
import time
from typing import Any

__all__ = ["Packets", "StreamEnded"]

_MAX = 0xFFFFFF  # a payload of this length goes on in the next packet
#: A non-blocking read found nothing (over TLS: no whole record yet).
_NOTHING = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)


class StreamEnded(EOFError):
    """The server closed the replication stream, or sent what a stream never holds."""


class Packets:
    """The packets of one replication connection, taken from its socket."""

    #: Bytes asked of the socket per ``recv()``.
    CHUNK = 1 << 18

    def __init__(self, conn: Any, timeout: float) -> None:
        self._conn = conn
        self._sock = conn._sock
        #: Seconds a packet cut short (or the reader) waits for its rest.
        self.timeout = timeout
        self._seq: int = conn._next_seq_id
        self._buf: bytes | bytearray = b""
        self._at = 0
        sock = self._sock
        #: Over TLS: how many bytes are decrypted and not yet read.
        self._pending: Any = getattr(sock, "pending", None)
        sock.setblocking(False)
        conn._current_timeout = None  # the driver sets its timeout again if it reads
        # The bytes the driver has buffered already come first.
        rfile = conn._rfile
        try:
            held = rfile.peek(1)
        except _NOTHING:
            held = b""
        if held:
            self._buf = rfile.read(len(held))
        more = self._decrypted()
        if more:
            self._buf += more

    def fileno(self) -> int:
        """The socket's descriptor (for ``select()``)."""
        return int(self._sock.fileno())

    @property
    def pending(self) -> bool:
        """Whether bytes received wait to be cut into packets."""
        return self._at < len(self._buf)

    def receive(self) -> bool:
        """Take the bytes the socket holds, without waiting; ``False``: there were none."""
        try:
            chunk = self._sock.recv(self.CHUNK)
        except _NOTHING:
            return False
        if not chunk:
            raise StreamEnded("the server closed the MySQL binlog stream")
        if self._pending is not None:
            chunk += self._decrypted()
        buf = self._buf
        if self._at >= len(buf):
            self._buf = chunk  # the common case: the last bytes were all taken
        elif self._at == 0 and isinstance(buf, bytearray):
            buf += chunk  # a long packet grows in place
        else:
            rest = bytearray(buf[self._at :])
            rest += chunk
            self._buf = rest
        self._at = 0
        return True

    def _decrypted(self) -> bytes:
        """Over TLS: the bytes already decrypted (``select()`` does not see them)."""
        pending = self._pending
        if pending is None:
            return b""
        out = b""
        try:
            while (size := pending()) > 0:
                out += self._sock.recv(size)
        except _NOTHING:
            pass
        return out

    def wait(self) -> None:
        """Receive more bytes, waiting :attr:`timeout` seconds at most (over TLS, bytes of
        a record not yet whole are not enough: the wait goes on for the rest)."""
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._sock], [], [], left)
            if ready and self.receive():
                return
        raise TimeoutError(f"the MySQL binlog stream sent nothing for {self.timeout:g} s")

    def next(self) -> bytes | None:
        """The next whole packet's payload; ``None``: its bytes have not all arrived.

        A payload of 16 MiB or more is joined from its packets once all are there;
        nothing is copied or consumed before.
        """
        buf = self._buf
        at = self._at
        parts: list[tuple[int, int, int]] | None = None
        while True:
            if len(buf) - at < 4:
                return None
            size = buf[at] | buf[at + 1] << 8 | buf[at + 2] << 16
            end = at + 4 + size
            if end > len(buf):
                return None
            if size < _MAX and parts is None:  # one packet: the common case
                self._check(buf[at + 3])
                self._at = end
                return bytes(buf[at + 4 : end])
            if parts is None:
                parts = []
            parts.append((buf[at + 3], at + 4, end))
            at = end
            if size < _MAX:
                break
        for seq, _, _ in parts:
            self._check(seq)
        self._at = at
        return b"".join(buf[start:stop] for _, start, stop in parts)

    def _check(self, seq: int) -> None:
        if seq != self._seq:
            raise StreamEnded(
                f"the MySQL binlog stream lost its place: packet {seq} where {self._seq}"
                " was next (the connection was lost or cut)"
            )
        self._seq = (seq + 1) & 0xFF

    def read_packet(self, packet_type: Any = None) -> Any:
        """The next packet as the driver's ``_read_packet`` returns it (for the reader):
        waits :attr:`timeout` seconds at most, raises the server's error packets."""
        data = self.next()
        while data is None:
            self.wait()
            data = self.next()
        return self.packet(data, packet_type)

    def packet(self, data: bytes, packet_type: Any = None) -> Any:
        """``data`` as the driver's packet object; an error packet raises its error."""
        if packet_type is None:
            from pymysql.protocol import MysqlPacket  # the reader's driver

            packet_type = MysqlPacket
        packet = packet_type(data, self._conn.encoding)
        if packet.is_error_packet():
            packet.raise_for_error()
        return packet

    def release(self, timeout: float) -> None:
        """Give the socket back to the driver, blocking with ``timeout`` (before closing)."""
        try:
            self._sock.settimeout(timeout)
        except OSError:  # closed already
            return
