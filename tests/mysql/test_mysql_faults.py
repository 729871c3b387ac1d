"""The MySQL listener's connection killed again and again: a consumer loses nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sqlnotify import Notifier
from sqlnotify.testing import EventRecorder, wait_until

WRITES = 10_000
KILLS = 100
PER_COMMIT = 10


@pytest.fixture
def mysql_engine(each_mysql_engine: sa.Engine) -> sa.Engine:
    """The trigger source's listener killed on the shared MariaDB and on the private MySQL."""
    return each_mysql_engine


def kill_listeners(engine: sa.Engine, own: int) -> int:
    """Kill every connection to the test's database but ``own``; return how many."""
    with engine.connect() as conn:
        ids = (
            conn.exec_driver_sql(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> %s"
                " AND ID <> CONNECTION_ID()",
                (own,),
            )
            .scalars()
            .all()
        )
        killed = 0
        for pid in ids:
            try:
                conn.exec_driver_sql(f"KILL CONNECTION {int(pid)}")
                killed += 1
            except sa.exc.OperationalError:
                conn.rollback()  # gone meanwhile
    return killed


@pytest.mark.slow
@pytest.mark.usefixtures("fast_reconnect")
def test_killed_listener_loses_nothing(mysql_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    )
    table.metadata.create_all(mysql_engine)
    n = Notifier(mysql_engine, consumer="faults").watch(table, "insert", durable=True)
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    killer = sa.create_engine(mysql_engine.url, poolclass=sa.pool.NullPool)
    with mysql_engine.connect() as writer:
        own = writer.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
        writer.commit()
        every = WRITES // PER_COMMIT // KILLS
        for commit in range(WRITES // PER_COMMIT):
            first = commit * PER_COMMIT
            writer.execute(table.insert(), [{"id": first + i} for i in range(PER_COMMIT)])
            writer.commit()
            if commit % every == every - 1:
                # The listener is connected again before the next kill.
                wait_until(lambda: n.health()["connected"], 10, "the listener connected")
                wait_until(lambda: kill_listeners(killer, own), 10, "a connection to kill")
    killer.dispose()
    wait_until(lambda: len(rec.events) >= WRITES, 120, f"{WRITES} events")
    ids = [e.id for e in rec.events]
    assert sorted(set(ids)) == list(range(WRITES))
    assert n.health()["reconnects"] >= KILLS // 2  # most kills hit the listener itself
    assert len(ids) == WRITES  # and none twice: the position survives reconnects
