"""The listener on PostgreSQL: lifecycle, reconnection, liveness, drivers and URLs."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from support.pg import TIMEOUT, execute, make_notifier, scalar
from support.watching import Watch

from sqlnotify import Notifier, SQLNotifyException, SQLNotifyListenerError, signals
from sqlnotify._pipeline.listener import Listener
from sqlnotify.dialects.postgresql import PostgresSource, listener_dsn
from sqlnotify.testing import (
    kill_listener_connection,
    listener_backend_pid,
    wait_until,
)


def insert(engine: sa.Engine, schema: str, *ids: int) -> None:
    for i in ids:
        execute(engine, f'INSERT INTO "{schema}".items VALUES (:i)', {"i": i})


def sqlnotify_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("sqlnotify")}


class SignalLog:
    """Records the notifier-wide connection signals of one notifier."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def _connected(self, sender: Any, **kw: Any) -> None:
        with self._lock:
            self.items.append(("connected", kw))

    def _disconnected(self, sender: Any, **kw: Any) -> None:
        with self._lock:
            self.items.append(("disconnected", kw))

    def __enter__(self) -> SignalLog:
        signals.listener_connected.connect(self._connected, sender=self.notifier)
        signals.listener_disconnected.connect(self._disconnected, sender=self.notifier)
        return self

    def __exit__(self, *exc: object) -> None:
        signals.listener_connected.disconnect(self._connected, sender=self.notifier)
        signals.listener_disconnected.disconnect(self._disconnected, sender=self.notifier)

    def kinds(self) -> list[str]:
        with self._lock:
            return [k for k, _ in self.items]


# -- lifecycle ---------------------------------------------------------------------------


def test_start_stop_are_idempotent_and_leave_nothing_behind(
    Item: Any, pg_url: str, schema: str, watched: Watch
) -> None:
    app = f"sqlnotify-test-{uuid.uuid4().hex[:8]}"
    url = sa.make_url(pg_url).update_query_dict({"application_name": app})
    engine = sa.create_engine(url)
    before = sqlnotify_threads()
    n, rec = watched(engine, Item, start=False)
    assert not n.is_running
    assert n.dialect_name == "postgresql"
    n.start()
    n.start()  # a second start does nothing
    assert n.is_running
    # listener, dispatcher, and maintenance (the trigger registry's upkeep)
    assert len(sqlnotify_threads() - before) == 3
    pid = listener_backend_pid(n)
    assert pid is not None
    assert (
        scalar(engine, "SELECT application_name FROM pg_stat_activity WHERE pid = :p", {"p": pid})
        == app
    )
    insert(engine, schema, 1)
    rec.wait_for(1, TIMEOUT)
    n.stop()
    n.stop()  # and a second stop too
    assert not n.is_running
    assert sqlnotify_threads() - before == set()
    engine.dispose()
    wait_until(
        lambda: (
            scalar(
                engine,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a",
                {"a": app},
            )
            == 1
        ),  # the query's own session
        TIMEOUT,
        "the listener's server session to end",
    )
    engine.dispose()


def test_with_block(Item: Any, pg_engine: sa.Engine, schema: str, watched: Watch) -> None:
    n, rec = watched(pg_engine, Item, start=False)
    before = sqlnotify_threads()
    with n as running:
        assert running is n and n.is_running
        insert(pg_engine, schema, 1)
        rec.wait_for(1, TIMEOUT)
    assert not n.is_running
    assert sqlnotify_threads() - before == set()
    with n:  # restartable
        insert(pg_engine, schema, 2)
        assert rec.wait_for(2, TIMEOUT)[1].id == 2
    assert "stopped" in repr(n)


def test_events_already_received_are_dispatched_by_stop(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(Item, "insert")
    gate = threading.Event()
    got: list[int] = []

    @n.subscribe(Item, "insert")
    def slow(event: Any) -> None:
        gate.wait(TIMEOUT)
        got.append(event.id)

    n.start()
    execute(pg_engine, f'INSERT INTO "{schema}".items SELECT generate_series(1, 5)')
    wait_until(lambda: n.stats.received >= 1, TIMEOUT, "the first event")
    wait_until(lambda: n._dispatcher is not None and n._dispatcher.queue.empty(), TIMEOUT, "queue")
    gate.set()
    n.stop()
    assert got == [1, 2, 3, 4, 5]


def test_start_fails_cleanly_when_the_server_is_unreachable(Item: Any, notifiers: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/test")
    before = sqlnotify_threads()
    n = make_notifier(notifiers, engine)
    n.watch(Item, "insert")
    # A listener error naming the address, not a failed installation.
    with pytest.raises(
        SQLNotifyListenerError, match=f"cannot connect to PostgreSQL at 127.0.0.1:{port}"
    ):
        n.start()
    assert not n.is_running
    assert sqlnotify_threads() - before == set()


# -- failures ----------------------------------------------------------------------------


def test_reconnect_after_the_backend_is_terminated(
    Item: Any, pg_engine: sa.Engine, schema: str, watched: Watch, fast_reconnect: None
) -> None:
    n, rec = watched(pg_engine, Item, start=False)
    with SignalLog(n) as log:
        n.start()
        insert(pg_engine, schema, 1)
        rec.wait_for(1, TIMEOUT)
        pid = kill_listener_connection(n)
        wait_until(
            lambda: log.kinds() == ["connected", "disconnected", "connected"], TIMEOUT, "reconnect"
        )
        insert(pg_engine, schema, 2)
        assert [e.id for e in rec.wait_for(2, TIMEOUT)] == [1, 2]
    assert log.items[0][1] == {"reconnect": False}
    assert isinstance(log.items[1][1]["error"], Exception)
    assert log.items[2][1] == {"reconnect": True}
    assert n.stats.reconnects == 1
    new_pid = listener_backend_pid(n)
    assert new_pid != pid


class FreezableProxy:
    """A loopback TCP proxy to PostgreSQL that can stop forwarding without closing.

    ``freeze()`` silences the connections open at that moment (the server seems
    alive to the OS but never answers); ``refuse`` makes new connections close at
    once; ``blackhole`` accepts new connections and never answers them.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frozen: set[socket.socket] = set()
        self.conns: list[socket.socket] = []
        self.refuse = False
        self.blackhole = False
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, name="test-proxy", daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.server], [], [], 0.1)
            if not ready:
                continue
            client, _ = self.server.accept()
            if self.refuse:
                client.close()
                continue
            if self.blackhole:  # accept, then never answer
                self.held.append(client)
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            self.conns += [client, upstream]
            t = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            self.threads.append(t)
            t.start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        try:
            while not self.stopping.is_set():
                if a in self.frozen:
                    self.stopping.wait(0.05)
                    continue
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for s in ready:
                    if a in self.frozen:
                        break
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def freeze(self) -> None:
        self.frozen.update(self.conns)

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(5)
        for s in self.held:
            s.close()
        self.server.close()


@pytest.fixture
def proxy(pg_url: str) -> Any:
    url = sa.make_url(pg_url)
    p = FreezableProxy(url.host or "127.0.0.1", url.port or 5432)
    yield p
    p.close()


@pytest.fixture
def proxied(
    pg_url: str, proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch, fast_reconnect: None
) -> Iterator[sa.Engine]:
    """An engine connecting through ``proxy``; the listener probes an idle connection often
    and reconnects soon."""
    monkeypatch.setattr(PostgresSource, "IDLE_PROBE_INTERVAL", 0.2)
    monkeypatch.setattr(PostgresSource, "PROBE_TIMEOUT", 0.5)
    engine = sa.create_engine(sa.make_url(pg_url).set(host="127.0.0.1", port=proxy.port))
    yield engine
    engine.dispose()


def test_a_silent_dead_connection_is_noticed_by_the_liveness_probe(
    Item: Any,
    pg_engine: sa.Engine,
    schema: str,
    watched: Watch,
    proxy: FreezableProxy,
    proxied: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
) -> None:
    engine = proxied
    n, rec = watched(engine, Item, start=False)
    with SignalLog(n) as log:
        n.start()
        engine.dispose()  # only the listener's connection goes through the proxy now
        insert(pg_engine, schema, 1)
        rec.wait_for(1, TIMEOUT)
        proxy.freeze()
        wait_until(lambda: "disconnected" in log.kinds(), TIMEOUT, "the probe to fail")
        wait_until(
            lambda: log.kinds()[-1:] == ["connected"] and len(log.items) == 3, TIMEOUT, "reconnect"
        )
        insert(pg_engine, schema, 2)
        assert [e.id for e in rec.wait_for(2, TIMEOUT)] == [1, 2]
    error = log.items[1][1]["error"]
    assert "liveness probe" in str(error)
    # stop() is prompt while the listener waits in its reconnect backoff (here 50 s long).
    monkeypatch.setattr(Listener, "BACKOFF", 1000.0)
    monkeypatch.setattr(Listener, "MAX_DELAY", 60.0)
    proxy.refuse = True
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        proxy.freeze()
        wait_until(
            lambda: sum("reconnect failed" in r.getMessage() for r in caplog.records) >= 2,
            TIMEOUT,
            "two failed reconnects",
        )
    listener = n._listener
    assert listener is not None
    started = time.monotonic()
    n.stop()
    assert time.monotonic() - started < 20  # far less than the backoff
    assert not listener.is_alive
    assert not n.is_running
    engine.dispose()


# -- drivers and URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg2://u:p%40ss@db.example:6543/shop?sslmode=require",
            {
                "host": "db.example",
                "port": "6543",
                "user": "u",
                "password": "p@ss",
                "dbname": "shop",
                "sslmode": "require",
            },
        ),
        (
            "postgresql+psycopg://u@h/d?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3",
            {
                "host": "h",
                "user": "u",
                "dbname": "d",
                "sslmode": "verify-full",
                "sslrootcert": "/ca.pem",
                "connect_timeout": "3",
            },
        ),
        (
            "postgresql+asyncpg://u:pw@h:5433/d?ssl=true&prepared_statement_cache_size=0",
            {
                "host": "h",
                "port": "5433",
                "user": "u",
                "password": "pw",
                "dbname": "d",
                "sslmode": "require",
            },
        ),
        ("postgresql+asyncpg://u@h/d?ssl=verify-full", {"sslmode": "verify-full"}),
        ("postgresql+asyncpg://u@h/d?ssl=false", {"sslmode": "disable"}),
        (
            "postgresql+pg8000://u@/d?host=/var/run/postgresql",
            {"host": "/var/run/postgresql", "dbname": "d"},
        ),
        ("postgresql://u@/d?host=/tmp&port=5544", {"host": "/tmp", "port": "5544"}),
        (
            "postgresql+psycopg2://h/d?application_name=myapp-sqlnotify&options=-csearch_path%3Dshop",
            {"application_name": "myapp-sqlnotify", "options": "-csearch_path=shop"},
        ),
        ("postgresql+psycopg2://h/d?application_name=shop", {"application_name": "shop/sqlnotify"}),
        ("postgresql+psycopg2://h/d", {"application_name": "sqlnotify"}),
    ],
)
def test_listener_dsn(url: str, expected: dict[str, str]) -> None:
    dsn = listener_dsn(sa.make_url(url))
    for key, value in expected.items():
        assert dsn[key] == value, key
    assert "prepared_statement_cache_size" not in dsn and "ssl" not in dsn
    assert "sqlnotify" in dsn["application_name"]
    assert dsn["keepalives"] == "1"
    if "password" not in expected:
        assert "password" not in dsn


def test_non_psycopg2_engines_use_their_own_psycopg2_connections(pg_url: str) -> None:
    url = sa.make_url(pg_url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    n = Notifier(engine)
    assert n.dialect_name == "postgresql"
    assert n.dialect.engine.dialect.driver == "psycopg2"
    assert n.dialect.dsn["dbname"] == url.database  # type: ignore[attr-defined]
    engine.dispose()


def test_asyncpg_async_engine_starts_and_receives(
    Item: Any, pg_url: str, schema: str, watched: Watch
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    url = sa.make_url(pg_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url)
    n, rec = watched(engine, Item)

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'INSERT INTO "{schema}".items VALUES (1), (2)'))
        await engine.dispose()

    asyncio.run(write())
    assert [e.id for e in rec.wait_for(2, TIMEOUT)] == [1, 2]
    n.stop()


def test_stop_is_prompt_while_a_reconnect_hangs(
    Item: Any,
    notifiers: Any,
    proxy: FreezableProxy,
    proxied: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
) -> None:
    monkeypatch.setattr(PostgresSource, "CONNECT_TIMEOUT", 60.0)
    engine = proxied
    n = make_notifier(notifiers, engine)
    n.watch(Item, "insert")
    n.start()
    engine.dispose()
    proxy.blackhole = True
    proxy.freeze()  # the probe fails; the reconnect then hangs in the handshake
    wait_until(lambda: proxy.held, TIMEOUT, "a reconnect attempt")
    listener = n._listener
    assert listener is not None
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        n.stop()
    assert time.monotonic() - started < 20  # far less than the 60 s connect timeout
    assert not listener.is_alive
    assert not [r for r in caplog.records if "reconnect failed" in r.getMessage()]


def test_a_receiver_may_stop_the_notifier(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, caplog: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(Item, "insert")
    before = sqlnotify_threads()
    got: list[int] = []

    @n.subscribe(Item, "insert")
    def stop_on_first(event: Any) -> None:
        got.append(event.id)
        n.stop()

    n.start()
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        insert(pg_engine, schema, 1)
        wait_until(lambda: not n.is_running, TIMEOUT, "the receiver to stop the notifier")
        wait_until(lambda: sqlnotify_threads() - before == set(), TIMEOUT, "both threads to end")
    assert got == [1]
    assert [r.getMessage() for r in caplog.records] == []


def test_listener_connect_args(pg_url: str, Item: Any, schema: str, notifiers: Any) -> None:
    engine = sa.create_engine(pg_url, connect_args={"application_name": "from-connect-args"})
    n = make_notifier(
        notifiers, engine, listener_connect_args={"application_name": "mine", "connect_timeout": 4}
    )
    dsn = n.dialect.dsn  # type: ignore[attr-defined]
    assert (dsn["application_name"], dsn["connect_timeout"]) == ("mine/sqlnotify", "4")
    n.watch(Item, "insert")
    n.start()
    pid = listener_backend_pid(n)
    assert pid is not None
    name = scalar(
        engine, "SELECT application_name FROM pg_stat_activity WHERE pid = :p", {"p": pid}
    )
    assert name == "mine/sqlnotify"
    n.stop()
    engine.dispose()
    with pytest.raises(SQLNotifyException, match="'sslmod' is not a libpq connection keyword"):
        Notifier(engine, listener_connect_args={"sslmod": "require"})
    with pytest.raises(
        SQLNotifyException, match=r"unknown Notifier option 'poll_interval'.*listener_connect_args"
    ):
        Notifier(engine, poll_interval=1)
