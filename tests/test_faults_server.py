"""A real server restart, and a server in recovery, on a throwaway PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg2
import pytest
import sqlalchemy as sa
from faults import ThrowawayPostgres, make_table

from sqlnotify import Notifier, SQLNotifyListenerError
from sqlnotify.dialects.postgresql.journal import PostgresJournal
from sqlnotify.testing import EventRecorder

pytestmark = pytest.mark.skipif(
    not ThrowawayPostgres.available(), reason="needs root and the local PostgreSQL 15 binaries"
)


@pytest.fixture
def server() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    yield pg
    pg.destroy()


class Writer(threading.Thread):
    """Inserts ids one per transaction; across a server restart, retries until each commits."""

    def __init__(self, dsn: str, ids: range, pace_after: int) -> None:
        super().__init__(name="test-writer", daemon=True)
        self.dsn = dsn
        self.ids = ids
        self.done = 0
        self.failures = 0
        self.pace_after = pace_after
        self.halfway = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = None
        try:
            for i in self.ids:
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = psycopg2.connect(self.dsn, connect_timeout=5)
                            conn.autocommit = True
                        with conn.cursor() as cur:
                            cur.execute("INSERT INTO item (id, note) VALUES (%s, 'r')", (i,))
                        break
                    except psycopg2.errors.UniqueViolation:
                        break  # the commit went through before the connection broke
                    except psycopg2.OperationalError:
                        self.failures += 1
                        if self.failures > 2000:
                            raise
                        conn = None
                        threading.Event().wait(0.05)  # the server is restarting
                self.done += 1
                if i >= self.pace_after:
                    # Spread the rest of the writes over a few seconds, so they
                    # straddle the restart.
                    self.halfway.set()
                    threading.Event().wait(0.002)
        except BaseException as exc:
            self.error = exc


def test_server_restart_mid_stream(
    server: ThrowawayPostgres,
    notifiers: list[Notifier],
    fast_reconnect: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(PostgresJournal, "QUERY_TIMEOUT", 5.0)
    engine = sa.create_engine(server.url, poolclass=sa.pool.NullPool)
    try:
        table = make_table(engine)
        n = Notifier(engine).watch(table, "insert", durable=True)
        notifiers.append(n)
        rec = EventRecorder()
        n.subscribe(table, "insert")(rec)
        n.start()
        dsn = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
        writer = Writer(dsn, range(1, 3001), pace_after=1000)
        writer.start()
        assert writer.halfway.wait(20)
        rec.wait_for(500, timeout=20)
        server.restart()
        writer.join(60)
        assert writer.error is None and writer.done == 3000
        assert writer.failures > 0  # the restart really happened mid-stream
        events = rec.wait_for(3000, timeout=20)
        assert {e.id for e in events} == set(range(1, 3001))
        assert n.health()["reconnects"] >= 1
    finally:
        for x in notifiers:
            x.stop()
        engine.dispose()


def test_server_in_recovery_is_refused() -> None:
    pg = ThrowawayPostgres(standby=True)
    engine = sa.create_engine(pg.url, poolclass=sa.pool.NullPool)
    try:
        n = Notifier(engine).watch(
            sa.Table("item", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True)), "insert"
        )
        with pytest.raises(SQLNotifyListenerError, match="in recovery"):
            n.start(timeout=10)
        assert not n.is_running
    finally:
        engine.dispose()
        pg.destroy()
