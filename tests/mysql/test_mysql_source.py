"""The MySQL trigger source on a real server: late commits, rollbacks, odd names, lifecycle."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from support import mysql as mysql_support

from sqlnotify import Notifier
from sqlnotify.dialects.mysql import LogPosition, MySQLSource
from sqlnotify.exceptions import SQLNotifyConfigurationError, SQLNotifyException
from sqlnotify.testing import EventRecorder, wait_until

TIMEOUT = 10.0


@pytest.fixture
def mysql_engine(each_mysql_engine: sa.Engine) -> sa.Engine:
    """This module's tests run on the shared MariaDB and on the private MySQL."""
    return each_mysql_engine


def items(engine: sa.Engine, name: str = "items") -> sa.Table:
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(50)),
    )
    table.metadata.create_all(engine)
    return table


def saved(engine: sa.Engine, consumer: str) -> LogPosition:
    with engine.connect() as conn:
        text = conn.exec_driver_sql(
            "SELECT `position` FROM sqlnotify_consumers WHERE `name` = %s", (consumer,)
        ).scalar_one()
    return LogPosition.loads(text)


def test_late_commit_is_delivered(mysql_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    """A transaction whose log id is lower than a row already read still arrives."""
    table = items(mysql_engine)
    n = Notifier(mysql_engine).watch(table, "insert", extra_columns=["name"])
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    slow = mysql_engine.connect()
    slow.begin()
    slow.execute(table.insert().values(id=1, name="late"))  # takes the lower log id
    with mysql_engine.begin() as conn:
        conn.execute(table.insert().values(id=2, name="early"))
    (early,) = rec.wait_for(1, TIMEOUT)
    assert early.id == 2
    slow.commit()
    slow.close()
    events = rec.wait_for(2, TIMEOUT)
    assert [e.id for e in events] == [2, 1]
    assert events[1].position < events[0].position  # its log id: lower, committed later


def test_rolled_back_ids_do_not_hold_the_position(
    mysql_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    table = items(mysql_engine)
    n = Notifier(mysql_engine, consumer="c").watch(table, "insert", durable=True)
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    with mysql_engine.connect() as conn:
        conn.begin()
        conn.execute(table.insert().values(id=1, name="never"))
        conn.rollback()
    with mysql_engine.begin() as conn:
        conn.execute(table.insert().values(id=2, name="kept"))
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.id == 2
    # The rolled-back id stays pending for the settle delay (server time) ...
    wait_until(lambda: saved(mysql_engine, "c").high == event.position, TIMEOUT, "saved")
    (hole,) = saved(mysql_engine, "c").pending
    assert hole[:2] == (event.position - 1, event.position - 1)

    def settled() -> bool:
        with mysql_engine.connect() as conn:
            now = conn.exec_driver_sql("SELECT UNIX_TIMESTAMP(NOW(6))").scalar_one()
        return float(now) > hole[2] + MySQLSource.SETTLE

    wait_until(settled, TIMEOUT, "the settle delay")
    # ... then a read moves the position past it (a saved position moves with an event).
    inserted = [2]

    def next_row_settles() -> bool:
        inserted.append(inserted[-1] + 1)
        with mysql_engine.begin() as conn:
            conn.execute(table.insert().values(id=inserted[-1], name="next"))
        last = rec.wait_for(len(inserted), TIMEOUT)[-1]
        wait_until(lambda: saved(mysql_engine, "c").high == last.position, TIMEOUT, "saved")
        return saved(mysql_engine, "c").pending == ()

    wait_until(next_row_settles, TIMEOUT, "the hole settled")
    assert saved(mysql_engine, "c").low == saved(mysql_engine, "c").high
    assert [e.id for e in rec.events] == inserted  # never the rolled-back row


@pytest.fixture
def wake_fd() -> Iterator[int]:
    r, w = os.pipe()
    yield r
    os.close(r)
    os.close(w)


def drain(source: MySQLSource, wake: int, times: int = 3) -> list[int]:
    """The ids of what ``times`` checks of the source return."""
    out = []
    for _ in range(times):
        out += [json.loads(x.payload)["row"]["id"] for x in source.wait(0.0, wake)]
    return out


def test_open_transaction_keeps_its_hole(
    mysql_engine: sa.Engine, wake_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hole is kept while a transaction older than it is open, then filled or dropped.

    MariaDB and MySQL refuse the probe with different lock errors (1205, 3572).
    """
    monkeypatch.setattr(MySQLSource, "SETTLE", 0.0)  # settle at every check
    table = items(mysql_engine)
    n = Notifier(mysql_engine).watch(table, "insert")
    n.install()
    channel = n.watches[0].channel
    source = n.dialect.open_source([channel], stop=threading.Event())
    try:
        slow = mysql_engine.connect()
        slow.begin()
        slow.execute(table.insert().values(id=1, name="late"))
        rolled = mysql_engine.connect()
        rolled.begin()
        rolled.execute(table.insert().values(id=2, name="never"))
        with mysql_engine.begin() as conn:
            conn.execute(table.insert().values(id=3, name="early"))
        assert drain(source, wake_fd) == [3]
        pos = source.reader.position
        assert [(a, b) for a, b, _ in pos.pending] == [(pos.high - 2, pos.high - 1)]
        rolled.rollback()
        rolled.close()
        assert drain(source, wake_fd) == []
        assert source.reader.position.pending, "kept while the older transaction is open"
        slow.commit()
        slow.close()
        assert drain(source, wake_fd) == [1]
        # Nothing older is open any more (INNODB_TRX is a cache of up to 0.1 s):
        # the rolled-back id is final.
        wait_until(
            lambda: not drain(source, wake_fd, 1) and not source.reader.position.pending,
            TIMEOUT,
            "the hole dropped",
        )
        assert source.reader.position.low == source.reader.position.high
    finally:
        source.close()
        n.dialect.close()


def test_odd_names_and_trigger_columns(mysql_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = sa.Table(
        "odd `name'",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("we`ird\\col", sa.String(50)),
        sa.Column("other", sa.Integer),
    )
    table.metadata.create_all(mysql_engine)
    n = Notifier(mysql_engine).watch(
        table, "update", extra_columns=["we`ird\\col"], trigger_columns=["we`ird\\col"]
    )
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "update")(rec)
    n.start()
    with mysql_engine.begin() as conn:
        conn.execute(table.insert().values({"id": 1, "we`ird\\col": None, "other": 1}))
        conn.execute(table.update().values(other=2))  # not a trigger column
        conn.execute(table.update().values({"we`ird\\col": None}))  # NULL to NULL: unchanged
        conn.execute(table.update().values({"we`ird\\col": "it's \\ here"}))
    (event,) = rec.wait_for(1, TIMEOUT)
    assert dict(event.row) == {"id": 1, "we`ird\\col": "it's \\ here"}


def test_status_replace_and_uninstall(mysql_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = items(mysql_engine)
    n = Notifier(mysql_engine).watch(table, "insert", extra_columns=["name"])
    notifiers.append(n)
    n.install()
    (row,) = n.dialect.status()
    assert (row["table"], row["operation"], row["state"]) == ("items", "insert", "installed")
    assert row["schema"] == mysql_engine.url.database
    with mysql_engine.connect() as conn:
        meta = conn.exec_driver_sql("SELECT `meta` FROM sqlnotify_triggers").scalar_one()
    assert json.loads(meta)["channel"] == row["channel"]
    # A trigger that differs from the watch is outdated, and replaced on install.
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sqlnotify_triggers SET `meta` = JSON_SET(`meta`, '$.fp', 'x')")
    assert [s.state for s in n.install()] == ["replaced"]
    assert n.dialect.status()[0]["state"] == "installed"
    assert n.uninstall() == 1
    assert n.dialect.status() == []


def test_status_lists_this_databases_triggers_not_another_applications(
    mysql_url: str, mysql_engine: sa.Engine
) -> None:
    other_app = Notifier(mysql_engine).watch(items(mysql_engine), "insert")
    other_app.install()
    with mysql_support.fresh_database(mysql_url) as engine:
        n = Notifier(engine).watch(items(engine), "delete")
        n.install()
        (row,) = n.dialect.status()
        assert (row["schema"], row["operation"]) == (engine.url.database, "delete")
        n.uninstall()
    (row,) = other_app.dialect.status()
    assert (row["schema"], row["operation"]) == (mysql_engine.url.database, "insert")


def test_unknown_option(mysql_engine: sa.Engine) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="mysql_retention"):
        Notifier(mysql_engine, mysql_retension=1)


def test_offline_ddl_installs_what_install_does(mysql_engine: sa.Engine) -> None:
    table = items(mysql_engine)
    n = Notifier(mysql_engine).watch(table, "insert", extra_columns=["name"])
    with mysql_engine.begin() as conn:
        for statement in n.ddl():
            conn.exec_driver_sql(statement.replace("%", "%%"))
    (row,) = n.dialect.status()
    assert row["state"] == "installed"
    assert [s.state for s in n.install()] == ["unchanged"]


def test_one_process_per_consumer_name(mysql_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = items(mysql_engine)
    first = Notifier(mysql_engine, consumer="one").watch(table, "insert")
    notifiers.append(first)
    first.start()
    second = Notifier(mysql_engine, consumer="one").watch(table, "insert")
    notifiers.append(second)
    with pytest.raises(SQLNotifyException, match="already active"):
        second.start()
    first.stop()
    second.start()  # the name is free again
    assert second.health()["running"]
