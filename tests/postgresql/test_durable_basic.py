"""Durable watches, gap signals and health against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from support.faults import GapRecorder, gaps_fixture, insert  # noqa: F401
from support.watching import Watch, Watched, make_table

from sqlnotify import Notifier, signals
from sqlnotify.testing import EventRecorder, kill_listener_connection, wait_until


def test_durable_events_carry_positions(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch
) -> None:
    rec = watched(pg_schema_engine, table, extra_columns=["note"], durable=True).events
    insert(pg_schema_engine, table, range(1, 6))
    events = rec.wait_for(5, timeout=10)
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    positions = [e.position for e in events]
    assert all(isinstance(p, int) for p in positions)
    assert len(set(positions)) == 5
    assert events[0].extra_columns == {"note": "x"}
    with pg_schema_engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT id FROM sqlnotify_journal ORDER BY id").scalars()
        assert sorted(stored) == sorted(positions)


def test_large_durable_row_arrives_whole(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch
) -> None:
    rec = watched(pg_schema_engine, table, extra_columns=["note"], durable=True).events
    insert(pg_schema_engine, table, [1], note="y" * 20000)
    (event,) = rec.wait_for(1, timeout=10)
    assert event.extra_columns["note"] == "y" * 20000
    assert event.status == "complete"


def test_gap_after_reconnect_for_plain_watches(
    pg_schema_engine: sa.Engine,
    table: sa.Table,
    notifiers: list[Notifier],
    fast_reconnect: None,
    gaps: GapRecorder,
) -> None:
    other = make_table(pg_schema_engine, name="other")
    n = Notifier(pg_schema_engine).watch(table, "insert").watch(other, "insert", durable=True)
    notifiers.append(n)
    n.start()
    before = dt.datetime.now(dt.timezone.utc)
    kill_listener_connection(n)
    wait_until(lambda: len(gaps) >= 1, timeout=10, message="a gap signal")
    gap = gaps.gaps[0]
    assert gap["reason"] == "disconnected"
    assert gap["channels"] == (n.watches[0].channel,)
    assert gap["start"].tzinfo is not None and gap["end"].tzinfo is not None
    assert gap["start"] <= gap["end"]
    assert gap["end"] >= before
    health = n.health()
    assert health["gaps"] == 1 and health["reconnects"] == 1 and health["connected"]


def test_durable_catch_up_after_disconnect(
    pg_schema_engine: sa.Engine,
    table: sa.Table,
    watched: Watch,
    fast_reconnect: None,
    gaps: GapRecorder,
) -> None:
    n, rec = watched(pg_schema_engine, table, start=False, durable=True)
    written = threading.Event()

    def write_while_down(sender: Any, **kw: Any) -> None:
        # Runs on the listener thread before it reconnects: these commits
        # can only reach the receivers through the journal.
        if not written.is_set():
            insert(pg_schema_engine, table, range(1, 101))
            written.set()

    signals.listener_disconnected.connect(write_while_down, sender=n)
    try:
        n.start()
        kill_listener_connection(n)
        events = rec.wait_for(100, timeout=10)
    finally:
        signals.listener_disconnected.disconnect(write_while_down)
    assert sorted(e.id for e in events) == list(range(1, 101))
    assert len(gaps) == 0  # durable watches need no resync


def test_consumer_resumes_after_restart(
    pg_schema_engine: sa.Engine, table: sa.Table, consumer: Callable[..., Watched]
) -> None:
    make = functools.partial(consumer, "resumer")

    n1, rec1 = make(start=True)
    insert(pg_schema_engine, table, range(1, 11))
    rec1.wait_for(10, timeout=10)
    n1.stop()
    insert(pg_schema_engine, table, range(11, 21))  # nobody listens
    n2, rec2 = make()
    n2.start()
    insert(pg_schema_engine, table, range(21, 31))
    wait_until(
        lambda: set(range(11, 31)) <= {e.id for e in list(rec2.events)}, timeout=10, message="all"
    )
    # At least once: a row delivered before the stop may come again (when a
    # transaction elsewhere kept the saved position from passing it), always
    # with the position it had.
    first = {e.id: e.position for e in rec1.events}
    for e in rec2.events:
        assert e.id in range(11, 31) or first[e.id] == e.position


def test_second_process_with_same_consumer_is_refused(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    from sqlnotify import SQLNotifyListenerError

    table = make_table(pg_schema_engine)
    n1 = Notifier(pg_schema_engine, consumer="solo").watch(table, "insert", durable=True)
    notifiers.append(n1)
    n1.start()
    n2 = Notifier(pg_schema_engine, consumer="solo").watch(table, "insert", durable=True)
    with pytest.raises(SQLNotifyListenerError, match="'solo' is already active"):
        n2.start(timeout=10)


def test_fresh_notifier_skips_history(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch
) -> None:
    n0 = Notifier(pg_schema_engine).watch(table, "insert", durable=True)
    n0.install()
    insert(pg_schema_engine, table, range(1, 6))  # journalled before anyone listens
    n, rec = watched(pg_schema_engine, table, durable=True)
    insert(pg_schema_engine, table, [6])
    events = rec.wait_for(1, timeout=10)
    wait_until(lambda: n._intake and not n._intake.feed.pending, timeout=10)  # type: ignore[union-attr]
    assert [e.id for e in rec.events] == [6], events


def test_health(pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch) -> None:
    n, rec = watched(pg_schema_engine, table)
    insert(pg_schema_engine, table, range(1, 21))
    rec.wait_for(20, timeout=10)
    wait_until(lambda: n.health()["dispatched"] == 20, timeout=10)
    h = n.health()
    assert h["connected"] is True and h["running"] is True
    assert h["since"].tzinfo is not None
    assert h["received"] == 20 and h["failed"] == 0 and h["queue_depth"] == 0
    assert h["lag_p50"] is not None and 0 <= h["lag_p50"] <= h["lag_p99"] < 60
    assert h["server_queue_usage"] is not None and 0.0 <= h["server_queue_usage"] < 0.5


@pytest.mark.parametrize("per_statement", [False, True])
def test_durable_insert_update_delete(
    pg_schema_engine: sa.Engine, table: sa.Table, notifiers: list[Notifier], per_statement: bool
) -> None:
    insert(pg_schema_engine, table, range(1, 4))
    n = (
        Notifier(pg_schema_engine, pg_journal_per_statement=per_statement)
        .watch(table, "insert", durable=True)
        .watch(table, "update", extra_columns=["note"], durable=True)
        .watch(table, "update", trigger_columns=["note"], channel_label="changed", durable=True)
        .watch(table, "delete", extra_columns=["note"], durable=True)
    )
    notifiers.append(n)
    inserts, updates, changed, deletes = (EventRecorder() for _ in range(4))
    n.subscribe(table, "insert")(inserts)
    n.subscribe(table, "update")(updates)
    n.subscribe(table, "update", channel_label="changed")(changed)
    n.subscribe(table, "delete")(deletes)
    n.start()
    insert(pg_schema_engine, table, range(10, 510))  # one statement of 500 rows
    insert(pg_schema_engine, table, [600], note="z" * 9000)  # too large to notify
    assert sorted(e.id for e in inserts.wait_for(501, timeout=10)) == [*range(10, 510), 600]
    assert len({e.position for e in inserts.events}) == 501
    with pg_schema_engine.begin() as conn:
        conn.execute(table.update().where(table.c.id <= 2).values(note="new"))
        conn.execute(table.update().where(table.c.id == 3).values(note="x"))  # the same
        conn.execute(table.delete().where(table.c.id == 1))
    got = updates.wait_for(3, timeout=10)
    assert sorted((e.id, e.extra_columns["note"]) for e in got) == [
        (1, "new"),
        (2, "new"),
        (3, "x"),
    ]
    assert sorted(e.id for e in changed.wait_for(2, timeout=10)) == [1, 2]
    (deleted,) = deletes.wait_for(1, timeout=10)
    assert (deleted.id, deleted.extra_columns["note"]) == (1, "new")
    assert all(e.position is not None for e in [*got, *changed.events, deleted])


def test_journal_window_reads_in_id_order_across_pages(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window is the rows visible now and not in the previous snapshot, by id."""
    from sqlnotify.dialects.postgresql.journal import PostgresJournal, SnapshotPosition

    monkeypatch.setattr(PostgresJournal, "PAGE", 2)
    table = make_table(pg_schema_engine)
    n = Notifier(pg_schema_engine).watch(table, "insert", durable=True)
    n.install()
    store = n.dialect.journal()
    store.ensure()
    channel = n.watches[0].channel
    with pg_schema_engine.begin() as conn:
        for xid in (10, 9, 100, 99):  # long finished transactions, ids 1 to 4
            conn.exec_driver_sql(
                "INSERT INTO sqlnotify_journal (xid, channel, payload)"
                f" VALUES ('{xid}', '{channel}', '{{}}')"
            )
        ids = list(conn.exec_driver_sql("SELECT id FROM sqlnotify_journal ORDER BY id").scalars())
    try:

        def read_all(position: SnapshotPosition, limit: int) -> list[int]:
            got: list[int] = []
            while True:
                rows = store.read(position, [channel], limit)
                got += [p.after for p, _, payload in rows if payload is not None]
                if not rows or rows[-1][0] == position:
                    return got
                position = rows[-1][0]
                if position.window is None:
                    return got

        assert read_all(SnapshotPosition("1:1:"), 3) == ids
        # Transaction 9 was in progress in the previous snapshot, 10 had ended,
        # 99 and 100 had not started.
        assert read_all(SnapshotPosition("5:50:9"), 1) == ids[1:]
    finally:
        n.dialect.close()
