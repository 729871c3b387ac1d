"""The binlog source's packet reader, over a real socket pair: framing, continuation,
sequence numbers, the driver's buffered bytes, bounded waits, the server's errors."""

from __future__ import annotations

import socket
import struct
import threading
import types
from collections.abc import Iterator

import pytest
from support.env import need_module

from sqlnotify.dialects.mysql.binlog_packets import Packets, StreamEnded


def frame(payload: bytes, seq: int) -> bytes:
    """``payload`` as the protocol sends it: split at 16 MiB - 1, one sequence number each."""
    out = b""
    while True:
        part, payload = payload[:0xFFFFFF], payload[0xFFFFFF:]
        out += len(part).to_bytes(3, "little") + bytes([seq & 0xFF]) + part
        seq += 1
        if len(part) < 0xFFFFFF:
            return out


_files: list[object] = []


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        while _files:
            _files.pop().close()  # type: ignore[attr-defined]
        a.close()
        b.close()


def conn_of(sock: socket.socket, seq: int = 0) -> types.SimpleNamespace:
    """The driver connection's attributes the reader takes over."""
    rfile = sock.makefile("rb")
    _files.append(rfile)
    return types.SimpleNamespace(_sock=sock, _rfile=rfile, _next_seq_id=seq, encoding="utf8")


def read_all(packets: Packets) -> list[bytes]:
    out = []
    while (data := packets.next()) is not None:
        out.append(data)
    return out


def test_packets_arriving_in_pieces_come_out_whole_and_in_order(pair) -> None:
    a, b = pair
    packets = Packets(conn_of(a, seq=5), timeout=2)
    wire = frame(b"\x00first", 5) + frame(b"\x00second event", 6) + frame(b"\x00", 7)
    b.sendall(wire[:3])
    packets.wait()
    assert read_all(packets) == []  # not even a header yet
    b.sendall(wire[3:12])
    packets.wait()
    assert read_all(packets) == [b"\x00first"]
    b.sendall(wire[12:])
    packets.wait()
    assert read_all(packets) == [b"\x00second event", b"\x00"]
    assert not packets.pending
    assert packets.receive() is False  # nothing waits: no blocking


def test_a_payload_of_16_mib_or_more_is_joined_from_its_packets(pair) -> None:
    a, b = pair
    packets = Packets(conn_of(a), timeout=5)
    big = b"\x00" + bytes(range(256)) * (0x10000 + 3)  # just over 16 MiB
    exact = b"\x00" * 0xFFFFFF  # exactly one full packet, then an empty one
    wire = frame(big, 0) + frame(exact, 2) + frame(b"\x00tail", 4)
    sender = threading.Thread(target=b.sendall, args=(wire,), name="test-sender")
    sender.start()
    got: list[bytes] = []
    while len(got) < 3:
        packets.wait()
        got += read_all(packets)
    sender.join(5)
    assert [len(g) for g in got] == [len(big), len(exact), 5]
    assert got[0] == big and got[1] == exact and got[2] == b"\x00tail"


def test_bytes_the_driver_buffered_already_come_first(pair) -> None:
    a, b = pair
    conn = conn_of(a)
    b.sendall(frame(b"\x00one", 0) + frame(b"\x00two", 1))
    assert conn._rfile.peek(1)  # the driver's buffer holds both packets now
    packets = Packets(conn, timeout=2)
    assert read_all(packets) == [b"\x00one", b"\x00two"]
    b.sendall(frame(b"\x00three", 2))
    packets.wait()
    assert read_all(packets) == [b"\x00three"]


def test_a_packet_out_of_sequence_says_the_stream_lost_its_place(pair) -> None:
    a, b = pair
    packets = Packets(conn_of(a, seq=3), timeout=2)
    b.sendall(frame(b"\x00x", 9))
    packets.wait()
    with pytest.raises(StreamEnded, match="packet 9 where 3 was next"):
        packets.next()


def test_a_closed_stream_and_a_silent_one_end_the_wait(pair) -> None:
    a, b = pair
    packets = Packets(conn_of(a), timeout=0.05)
    with pytest.raises(TimeoutError, match=r"sent nothing for 0\.05 s"):
        packets.read_packet()
    b.close()
    with pytest.raises(StreamEnded, match="closed"):
        packets.wait()


def test_the_servers_error_packet_raises_its_error(pair) -> None:
    pymysql = need_module("pymysql")  # the driver's error classes
    a, b = pair
    packets = Packets(conn_of(a), timeout=2)
    message = b"Could not find first log file name in binary log index file"
    b.sendall(frame(b"\xff" + struct.pack("<H", 1236) + b"#HY000" + message, 0))
    with pytest.raises(pymysql.err.OperationalError) as raised:
        packets.read_packet()
    assert raised.value.args[0] == 1236
    assert "first log file" in raised.value.args[1]
