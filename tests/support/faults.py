"""Fault injection for tests: a loopback TCP proxy the test controls.

:class:`Proxy` forwards connections to a server and can ``drop()`` them all
(reset), go ``silent()`` (stop forwarding without closing, like a dead
network path), or strip PostgreSQL NotificationResponse messages from the
server's stream (``swallow_notifications``: a connection that cannot LISTEN,
as behind a transaction-mode pooler).

A private server to restart or kill is :class:`support.pgserver.ThrowawayPostgres`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sqlnotify import signals


class _Pipe:
    """One proxied connection: two sockets and a thread pumping between them."""

    def __init__(self, proxy: Proxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.closed = False
        self._buf = b""  # server bytes held back while parsing messages
        self._started = False  # past the startup exchange (typed messages only)
        self.thread = threading.Thread(target=self._run, name="test-proxy-pipe", daemon=True)
        self.thread.start()

    def _filter(self, data: bytes) -> bytes:
        # Server -> client messages are (type byte, int32 length incl. itself, body).
        self._buf += data
        out = bytearray()
        while len(self._buf) >= 5:
            kind = self._buf[:1]
            (length,) = struct.unpack("!i", self._buf[1:5])
            if len(self._buf) < 1 + length:
                break
            msg, self._buf = self._buf[: 1 + length], self._buf[1 + length :]
            if kind != b"A":
                out += msg
        return bytes(out)

    def _run(self) -> None:
        socks = [self.client, self.server]
        try:
            while not self.closed:
                ready, _, _ = select.select(socks, [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if self.proxy.silent_mode:
                        continue  # swallowed: the path is dead but nobody is told
                    if s is self.server:
                        if self.proxy.swallow_notifications:
                            data = self._filter(data)
                        if data:
                            self.client.sendall(data)
                    else:
                        self.server.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self, reset: bool = False) -> None:
        if self.closed and not reset:
            return
        self.closed = True
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()


class Proxy:
    """A threaded loopback TCP proxy to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.silent_mode = False
        self.swallow_notifications = False
        self.refuse = False
        self.pipes: list[_Pipe] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.refuse:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            self.accepted += 1
            self.pipes.append(_Pipe(self, client, server))

    def drop(self) -> None:
        """Reset every open connection (both sides see the connection fail)."""
        for pipe in list(self.pipes):
            pipe.close(reset=True)
        self.pipes.clear()

    def silent(self, on: bool = True) -> None:
        """Stop (or resume) forwarding bytes, keeping the connections open."""
        self.silent_mode = on

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        self.drop()


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[Proxy]:
    proxy = Proxy(port)
    try:
        yield proxy
    finally:
        proxy.close()


# -- shared test helpers -------------------------------------------------------
def insert(engine: sa.Engine, table: sa.Table, ids: range | list[int], note: str = "x") -> None:
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "note": note} for i in ids])


class GapRecorder:
    def __init__(self) -> None:
        self.gaps: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, sender: Any, **kw: Any) -> None:
        with self._lock:
            self.gaps.append(kw)

    def __len__(self) -> int:
        with self._lock:
            return len(self.gaps)


@pytest.fixture(name="gaps")
def gaps_fixture() -> Any:
    rec = GapRecorder()
    signals.gap.connect(rec)
    yield rec
    signals.gap.disconnect(rec)
