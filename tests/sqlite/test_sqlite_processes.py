"""SQLite across processes: writers, several listeners, locks, pruning, restarts."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing

import pytest
import sqlalchemy as sa
from support.sqlite import file_engine, finish, ids, python, read_line

from sqlnotify import Notifier, Operation, signals
from sqlnotify.dialects.sqlite import SQLiteDialect, SQLiteSource
from sqlnotify.testing import EventRecorder, wait_until

TABLE_SQL = "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)"


@pytest.fixture
def engine(sqlite_path: str) -> Iterator[sa.Engine]:
    with closing(sqlite3.connect(sqlite_path)) as conn, conn:
        conn.execute(TABLE_SQL)
    engine = file_engine(sqlite_path)
    yield engine
    engine.dispose()


def start(engine: sa.Engine, notifiers: list[Notifier], **options: object) -> EventRecorder:
    n = Notifier(engine, **options)  # type: ignore[arg-type]
    notifiers.append(n)
    rec = EventRecorder()
    for op in Operation.rows():
        n.watch("item", op, extra_columns=["name"])
        n.subscribe("item", op)(rec)
    n.start()
    return rec


WRITER = """
import sqlite3, sys
path, first, count, per_commit = sys.argv[1], *map(int, sys.argv[2:5])
conn = sqlite3.connect(path, timeout=30)
ids = list(range(first, first + count))
for i in range(0, count, per_commit):
    with conn:
        conn.executemany(
            "INSERT INTO item (id, name, qty) VALUES (?, 'w', 1)",
            [(x,) for x in ids[i : i + per_commit]],
        )
with conn:
    conn.execute("UPDATE item SET qty = 2 WHERE id = ?", (first,))
    conn.execute("DELETE FROM item WHERE id = ?", (first + 1,))
print("done", flush=True)
"""


def test_writer_in_another_process(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier]
) -> None:
    rec = start(engine, notifiers)
    finish(python(WRITER, sqlite_path, "1", "300", "7"))
    events = rec.wait_for(302, timeout=20)
    assert ids(events[:300]) == list(range(1, 301))
    assert (events[300].operation, events[300].id) == (Operation.UPDATE, 1)
    assert (events[301].operation, events[301].id) == (Operation.DELETE, 2)
    assert len(events) == 302


LISTENER = """
import json, sys
import sqlalchemy as sa
from sqlnotify import Notifier
from sqlnotify.testing import EventRecorder
path, expected = sys.argv[1], int(sys.argv[2])
engine = sa.create_engine("sqlite:///" + path)
notifier = Notifier(engine)
notifier.watch("item", "insert", extra_columns=["name"])
rec = EventRecorder()
notifier.subscribe("item", "insert")(rec)
notifier.start()
print("ready", flush=True)
events = rec.wait_for(expected, timeout=30)
notifier.stop()
print(json.dumps([[e.id, e.extra_columns["name"], e.position] for e in events]), flush=True)
"""


def test_two_listener_processes_each_get_everything(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier]
) -> None:
    # Install first, so the two processes find the triggers unchanged.
    Notifier(engine).watch("item", "insert", extra_columns=["name"]).install()
    listeners = [python(LISTENER, sqlite_path, "200") for _ in range(2)]
    for proc in listeners:
        read_line(proc, "ready")
    writers = [python(WRITER, sqlite_path, str(first), "100", "10") for first in (1, 1001)]
    for proc in writers:
        finish(proc)
    results = [json.loads(finish(proc).splitlines()[-1]) for proc in listeners]
    assert results[0] == results[1]
    got = results[0]
    assert len(got) == 200
    assert sorted(row[0] for row in got) == [*range(1, 101), *range(1001, 1101)]
    positions = [row[2] for row in got]
    assert positions == sorted(positions)
    # Each writer's rows arrive in its commit order.
    assert [r[0] for r in got if r[0] < 1000] == list(range(1, 101))


HOLDER = """
import sqlite3, sys
path, mode = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("BEGIN " + mode)
for i in range(100, 200):
    conn.execute("INSERT INTO item (id, name, qty) VALUES (?, 'held', 1)", (i,))
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("committed", flush=True)
"""


@pytest.mark.parametrize("wal", [True, False])
def test_busy_writer_holding_the_lock(
    sqlite_path: str, notifiers: list[Notifier], wal: bool, fast_reconnect: None
) -> None:
    with closing(sqlite3.connect(sqlite_path)) as conn, conn:
        conn.execute(TABLE_SQL)
    engine = file_engine(sqlite_path)
    # A tiny retention: the listener tries to prune while the lock is held.
    rec = start(engine, notifiers, sqlite_wal=wal, sqlite_retention=0.0)
    notifier = notifiers[0]
    disconnects = EventRecorder()
    signals.listener_disconnected.connect(disconnects, sender=notifier)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO item (id, name) VALUES (1, 'before')"))
        rec.wait_for(1)
        # Without WAL an exclusive lock keeps readers out; with WAL only writers wait.
        holder = python(HOLDER, sqlite_path, "IMMEDIATE" if wal else "EXCLUSIVE")
        read_line(holder, "locked")
        assert notifier._listener is not None
        source = notifier._listener.source
        assert isinstance(source, SQLiteSource)
        # The listener meets the lock again and again and keeps going.
        wait_until(lambda: source.busy >= 2, 20, "the listener to meet the held lock")
        assert notifier._listener.is_alive and notifier._listener.source is source
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert finish(holder).strip() == "committed"
        events = rec.wait_for(101, timeout=20)
        assert ids(events) == [1, *range(100, 200)]
        assert len(disconnects) == 0 and notifier.stats.reconnects == 0
    finally:
        signals.listener_disconnected.disconnect(disconnects)
        engine.dispose()


def test_restart_starts_at_the_end(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    first = start(engine, notifiers)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (id, name) VALUES (1, 'a'), (2, 'b')"))
    assert ids(first.wait_for(2)) == [1, 2]
    notifiers[0].stop()
    with engine.begin() as conn:  # while nobody listens: not replayed later
        conn.execute(sa.text("INSERT INTO item (id, name) VALUES (3, 'c')"))
    second = start(engine, notifiers)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (id, name) VALUES (4, 'd')"))
        conn.execute(sa.text("UPDATE item SET name = 'e' WHERE id = 1"))
    events = second.wait_for(2)
    assert [(e.operation, e.id) for e in events] == [(Operation.INSERT, 4), (Operation.UPDATE, 1)]
    # Nothing more arrives: a notify after them comes next, with no duplicate before it.
    notifiers[1].notify("item", "insert", {"id": 99})
    events = second.wait_for(3)
    assert [e.id for e in events] == [4, 1, 99] and len(first) == 2


def test_reconnect_resumes_without_loss(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier], fast_reconnect: None
) -> None:
    rec = start(engine, notifiers)
    notifier = notifiers[0]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (id, name) VALUES (1, 'a')"))
    rec.wait_for(1)
    # Someone drops the change log: the listener's reads fail and it reconnects
    # (and retries) until the notifier installs it again.
    with closing(sqlite3.connect(sqlite_path)) as conn, conn:
        conn.execute("DROP TABLE sqlnotify_log")
    wait_until(
        lambda: notifier._listener is not None and notifier._listener.source is None,
        10,
        "the listener to lose its source",
    )
    notifier.install()
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (id, name) VALUES (2, 'b')"))
    wait_until(lambda: notifier.stats.reconnects == 1, 10, "a reconnect")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (id, name) VALUES (3, 'c')"))
    # The new log starts at 1 again; the listener reads it from its start.
    assert ids(rec.wait_for(3)) == [1, 2, 3]
    assert [e.position for e in rec.events] == [1, 1, 2]


def test_pruning(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    rec = start(engine, notifiers, sqlite_retention=0.2)
    dialect = notifiers[0].dialect
    assert isinstance(dialect, SQLiteDialect)
    with engine.begin() as conn:
        for i in range(50):
            conn.execute(sa.text("INSERT INTO item (id, name) VALUES (:i, 'x')"), {"i": i})
    rec.wait_for(50)
    assert dialect.inspect(1.0)["change_log"]["last"] is not None
    wait_until(
        lambda: dialect.inspect(1.0)["change_log"]["rows"] == 0, 10, "the listener to prune the log"
    )
    # Sequence numbers keep increasing after the log was emptied.
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (id, name) VALUES (100, 'y')"))
    event = rec.wait_for(51)[-1]
    assert event.id == 100 and event.position == 51


def test_prune_keeps_recent_rows_and_batches(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    start(engine, notifiers)
    dialect = notifiers[0].dialect
    assert isinstance(dialect, SQLiteDialect)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO item (id, name) SELECT value, 'x' FROM json_each(:a)"),
            {"a": json.dumps(list(range(2500)))},
        )
    assert dialect.prune() == 0  # younger than the hour of retention
    with closing(sqlite3.connect(dialect.path)) as conn, conn:
        conn.execute("UPDATE sqlnotify_log SET ts = ts - 7200 WHERE seq <= 2000")
    assert dialect.prune() == 2000
    assert dialect.inspect(1.0)["change_log"] == {"rows": 500, "first": 2001, "last": 2500}


def test_rows_pruned_before_reading_are_reported(
    engine: sa.Engine, notifiers: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(engine)
    n.watch("item", "insert")
    n.install()
    dialect = n.dialect
    assert isinstance(dialect, SQLiteDialect)
    gaps: list[tuple[int, int]] = []
    dialect.on_gap = lambda first, last: gaps.append((first, last))
    source = dialect.open_source([n.watches[0].channel], stop=threading.Event())
    assert isinstance(source, SQLiteSource)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO item (id) VALUES (1), (2), (3)"))
        # Another process with a tiny retention prunes before this source reads.
        other = Notifier(engine, sqlite_retention=0.0)
        assert isinstance(other.dialect, SQLiteDialect)
        assert other.dialect.prune() == 3
        other.dialect.close()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO item (id) VALUES (4)"))
        read, write = os.pipe()
        with caplog.at_level(logging.WARNING, logger="sqlnotify"):
            got = wait_until(lambda: source.wait(0.05, read), 10, "the row after the gap")
        os.close(read)
        os.close(write)
        assert [json.loads(n.payload)["row"]["id"] for n in got] == [4]
        assert source.reader.missed == 3 and source.reader.gaps == 1
        assert gaps == [(1, 3)]
        assert "positions 1 to 3 (3 rows) were removed" in caplog.text
    finally:
        source.close()
        dialect.close()


def test_install_waits_for_the_lock_then_says_why(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier]
) -> None:
    from sqlnotify.exceptions import SQLNotifyException

    holder = python(HOLDER, sqlite_path, "IMMEDIATE")
    try:
        read_line(holder, "locked")
        n = Notifier(engine, sqlite_busy_timeout=0.2)
        notifiers.append(n)
        n.watch("item", "insert")
        with pytest.raises(SQLNotifyException, match="sqlite_busy_timeout"):
            n.start()
        assert not n.is_running
    finally:
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        finish(holder)
    # Once the lock is gone, the same notifier starts.
    n.start()
    assert [s.state for s in n.install_states] == ["installed"]
