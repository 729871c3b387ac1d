"""Network faults through a loopback proxy: dropped and silent connections, no LISTEN."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from support.faults import GapRecorder, Proxy, gaps_fixture, insert, proxy_to  # noqa: F401
from support.watching import make_table

from sqlnotify import Notifier, SQLNotifyListenerError, signals
from sqlnotify.dialects.postgresql import PostgresSource
from sqlnotify.dialects.postgresql.journal import PostgresJournal
from sqlnotify.testing import EventRecorder, wait_until

IDLE = 0.3
PROBE = 0.5


@pytest.fixture
def proxy(pg_url: str) -> Iterator[Proxy]:
    port = sa.make_url(pg_url).port or 5432
    with proxy_to(port) as p:
        yield p


@pytest.fixture
def proxied_engine(pg_url: str, schema: str, proxy: Proxy) -> Iterator[sa.Engine]:
    url = sa.make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    url = url.update_query_dict(
        {"options": f"-csearch_path={schema}", "sslmode": "disable", "gssencmode": "disable"}
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def short_liveness(monkeypatch: pytest.MonkeyPatch, fast_reconnect: None) -> None:
    monkeypatch.setattr(PostgresSource, "IDLE_PROBE_INTERVAL", IDLE)
    monkeypatch.setattr(PostgresSource, "PROBE_TIMEOUT", PROBE)
    monkeypatch.setattr(PostgresSource, "CONNECT_TIMEOUT", 3.0)
    monkeypatch.setattr(PostgresJournal, "QUERY_TIMEOUT", 2.0)


class Disconnects:
    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, sender: Any, **kw: Any) -> None:
        self.times.append(time.monotonic())


@pytest.mark.parametrize("mode", ["drop", "silent"])
def test_cut_is_noticed_and_delivery_resumes(
    mode: str,
    proxy: Proxy,
    proxied_engine: sa.Engine,
    pg_schema_engine: sa.Engine,
    notifiers: list[Notifier],
    short_liveness: None,
    gaps: GapRecorder,
) -> None:
    plain = make_table(pg_schema_engine, name="plain")
    kept = make_table(pg_schema_engine, name="kept")
    n = Notifier(proxied_engine).watch(plain, "insert").watch(kept, "insert", durable=True)
    notifiers.append(n)
    rec_plain, rec_kept = EventRecorder(), EventRecorder()
    n.subscribe(plain, "insert")(rec_plain)
    n.subscribe(kept, "insert")(rec_kept)
    lost = Disconnects()
    signals.listener_disconnected.connect(lost, sender=n)
    try:
        n.start()
        insert(pg_schema_engine, plain, [1])
        insert(pg_schema_engine, kept, [1])
        rec_plain.wait_for(1, timeout=10)
        rec_kept.wait_for(1, timeout=10)

        cut = time.monotonic()
        if mode == "drop":
            proxy.drop()
        else:
            proxy.silent()
        insert(pg_schema_engine, kept, range(2, 51))  # committed while the path is cut
        # The liveness bound: an idle interval, then a probe timeout (plus slack
        # for a loaded machine).
        wait_until(lambda: lost.times, timeout=IDLE + PROBE + 10, message="the cut noticed")
        assert lost.times[0] - cut < IDLE + PROBE + 10
        proxy.silent(False)
        wait_until(lambda: n.health()["connected"], timeout=10, message="a reconnect")
        insert(pg_schema_engine, plain, [2])
        insert(pg_schema_engine, kept, [51])
        rec_plain.wait_for(2, timeout=10)
        events = rec_kept.wait_for(51, timeout=10)
    finally:
        signals.listener_disconnected.disconnect(lost)
    assert sorted({e.id for e in events}) == list(range(1, 52))
    assert [g["reason"] for g in gaps.gaps] == ["disconnected"]
    assert gaps.gaps[0]["channels"] == (n.watches[0].channel,)


def test_connection_that_cannot_listen_is_refused_promptly(
    proxy: Proxy, proxied_engine: sa.Engine, pg_schema_engine: sa.Engine, monkeypatch: Any
) -> None:
    monkeypatch.setattr(PostgresSource, "PING_TIMEOUT", 1.0)
    table = make_table(pg_schema_engine)
    proxy.swallow_notifications = True
    n = Notifier(proxied_engine).watch(table, "insert")
    started = time.monotonic()
    with pytest.raises(SQLNotifyListenerError, match="pooler in transaction mode"):
        n.start(timeout=30)
    assert time.monotonic() - started < 25  # raised by the ping bound, not the start timeout
    assert not n.is_running
