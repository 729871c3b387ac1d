"""start() against addresses that do not answer as PostgreSQL: bounded, with a clear error."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from support.env import unavailable

from sqlnotify import Notifier, SQLNotifyException, SQLNotifyListenerError

START_TIMEOUT = 1.5
# The deadline of the helper thread: generous, only there so a hang fails the test.
HANG = START_TIMEOUT + 20.0


class FakeServer:
    """A TCP server on a free local port that runs ``serve(conn)`` for each client."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.clients: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="fake-server", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.clients.append(conn)
            self.serve(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for conn in self.clients:
            conn.close()
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket], None]], FakeServer]]:
    made: list[FakeServer] = []

    def make(serve: Callable[[socket.socket], None]) -> FakeServer:
        made.append(FakeServer(serve))
        return made[-1]

    yield make
    for s in made:
        s.close()


def start_in_thread(port: int, *, with_watch: bool = True) -> BaseException:
    """Start a notifier on ``127.0.0.1:port``; return what start() raised."""
    engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/test")
    notifier = Notifier(engine, start_timeout=START_TIMEOUT)
    if with_watch:
        table = sa.Table("orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
        notifier.watch(table, "insert")
    raised: list[BaseException] = []

    def run() -> None:
        try:
            notifier.start()
        except BaseException as exc:
            raised.append(exc)
        else:
            notifier.stop()

    thread = threading.Thread(target=run, name="start-under-test", daemon=True)
    thread.start()
    thread.join(HANG)
    engine.dispose()
    assert not thread.is_alive(), f"start() still blocked after {HANG}s"
    assert raised, "start() succeeded against a server that is not PostgreSQL"
    return raised[0]


def test_a_server_that_accepts_and_never_answers(server: Callable[..., FakeServer]) -> None:
    fake = server(lambda conn: None)
    exc = start_in_thread(fake.port)
    assert isinstance(exc, SQLNotifyListenerError)
    text = str(exc)
    assert f"127.0.0.1:{fake.port}" in text
    assert "no answer" in text and "start_timeout" in text
    assert "could not install" not in text


def test_a_server_that_answers_garbage(server: Callable[..., FakeServer]) -> None:
    fake = server(lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    exc = start_in_thread(fake.port)
    assert isinstance(exc, SQLNotifyListenerError)
    assert f"127.0.0.1:{fake.port}" in str(exc)
    assert "does not speak PostgreSQL" in str(exc)


def test_the_redis_port() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        unavailable("no Redis on 127.0.0.1:6379")
    exc = start_in_thread(6379)
    assert isinstance(exc, SQLNotifyListenerError)
    assert "127.0.0.1:6379" in str(exc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("with_watch", [True, False], ids=["watching", "no-watches"])
def test_a_refused_connection_is_a_listener_error(with_watch: bool) -> None:
    exc = start_in_thread(free_port(), with_watch=with_watch)
    assert isinstance(exc, SQLNotifyListenerError)
    text = str(exc)
    assert text.startswith("cannot connect to PostgreSQL at 127.0.0.1:")
    assert "refused" in text
    assert "could not install" not in text


def test_install_alone_names_the_address() -> None:
    port = free_port()
    engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/test")
    notifier = Notifier(engine)
    with pytest.raises(SQLNotifyListenerError, match=f"127.0.0.1:{port}") as info:
        notifier.install(timeout=START_TIMEOUT)
    assert isinstance(info.value, SQLNotifyException)
    engine.dispose()
