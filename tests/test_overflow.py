"""Large payloads on PostgreSQL: the overflow table, re-reads by key, retention, notify()."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from sqlnotify import Notifier, SQLNotifyPayloadSizeError
from sqlnotify.dialects.postgresql import MAX_PAYLOAD
from sqlnotify.dialects.postgresql.sql import OVERFLOW_TABLE
from sqlnotify.testing import EventRecorder, wait_until

pytestmark = pytest.mark.postgresql

# (character, its UTF-8 width): text made of them reaches an exact byte size.
WIDE = [("é", 2), ("€", 3), ("😀", 4)]
SIZES = [MAX_PAYLOAD, MAX_PAYLOAD + 1]  # 7999 fits, 8000 does not


def make_table(engine: sa.Engine, schema: str, name: str = "doc") -> sa.Table:
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text),
        sa.Column("note", sa.Text),
        schema=schema,
    )
    table.create(engine)
    return table


def text_of(size: int, char: str, width: int) -> str:
    """Text of exactly ``size`` UTF-8 bytes, ending in as many ``char`` as fit."""
    count, rest = divmod(size, width)
    text = "a" * rest + char * count
    assert len(text.encode("utf-8")) == size
    return text


def trigger_payload_size(engine: sa.Engine, row_id: int, body: str) -> int:
    """The size of the payload the trigger builds for a row (the same SQL expression)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT octet_length('{\"ts\":' || extract(epoch from clock_timestamp())"
                    " || ',\"row\":' || json_build_object('id', :id, 'body', :body)::text"
                    " || '}')"
                ),
                {"id": row_id, "body": body},
            ).scalar_one()
        )


def body_for_trigger(engine: sa.Engine, row_id: int, target: int, char: str, width: int) -> str:
    base = trigger_payload_size(engine, row_id, "")
    body = text_of(target - base, char, width)
    assert trigger_payload_size(engine, row_id, body) == target
    return body


def overflow_rows(engine: sa.Engine, schema: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}"."{OVERFLOW_TABLE}"').scalar_one()
        )


def boundary_rows(engine: sa.Engine) -> dict[int, str]:
    """Bodies for ids 1..6 whose payloads are 7999 and 8000 bytes, with 2-, 3-, 4-byte text."""
    rows = {}
    row_id = 0
    for char, width in WIDE:
        for size in SIZES:
            row_id += 1
            rows[row_id] = body_for_trigger(engine, row_id, size, char, width)
    return rows


def started(
    notifiers: list[Notifier],
    engine: sa.Engine,
    setup: Callable[[Notifier], None],
    **options: float,
) -> Notifier:
    notifier = Notifier(engine, **options)
    setup(notifier)
    notifiers.append(notifier)
    notifier.start()
    return notifier


def test_rows_around_the_limit_with_overflow_table(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"], use_overflow_table=True)
        n.subscribe(table, "insert")(rec)

    notifier = started(notifiers, pg_engine, setup)
    rows = boundary_rows(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "body": b} for i, b in rows.items()])
    events = {e.id: e for e in rec.wait_for(len(rows), timeout=10)}
    for row_id, body in rows.items():
        assert events[row_id].extra_columns["body"] == body
        assert events[row_id].status == "complete"
    # Only the three 8000-byte payloads went through the table.
    assert overflow_rows(pg_engine, schema) == 3
    assert notifier.stats.overflow_fetched == 3
    assert notifier.health()["large_fetched"] == 3
    assert notifier.stats.dropped == 0


def test_rows_around_the_limit_without_overflow_are_reread(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"])
        n.subscribe(table, "insert")(rec)

    notifier = started(notifiers, pg_engine, setup)
    rows = boundary_rows(pg_engine)
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        with pg_engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "body": b} for i, b in rows.items()])
        events = {e.id: e for e in rec.wait_for(len(rows), timeout=10)}
    for row_id, body in rows.items():
        assert events[row_id].extra_columns["body"] == body
        # Odd ids are 7999 bytes (sent whole), even ids 8000 (sent by key, re-read).
        assert events[row_id].status == ("complete" if row_id % 2 else "hydrated")
    assert notifier.stats.hydrated == 3
    assert notifier.health()["hydrated"] == 3
    warnings = [r for r in caplog.records if "use_overflow_table" in r.getMessage()]
    assert len(warnings) == 1, "the advice is logged once per watch, not per row"
    assert "body" not in warnings[0].getMessage()


def test_reread_sees_the_row_as_it_is_or_reports_it_gone(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    inserts, updates, deletes = EventRecorder(), EventRecorder(), EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body", "note"])
        n.watch(table, "update", extra_columns=["body", "note"])
        n.watch(table, "delete", extra_columns=["body", "note"])
        n.subscribe(table, "insert")(inserts)
        n.subscribe(table, "update")(updates)
        n.subscribe(table, "delete")(deletes)

    started(notifiers, pg_engine, setup)
    big = "x" * 9000
    # Notifications are delivered at commit, after the whole transaction ran:
    # row 1 is changed again and row 2 deleted before anyone can re-read them.
    with pg_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 1, "body": big}, {"id": 2, "body": big}])
        conn.execute(table.update().where(table.c.id == 1).values(note="later"))
        conn.execute(table.delete().where(table.c.id == 2))
    got = {e.id: e for e in inserts.wait_for(2, timeout=10)}
    assert got[1].status == "hydrated"
    assert dict(got[1].extra_columns) == {"body": big, "note": "later"}
    assert got[2].status == "row_gone"
    assert dict(got[2].extra_columns) == {}
    assert got[2].id == 2
    (update,) = updates.wait_for(1, timeout=10)
    assert (update.id, update.status, update.extra_columns["note"]) == (1, "hydrated", "later")
    # The deleted row of a DELETE cannot be read back: keys only, "row_gone".
    (delete,) = deletes.wait_for(1, timeout=10)
    assert (delete.id, delete.status, dict(delete.extra_columns)) == (2, "row_gone", {})


def test_several_listeners_each_get_every_overflowed_event(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    recorders = [EventRecorder() for _ in range(3)]
    for rec in recorders:

        def setup(n: Notifier, rec: EventRecorder = rec) -> None:
            n.watch(table, "insert", extra_columns=["body", "note"], use_overflow_table=True)
            n.subscribe(table, "insert")(rec)

        started(notifiers, pg_engine, setup)
    bodies = {i: f"{i}" + "ü" * (4000 + i) for i in range(1, 6)}
    with pg_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "body": b, "note": "n"} for i, b in bodies.items()])
    for rec in recorders:
        events = rec.wait_for(len(bodies), timeout=10)
        assert {e.id: e.extra_columns["body"] for e in events} == bodies
        assert all(e.status == "complete" for e in events)
    assert overflow_rows(pg_engine, schema) == len(bodies)


def test_retention_prunes_by_itself(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"], use_overflow_table=True)
        n.subscribe(table, "insert")(rec)

    started(
        notifiers,
        pg_engine,
        setup,
        overflow_retention=600,
        overflow_prune_interval=0.1,
        overflow_prune_batch=7,
    )
    ovf = f'"{schema}"."{OVERFLOW_TABLE}"'
    with pg_engine.begin() as conn:
        conn.execute(table.insert().values(id=1, body="y" * 9000))
    (event,) = rec.wait_for(1, timeout=10)
    assert event.extra_columns["body"] == "y" * 9000
    # 30 payloads stored two hours ago: several bounded rounds remove them all.
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {ovf} (channel, payload, created_at) SELECT 'old', '{{}}',"
            " now() - interval '2 hours' FROM generate_series(1, 30)"
        )
    wait_until(lambda: overflow_rows(pg_engine, schema) == 1, 15, "old payloads pruned")
    with pg_engine.connect() as conn:
        (channel,) = conn.exec_driver_sql(f"SELECT channel FROM {ovf}").scalars()
    assert channel == event.channel, "the recent payload is kept for the retention period"


def test_short_retention_empties_the_table(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"], use_overflow_table=True)
        n.subscribe(table, "insert")(rec)

    started(notifiers, pg_engine, setup, overflow_retention=1, overflow_prune_interval=0.2)
    with pg_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "body": "z" * 9000} for i in (1, 2)])
    rec.wait_for(2, timeout=10)
    wait_until(lambda: overflow_rows(pg_engine, schema) == 0, 15, "payloads pruned")


def test_a_missing_overflow_table_never_fails_the_write(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"], use_overflow_table=True)
        n.subscribe(table, "insert")(rec)

    notifier = started(notifiers, pg_engine, setup)
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE "{schema}"."{OVERFLOW_TABLE}"')
    with pg_engine.begin() as conn:
        conn.execute(table.insert().values(id=1, body="q" * 9000))
    (event,) = rec.wait_for(1, timeout=10)
    assert (event.status, event.extra_columns["body"]) == ("hydrated", "q" * 9000)
    notifier.stop()
    notifier.install()  # puts the table back although the trigger is unchanged
    assert overflow_rows(pg_engine, schema) == 0


def test_a_writer_without_rights_on_the_overflow_table_sends_whole_rows(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"], use_overflow_table=True)
        n.subscribe(table, "insert")(rec)

    started(notifiers, pg_engine, setup)
    role = f"sqlnotify_writer_{schema}"
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}"')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        conn.exec_driver_sql(f'GRANT INSERT ON "{schema}".doc TO "{role}"')
    try:
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
            conn.execute(table.insert().values(id=1, body="r" * 9000))
        (event,) = rec.wait_for(1, timeout=10)
        # The trigger function writes the overflow table as the installing role.
        assert (event.status, event.extra_columns["body"]) == ("complete", "r" * 9000)
        assert overflow_rows(pg_engine, schema) == 1
    finally:
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')


def custom_payload(notifier: Notifier, table: sa.Table, target: int, char: str, width: int) -> dict:
    _, probe = notifier.encode_custom(table, "insert", {"id": 1, "body": ""})
    base = len(probe.encode("utf-8"))
    payload = {"id": 1, "body": text_of(target - base, char, width)}
    _, body = notifier.encode_custom(table, "insert", payload, use_overflow_table=True)
    assert len(body.encode("utf-8")) == target
    return payload


@pytest.mark.parametrize(("char", "width"), WIDE)
def test_notify_around_the_limit(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier], char: str, width: int
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"])
        n.subscribe(table, "insert")(rec)

    notifier = started(notifiers, pg_engine, setup)
    fits = custom_payload(notifier, table, MAX_PAYLOAD, char, width)
    over = custom_payload(notifier, table, MAX_PAYLOAD + 1, char, width)

    with pytest.raises(SQLNotifyPayloadSizeError) as info:
        notifier.notify(table, "insert", over)
    assert (info.value.size, info.value.limit) == (MAX_PAYLOAD + 1, MAX_PAYLOAD)
    assert "8000 bytes" in str(info.value) and "7999 bytes" in str(info.value)

    notifier.notify(table, "insert", fits)
    notifier.notify(table, "insert", fits, use_overflow_table=True)  # fits: sent directly
    notifier.notify(table, "insert", over, use_overflow_table=True)
    events = rec.wait_for(3, timeout=10)
    assert [e.extra_columns["body"] for e in events] == [fits["body"], fits["body"], over["body"]]
    assert all(e.custom and e.status == "complete" for e in events)
    assert len(events) == 3, "the refused payload was not sent"
    assert overflow_rows(pg_engine, schema) == 1
    with pg_engine.connect() as conn:
        stored = conn.exec_driver_sql(f'SELECT payload FROM "{schema}"."{OVERFLOW_TABLE}"')
        assert json.loads(stored.scalar_one())["row"] == over


def test_bad_overflow_option_is_named(pg_engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="overflow_retention=-1 is invalid"):
        Notifier(pg_engine, overflow_retention=-1)


def test_bad_or_expired_references_are_dropped_and_counted(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()
    dropped: list[str] = []

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"], use_overflow_table=True)
        n.subscribe(table, "insert")(rec)

    notifier = started(notifiers, pg_engine, setup)
    from sqlnotify import signals

    def on_drop(sender: object, channel: str, reason: str) -> None:
        dropped.append(reason)

    signals.notification_dropped.connect(on_drop, sender=notifier)
    try:
        channel = notifier.watches[0].channel
        with pg_engine.begin() as conn:
            for payload in ('"ovf"', '{"ts": 1, "ovf": "x"}', '{"ts": 1, "ovf": 987654}'):
                conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
            conn.execute(table.insert().values(id=1, body="w" * 9000))
        (event,) = rec.wait_for(1, timeout=10)
        assert event.extra_columns["body"] == "w" * 9000
        wait_until(lambda: notifier.stats.dropped == 3, 10, "three drops")
        assert "undecodable payload" in dropped[0]
        assert "not a valid reference" in dropped[1]
        assert "987654" in dropped[2] and "no longer stored" in dropped[2]
    finally:
        signals.notification_dropped.disconnect(on_drop, sender=notifier)


def test_pruning_starts_with_the_first_overflowed_notify(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"])
        n.subscribe(table, "insert")(rec)

    def maintenance_threads() -> int:
        return sum(t.name == "sqlnotify-maintenance" for t in threading.enumerate())

    before = maintenance_threads()
    notifier = started(
        notifiers, pg_engine, setup, overflow_retention=1, overflow_prune_interval=0.2
    )
    # One maintenance thread from the start (the trigger registry's upkeep);
    # pruning starts with the first stored payload.
    assert maintenance_threads() == before + 1
    assert notifier._prune_due is None, "nothing to prune yet"
    notifier.notify(table, "insert", {"id": 1, "body": "n" * 9000}, use_overflow_table=True)
    (event,) = rec.wait_for(1, timeout=10)
    assert event.extra_columns["body"] == "n" * 9000
    assert maintenance_threads() == before + 1
    wait_until(lambda: overflow_rows(pg_engine, schema) == 0, 15, "the payload pruned")
    notifier.stop()
    assert maintenance_threads() == before


def test_anotify_takes_the_same_path(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema)
    rec = EventRecorder()

    def setup(n: Notifier) -> None:
        n.watch(table, "insert", extra_columns=["body"])
        n.subscribe(table, "insert")(rec)

    notifier = started(notifiers, pg_engine, setup)
    big = {"id": 7, "body": "ø" * 5000}
    with pytest.raises(SQLNotifyPayloadSizeError):
        asyncio.run(notifier.anotify(table, "insert", big))
    asyncio.run(notifier.anotify(table, "insert", big, use_overflow_table=True))
    (event,) = rec.wait_for(1, timeout=10)
    assert (event.id, event.extra_columns["body"], event.custom) == (7, big["body"], True)
    assert overflow_rows(pg_engine, schema) == 1
