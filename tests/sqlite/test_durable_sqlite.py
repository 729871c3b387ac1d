"""The same durable API on SQLite: consumers resume, hold the log, and hear of gaps."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest
import sqlalchemy as sa
from support.faults import GapRecorder, gaps_fixture  # noqa: F401
from support.sqlite import file_engine

from sqlnotify import Notifier, SQLNotifyListenerError
from sqlnotify.testing import EventRecorder, wait_until


@pytest.fixture
def engine(sqlite_path: str) -> Iterator[sa.Engine]:
    with closing(sqlite3.connect(sqlite_path)) as conn, conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, note TEXT)")
    engine = file_engine(sqlite_path)
    yield engine
    engine.dispose()


def insert(engine: sa.Engine, ids: range | list[int]) -> None:
    with engine.begin() as conn:
        for i in ids:
            conn.execute(sa.text("INSERT INTO item (id, note) VALUES (:i, 'x')"), {"i": i})


def consumer(
    engine: sa.Engine, notifiers: list[Notifier], name: str = "c", **options: object
) -> tuple[Notifier, EventRecorder]:
    n = Notifier(engine, consumer=name, **options)  # type: ignore[arg-type]
    n.watch("item", "insert", durable=True)
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe("item", "insert")(rec)
    return n, rec


def test_consumer_resumes_after_restart(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n1, rec1 = consumer(engine, notifiers)
    n1.start()
    insert(engine, range(1, 6))
    assert [e.id for e in rec1.wait_for(5)] == [1, 2, 3, 4, 5]
    assert all(e.position for e in rec1.events)
    n1.stop()
    insert(engine, range(6, 11))  # nobody listens
    n2, rec2 = consumer(engine, notifiers)
    n2.start()
    insert(engine, [11])
    events = rec2.wait_for(6)
    assert [e.id for e in events] == list(range(6, 12))
    assert n2.health()["position"] == events[-1].position


def test_one_process_per_consumer_name(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n1, _ = consumer(engine, notifiers)
    n1.start()
    n2, _ = consumer(engine, notifiers)
    with pytest.raises(SQLNotifyListenerError, match="'c' is already active"):
        n2.start()
    n3, _ = consumer(engine, notifiers, name="other")
    n3.start()  # another name is an independent reader


def test_known_consumer_holds_the_log_and_an_expired_one_gets_a_gap(
    engine: sa.Engine, notifiers: list[Notifier], gaps: GapRecorder
) -> None:
    n1, rec1 = consumer(engine, notifiers, name="slow")
    n1.start()
    insert(engine, [1])
    rec1.wait_for(1)
    n1.stop()
    insert(engine, range(2, 12))

    def log_rows() -> int:
        with closing(sqlite3.connect(engine.url.database or "")) as conn, conn:
            return int(conn.execute("SELECT count(*) FROM sqlnotify_log").fetchone()[0])

    pruner = Notifier(engine, sqlite_retention=0.0)
    assert pruner.dialect.prune() <= 1  # "slow" still needs rows 2 to 11
    assert log_rows() >= 10
    pruner.dialect.close()
    expired = Notifier(engine, sqlite_retention=0.0, consumer_expiry=0)
    expired.watch("item", "insert")
    notifiers.append(expired)
    expired.start()  # its listener prunes as it goes: "slow" no longer counts
    wait_until(lambda: log_rows() == 0, timeout=10, message="the log pruned")
    expired.stop()

    n2, rec2 = consumer(engine, notifiers, name="slow")
    n2.start()
    insert(engine, [12])
    assert [e.id for e in rec2.wait_for(1)] == [12]
    wait_until(lambda: len(gaps) >= 1, timeout=10, message="a retention gap")
    gap = gaps.gaps[0]
    assert gap["reason"] == "retention" and gap["count"] == 10
    assert gap["channels"] == (n2.watches[0].channel,)
