"""Statement mode (``watch(..., per_statement=True)``) delivers what row triggers deliver.

Each test watches one table twice, from two notifiers: row by row, and once
per statement, with the same watches otherwise; every statement's events
must be equal (all but the timestamp, the channel and the journal position).
"""

from __future__ import annotations

import json
import select
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from support.watching import keyed_table

from sqlnotify import ChangeEvent, Notifier, signals
from sqlnotify.dialects.postgresql import listener_dsn
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder, wait_until

TIMEOUT = 60.0


def typed_table(engine: sa.Engine) -> sa.Table:
    table = keyed_table(
        "item",
        sa.Column("a", sa.Integer),
        sa.Column("b", sa.Text),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("doc", sa.JSON),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("note", sa.Text),
    )
    table.create(engine)
    return table


def watches(table: sa.Table) -> dict[tuple[str, str | None], dict[str, Any]]:
    """What each test watches: conditions, include_old, trigger_columns."""
    extra = ["a", "b", "amount", "doc", "at", "note"]
    return {
        ("insert", None): {"extra_columns": extra, "where": table.c.a != 3},
        ("update", None): {"extra_columns": extra, "include_old": True},
        ("update", "trig"): {
            "extra_columns": ["a", "b"],
            "trigger_columns": ["b"],
            "where": table.c.a > 1,
        },
        ("delete", None): {"extra_columns": ["a", "note"], "where": table.c.a != 4},
    }


class Pair:
    """Two notifiers on one table: row triggers, and statement triggers."""

    def __init__(self, engine: sa.Engine, table: sa.Table, notifiers: list[Notifier], **kw: Any):
        self.recorders: dict[bool, dict[tuple[str, str | None], EventRecorder]] = {}
        for per_statement in (False, True):
            n = Notifier(engine)
            notifiers.append(n)
            recs = self.recorders[per_statement] = {}
            for (op, label), spec in watches(table).items():
                n.watch(table, op, channel_label=label, per_statement=per_statement, **spec, **kw)
                recs[(op, label)] = EventRecorder()
                n.subscribe(table, op, channel_label=label)(recs[(op, label)])
            n.start()

    def check(self, expected: dict[tuple[str, str | None], int]) -> list[ChangeEvent]:
        """Wait for ``expected`` events of each watch on both sides; compare them.

        Returns the statement mode's events, all watches' in turn.
        """
        got = []
        for key, count in expected.items():
            rows, stmts = (self.recorders[s][key] for s in (False, True))
            rows.wait_for(count, timeout=TIMEOUT)
            stmts.wait_for(count, timeout=TIMEOUT)
            assert len(rows) == len(stmts) == count, key
            assert [_plain(e) for e in stmts.events] == [_plain(e) for e in rows.events], key
            got += stmts.events
            rows.clear()
            stmts.clear()
        return got


def _plain(event: ChangeEvent) -> dict[str, Any]:
    data = event.to_dict()
    for key in ("timestamp", "channel", "position"):
        data.pop(key)
    return data


def _run(engine: sa.Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


@pytest.mark.parametrize("durable", [False, True], ids=["notify", "durable"])
@pytest.mark.parametrize("count", [1, 100, 10_000])
def test_same_events_as_row_triggers(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier], durable: bool, count: int
) -> None:
    table = typed_table(pg_schema_engine)
    pair = Pair(pg_schema_engine, table, notifiers, durable=durable)
    g = range(1, count + 1)
    _run(
        pg_schema_engine,
        "INSERT INTO item SELECT g, g % 10, 'b' || g, g * 1.25, json_build_object('g', g),"
        " timestamptz '2026-01-01 00:00+00' + g * interval '1 minute', NULL"
        " FROM generate_series(1, :n) g",
        n=count,
    )
    pair.check({("insert", None): sum(1 for i in g if i % 10 != 3)})
    # b changes for odd ids only (trigger_columns); doc for some; a for all.
    _run(
        pg_schema_engine,
        "UPDATE item SET a = a + 1, b = CASE WHEN id % 2 = 1 THEN b || 'x' ELSE b END,"
        " doc = CASE WHEN id % 5 = 0 THEN json_build_object('g', id, 'h', 1) ELSE doc END",
    )
    pair.check(
        {
            ("update", None): count,
            ("update", "trig"): sum(1 for i in g if i % 2 == 1 and i % 10 + 1 > 1),
        }
    )
    # An UPDATE of the key: the rows are still paired with their old versions.
    _run(pg_schema_engine, "UPDATE item SET id = -id WHERE id % 3 = 0")
    pair.check({("update", None): sum(1 for i in g if i % 3 == 0), ("update", "trig"): 0})
    _run(pg_schema_engine, "DELETE FROM item")
    pair.check({("delete", None): sum(1 for i in g if i % 10 + 1 != 4)})


#: The row trigger's payload of the insert watch for ids 1 to 9, all but the note.
EDGE = 7999 - len(
    '{"ts":1796193033.650454,"row":{"id" : 1, "a" : 1, "b" : "b1", "amount" : "1.25",'
    ' "doc" : {"g" : 1}, "at" : "2026-01-01T00:01:00+00:00", "note" : ""}}'
)
INSERT_SQL = (
    "INSERT INTO item SELECT g, g % 10, 'b' || g, g * 1.25, json_build_object('g', g),"
    " timestamptz '2026-01-01 00:00+00' + g * interval '1 minute', {note}"
    " FROM generate_series(:first, :last) g"
)


def test_rows_at_the_limit(pg_schema_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    """Rows whose row-trigger payload is 7,995 to 7,999 bytes travel whole, from 8,000 by key."""
    table = typed_table(pg_schema_engine)
    pair = Pair(pg_schema_engine, table, notifiers)
    note = "repeat('w', :edge + g - 5)"
    _run(pg_schema_engine, INSERT_SQL.format(note=note), first=1, last=5, edge=EDGE)
    got = pair.check({("insert", None): 4})  # id 3 fails the watch's where=
    assert [e.status for e in got] == ["complete"] * 4
    _run(pg_schema_engine, INSERT_SQL.format(note=note), first=6, last=9, edge=EDGE)
    got = pair.check({("insert", None): 4})
    assert [e.status for e in got] == ["hydrated"] * 4


@pytest.mark.parametrize("overflow", [False, True], ids=["by-key", "overflow-table"])
def test_rows_too_large_for_a_notification(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier], overflow: bool
) -> None:
    table = typed_table(pg_schema_engine)
    pair = Pair(pg_schema_engine, table, notifiers, use_overflow_table=overflow)
    note = (
        "CASE WHEN g < 10 THEN repeat('w', :edge + g - 5)"  # around the limit
        " WHEN g % 10 = 0 THEN repeat('v', 9000) ELSE 'small' END"
    )
    _run(pg_schema_engine, INSERT_SQL.format(note=note), first=1, last=100, edge=EDGE)
    pair.check({("insert", None): 90})
    _run(pg_schema_engine, "UPDATE item SET a = a + 1, b = b || 'x' WHERE id % 2 = 0")
    pair.check({("update", None): 50, ("update", "trig"): 40})
    _run(pg_schema_engine, "DELETE FROM item")
    pair.check({("delete", None): 100})


@pytest.mark.parametrize(
    "count, note, sql, most",
    [
        (10_000, lambda i: f"note {i}", "'note ' || g", 100),
        # Rows of 0 to 3,000 bytes: sliced by the widest, each notification within the limit.
        (300, lambda i: "m" * (i * 37 % 3000), "repeat('m', g * 37 % 3000)", 300),
    ],
    ids=["narrow", "mixed-widths"],
)
def test_statement_rows_share_notifications(
    pg_schema_engine: sa.Engine,
    notifiers: list[Notifier],
    pg_url: str,
    count: int,
    note: Callable[[int], str],
    sql: str,
    most: int,
) -> None:
    table = keyed_table("item", sa.Column("note", sa.Text))
    table.create(pg_schema_engine)
    n = Notifier(pg_schema_engine).watch(
        table, "insert", extra_columns=["note"], per_statement=True
    )
    notifiers.append(n)
    n.install()
    conn = psycopg2.connect(**listener_dsn(sa.make_url(pg_url)))
    try:
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        conn.cursor().execute(f'LISTEN "{n.watches[0].channel}"')
        _run(
            pg_schema_engine,
            f"INSERT INTO item SELECT g, {sql} FROM generate_series(1, :n) g",
            n=count,
        )
        payloads = list(_notifications(conn, count))
    finally:
        conn.close()
    assert len(payloads) < most
    assert all(len(p.encode()) <= 7999 for p in payloads)
    rows = [row for p in payloads for row in json.loads(p)["rows"]]
    assert rows == [[i, note(i)] for i in range(1, count + 1)]


def _notifications(conn: Any, rows: int) -> Iterator[str]:
    """The payloads that arrive on ``conn`` until they hold ``rows`` rows (bounded wait)."""
    deadline = time.monotonic() + TIMEOUT
    seen = 0
    while seen < rows:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {seen} of {rows} rows arrived"
        select.select([conn], [], [], min(remaining, 0.5))
        conn.poll()
        while conn.notifies:
            payload = conn.notifies.pop(0).payload
            seen += len(json.loads(payload)["rows"])
            yield payload


def test_malformed_rows_are_dropped(pg_schema_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = keyed_table("item", sa.Column("note", sa.Text))
    table.create(pg_schema_engine)
    n = Notifier(pg_schema_engine).watch(
        table, "insert", extra_columns=["note"], per_statement=True
    )
    notifiers.append(n)
    dropped: list[str] = []
    recorder = EventRecorder()
    n.subscribe(table, "insert")(recorder)

    def on_drop(sender: Any, channel: str, reason: str) -> None:
        dropped.append(reason)

    signals.notification_dropped.connect(on_drop)
    try:
        n.start()
        channel = n.watches[0].channel
        _run(pg_schema_engine, "SELECT pg_notify(:c, :p)", c=channel, p='{"ts":1,"rows":[[1]]}')
        _run(pg_schema_engine, "INSERT INTO item VALUES (7, 'ok')")
        (event,) = recorder.wait_for(1, timeout=TIMEOUT)
        assert event.id == 7 and event.extra_columns == {"note": "ok"}
        wait_until(lambda: dropped, timeout=TIMEOUT, message="the malformed payload dropped")
        assert dropped == ["undecodable payload (ValueError)"]
    finally:
        signals.notification_dropped.disconnect(on_drop)


def _trigger_kinds(engine: sa.Engine, table: str) -> dict[str, tuple[bool, str]]:
    """``{trigger: (fires per row, its function's comment)}`` of ``table``."""
    sql = (
        "SELECT t.tgname, (t.tgtype & 1) = 1, obj_description(t.tgfoid, 'pg_proc')"
        " FROM pg_trigger t WHERE t.tgrelid = CAST(:t AS regclass) AND NOT t.tgisinternal"
    )
    with engine.connect() as conn:
        return {
            name: (row, comment) for name, row, comment in conn.execute(sa.text(sql), {"t": table})
        }


def test_mode_is_part_of_the_spec(pg_schema_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = keyed_table("item", sa.Column("note", sa.Text))
    table.create(pg_schema_engine)

    def make(per_statement: bool) -> Notifier:
        return Notifier(pg_schema_engine).watch(
            table, "update", include_old=True, per_statement=per_statement
        )

    rows, stmts = make(False), make(True)
    notifiers += [rows, stmts]
    rows.install()
    stmts.install()
    assert rows.watches[0].channel != stmts.watches[0].channel
    kinds = _trigger_kinds(pg_schema_engine, "item")
    per_row, comment = kinds[stmts.watches[0].channel]
    assert not per_row and json.loads(comment.split(":", 1)[1])["per_statement"] is True
    assert kinds[rows.watches[0].channel][0] is True
    (status,) = [s for s in stmts.dialect.status() if s["channel"] == stmts.watches[0].channel]
    assert status["state"] == "installed" and status["spec"]["per_statement"] is True


def test_notifier_option_switches_durable_triggers_in_place(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    table = keyed_table("item", sa.Column("note", sa.Text))
    table.create(pg_schema_engine)
    states = []
    for per_statement in (False, True, True):
        n = Notifier(pg_schema_engine, pg_journal_per_statement=per_statement)
        n.watch(table, "update", durable=True)
        notifiers.append(n)
        states.append([s.state for s in n.install()])
        (kind,) = _trigger_kinds(pg_schema_engine, "item").values()
        assert kind[0] is not per_statement
    assert states == [["installed"], ["replaced"], ["unchanged"]]


@pytest.mark.parametrize(
    "column, operation, message",
    [
        ("note", "truncate", "per_statement applies to INSERT, UPDATE and DELETE"),
        ("sqlnotify_n", "update", "has a column named 'sqlnotify_n'"),
    ],
)
def test_refused(pg_schema_engine: sa.Engine, column: str, operation: str, message: str) -> None:
    table = keyed_table("item", sa.Column(column, sa.Text))
    table.create(pg_schema_engine)
    with pytest.raises(SQLNotifyConfigurationError, match=message):
        Notifier(pg_schema_engine).watch(table, operation, per_statement=True).install()


def test_a_statement_the_trigger_cannot_read_still_writes(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    table = keyed_table("item", sa.Column("note", sa.Text))
    table.create(pg_schema_engine)
    n = Notifier(pg_schema_engine).watch(
        table, "insert", extra_columns=["note"], per_statement=True
    )
    notifiers.append(n)
    recorder = EventRecorder()
    n.subscribe(table, "insert")(recorder)
    n.start()
    _run(pg_schema_engine, "ALTER TABLE item RENAME COLUMN note TO memo")
    _run(pg_schema_engine, "INSERT INTO item SELECT g, 'x' FROM generate_series(1, 3) g")
    (event,) = recorder.wait_for(1, timeout=TIMEOUT)
    assert event.status == "lost" and event.row == {}
    with pg_schema_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM item")).scalar_one() == 3


def test_keys_swapped_between_rows(pg_schema_engine: sa.Engine, notifiers: list[Notifier]) -> None:
    """The old and new rows pair by position: a join on the key would pair them crosswise."""
    _run(
        pg_schema_engine,
        "CREATE TABLE item (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, note text);"
        " INSERT INTO item VALUES (1, 'one'), (2, 'two')",
    )
    recorders = []
    for per_statement in (False, True):
        n = Notifier(pg_schema_engine).watch(
            "item", "update", extra_columns=["note"], include_old=True, per_statement=per_statement
        )
        notifiers.append(n)
        recorders.append(EventRecorder())
        n.subscribe("item", "update")(recorders[-1])
        n.start()
    _run(pg_schema_engine, "UPDATE item SET id = 3 - id")
    rows, stmts = (r.wait_for(2, timeout=TIMEOUT) for r in recorders)
    assert [_plain(e) for e in stmts] == [_plain(e) for e in rows]
    assert sorted((e.old["id"], e.id, e.extra_columns["note"]) for e in stmts) == [
        (1, 2, "one"),
        (2, 1, "two"),
    ]
