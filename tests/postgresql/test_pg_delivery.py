"""Delivery on PostgreSQL: receiver failures, ordering, several processes, custom payloads,
oversized rows, logging."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column
from support.pg import TIMEOUT, execute, make_notifier, model, new_base, triggers
from support.watching import Watch

from sqlnotify import Notifier, Operation, SQLNotifyPayloadSizeError, signals
from sqlnotify.testing import EventRecorder, wait_until


@pytest.fixture
def Item(pg_engine: sa.Engine, schema: str) -> Any:
    return model(
        pg_engine,
        schema,
        label=mapped_column(sa.Text, nullable=False),
        price=mapped_column(sa.Numeric(10, 2), server_default="0", nullable=False),
        seen_at=mapped_column(sa.DateTime(timezone=True), nullable=True),
    )


def items(schema: str) -> str:
    return f'"{schema}".items'


def test_a_failing_receiver_is_isolated(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, caplog: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(Item, "insert")
    before, after = EventRecorder(), EventRecorder()
    failures: list[dict[str, Any]] = []

    def boom(event: Any) -> None:
        raise RuntimeError("receiver bug")

    def on_failed(sender: Any, **kw: Any) -> None:
        failures.append({"sender": sender, **kw})

    n.subscribe(Item, "insert")(before)
    n.subscribe(Item, "insert")(boom)
    n.subscribe(Item, "insert")(after)
    signals.receiver_failed.connect(on_failed, sender=n)
    try:
        n.start()
        with caplog.at_level(logging.ERROR, logger="sqlnotify"):
            execute(pg_engine, f"INSERT INTO {items(schema)} (id, label) VALUES (1, 'a'), (2, 'b')")
            after.wait_for(2, TIMEOUT)
    finally:
        signals.receiver_failed.disconnect(on_failed, sender=n)
    assert [e.id for e in before.events] == [1, 2]
    assert [e.id for e in after.events] == [1, 2]
    assert n.stats.receiver_errors == 2
    assert [f["event"].id for f in failures] == [1, 2]
    assert all(f["sender"] is n for f in failures)
    assert all(isinstance(f["exception"], RuntimeError) for f in failures)
    assert all(f["receiver"].fn is boom for f in failures)
    logged = [r for r in caplog.records if "boom" in r.getMessage()]
    assert len(logged) == 2
    assert logged[0].exc_info is not None and "receiver bug" in str(logged[0].exc_info[1])
    # Both threads survive and keep delivering.
    assert n._listener is not None and n._listener.is_alive
    assert n._dispatcher is not None and n._dispatcher.is_alive
    execute(pg_engine, f"INSERT INTO {items(schema)} (id, label) VALUES (3, 'c')")
    assert after.wait_for(3, TIMEOUT)[-1].id == 3


def test_ten_thousand_rows_from_one_statement_arrive_in_order(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(Item, "insert", extra_columns=["label"])
    ids: list[int] = []
    done = threading.Event()

    @n.subscribe(Item, "insert")
    def collect(event: Any) -> None:
        ids.append(event.id)
        if len(ids) == 10_000:
            done.set()

    n.start()
    execute(
        pg_engine,
        f"INSERT INTO {items(schema)} (id, label)"
        " SELECT g, 'row ' || g FROM generate_series(1, 10000) g ORDER BY g",
    )
    assert done.wait(60), f"got {len(ids)} of 10000 events"
    assert ids == list(range(1, 10_001))
    assert n.stats.dropped == 0


def test_commit_order_across_transactions(
    Item: Any, pg_engine: sa.Engine, schema: str, watched: Watch
) -> None:
    """Two interleaved transactions: events follow commit order, not statement order."""
    rec = watched(pg_engine, Item).events
    with pg_engine.connect() as first, pg_engine.connect() as second:
        first.execute(sa.text(f"INSERT INTO {items(schema)} (id, label) VALUES (1, 'first')"))
        second.execute(sa.text(f"INSERT INTO {items(schema)} (id, label) VALUES (2, 'second')"))
        second.commit()
        first.commit()
    assert [e.id for e in rec.wait_for(2, TIMEOUT)] == [2, 1]


LISTENER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import sqlalchemy as sa
    from sqlnotify import Notifier
    from sqlnotify.testing import EventRecorder

    url, table, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = sa.create_engine(url)
    notifier = Notifier(engine)
    notifier.watch(table, "insert", extra_columns=["label"])
    recorder = EventRecorder()
    notifier.subscribe(table, "insert")(recorder)
    with notifier:
        print("ready", flush=True)
        events = recorder.wait_for(count, timeout=30)
        print(json.dumps([[e.id, e.extra_columns["label"]] for e in events]), flush=True)
    engine.dispose()
    """
)


def test_two_notifiers_in_two_processes_both_receive(
    Item: Any, pg_url: str, pg_engine: sa.Engine, schema: str, watched: Watch, tmp_path: Any
) -> None:
    script = tmp_path / "listen.py"
    script.write_text(LISTENER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, str(script), pg_url, f"{schema}.items", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr.read()  # type: ignore[union-attr]
        rec = watched(pg_engine, Item, extra_columns=["label"]).events
        for i in (1, 2, 3):
            execute(
                pg_engine,
                f"INSERT INTO {items(schema)} (id, label) VALUES (:i, :l)",
                {"i": i, "l": f"n{i}"},
            )
        mine = rec.wait_for(3, TIMEOUT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert json.loads(out) == [[1, "n1"], [2, "n2"], [3, "n3"]]
    assert [(e.id, e.extra_columns["label"]) for e in mine] == [(1, "n1"), (2, "n2"), (3, "n3")]


# -- custom notifications ----------------------------------------------------------------


def test_notify_delivers_a_typed_custom_payload(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(Item, "update", extra_columns=["label", "price", "seen_at"])
    n.watch(Item, "insert", channel_label="announcements")
    rec, labelled = EventRecorder(), EventRecorder()
    n.subscribe("Item", Operation.UPDATE, filters=[{"column": "id", "value": 123}])(rec)
    n.subscribe(Item, "insert", channel_label="announcements")(labelled)
    n.start()
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    n.notify(Item, Operation.UPDATE, payload={"id": 999, "label": "filtered out"})
    n.notify(
        Item,
        Operation.UPDATE,
        payload={"id": 123, "label": "hi", "price": Decimal("1.50"), "seen_at": when},
    )
    n.notify("Item", "insert", payload={"id": 456}, channel_label="announcements")
    (event,) = rec.wait_for(1, TIMEOUT)
    (other,) = labelled.wait_for(1, TIMEOUT)
    assert event.custom is True
    assert event.operation is Operation.UPDATE
    assert (event.id, event.table, event.schema) == (123, "items", schema)
    assert dict(event.extra_columns) == {"label": "hi", "price": Decimal("1.50"), "seen_at": when}
    assert isinstance(event.timestamp, dt.datetime)
    assert other.id == 456 and other.custom


def test_notify_over_the_limit_raises_before_sending(
    Item: Any, pg_engine: sa.Engine, watched: Watch
) -> None:
    n, rec = watched(pg_engine, Item, "update", extra_columns=["label"])
    with pytest.raises(SQLNotifyPayloadSizeError) as info:
        n.notify(Item, "update", payload={"id": 1, "label": "x" * 9000})
    assert info.value.limit == 7999
    assert info.value.size > 9000
    assert str(info.value.size) in str(info.value) and "use_overflow_table" in str(info.value)
    n.notify(Item, "update", payload={"id": 2, "label": "small"})
    # The first event to arrive is the small one: the large one was never sent.
    assert rec.wait_for(1, TIMEOUT)[0].id == 2
    # A payload close to the limit (the timestamp's digits vary) is sent.
    body_len = len(n.encode_custom(Item, "update", {"id": 3, "label": ""})[1].encode())
    n.notify(Item, "update", payload={"id": 3, "label": "y" * (7999 - body_len - 10)})
    assert rec.wait_for(2, TIMEOUT)[1].id == 3


def test_notify_rejects_bad_payloads(Item: Any, pg_engine: sa.Engine) -> None:
    n = Notifier(pg_engine)
    n.watch(Item, "update")
    with pytest.raises(ValueError, match="mapping"):
        n.notify(Item, "update", payload=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="object"):
        n.notify(Item, "update", payload={"id": object()})
    with pytest.raises(ValueError, match="no watch"):
        n.notify(Item, "delete", payload={"id": 1})


# -- oversized rows ----------------------------------------------------------------------


def test_an_oversized_row_arrives_by_key_and_is_reread(
    Item: Any, pg_engine: sa.Engine, schema: str, watched: Watch, caplog: Any
) -> None:
    Base = new_base()

    class Big(Base):
        __tablename__ = "big"
        __table_args__ = {"schema": schema}
        key: Mapped[str] = mapped_column(primary_key=True)
        body: Mapped[str] = mapped_column(sa.Text)

    Base.metadata.create_all(pg_engine)
    n, rec = watched(pg_engine, Big, extra_columns=["body"])
    table = f'"{schema}".big'
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        # The write itself never fails because of sqlnotify.
        execute(pg_engine, f"INSERT INTO {table} VALUES ('k1', repeat('x', 20000))")
        execute(pg_engine, f"INSERT INTO {table} VALUES ('k2', 'small')")
        # Even the key is too large for a notification: only the fact arrives.
        execute(pg_engine, f"INSERT INTO {table} VALUES (repeat('k', 9000), 'a')")
        events = rec.wait_for(3, TIMEOUT)
    # Sent by key, its columns re-read from the table.
    assert (events[0].id, events[0].status, dict(events[0].extra_columns)) == (
        "k1",
        "hydrated",
        {"body": "x" * 20000},
    )
    assert (events[1].id, events[1].status, events[1].extra_columns["body"]) == (
        "k2",
        "complete",
        "small",
    )
    assert (events[2].id, events[2].status) == (None, "lost")
    assert n.stats.truncated == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("too large" in w and "re-read" in w for w in warnings), warnings
    assert any("too large" in w and "keys alone" in w for w in warnings), warnings
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 3


# -- logging -----------------------------------------------------------------------------


def _exercise(n: Notifier, Item: Any, pg_engine: sa.Engine, schema: str, value: str) -> None:
    """Start ``n``, then make it log all it can: a failing receiver, a dropped payload,
    an oversized row, a stop."""
    n.watch(Item, "insert", extra_columns=["label", "seen_at"])
    rec = EventRecorder()

    @n.subscribe(Item, "insert")
    def boom(event: Any) -> None:
        raise RuntimeError("receiver failed")

    n.subscribe(Item, "insert")(rec)
    n.start()
    execute(pg_engine, f"INSERT INTO {items(schema)} (id, label) VALUES (1, :v)", {"v": value})
    execute(
        pg_engine,
        f"INSERT INTO {items(schema)} (id, label) VALUES (2, :v || repeat('z', 9000))",
        {"v": value},
    )
    # A custom payload whose datetime cannot be decoded: dropped, counted.
    n.notify(Item, "insert", {"id": 3, "label": value, "seen_at": value})
    execute(pg_engine, f"INSERT INTO {items(schema)} (id, label) VALUES (4, :v)", {"v": value})
    rec.wait_for(3, TIMEOUT)
    wait_until(lambda: n.stats.dropped == 1, TIMEOUT, "the dropped payload")
    n.stop()


def test_use_logger_false_logs_nothing(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, caplog: Any
) -> None:
    n = make_notifier(notifiers, pg_engine, use_logger=False)
    with caplog.at_level(logging.DEBUG):
        _exercise(n, Item, pg_engine, schema, "quiet-value")
    assert n.stats.receiver_errors == 3
    assert [r for r in caplog.records if r.name.startswith("sqlnotify")] == []


def test_row_values_are_never_logged_above_debug(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, caplog: Any
) -> None:
    secret = "Zq7-secret-value-9xK"
    n = make_notifier(notifiers, pg_engine)
    with caplog.at_level(logging.INFO):
        _exercise(n, Item, pg_engine, schema, secret)
    records = [r for r in caplog.records if r.name.startswith("sqlnotify")]
    assert {r.levelname for r in records} >= {"INFO", "WARNING", "ERROR"}
    for record in records:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        assert secret not in text, record
    # At DEBUG, dropped payloads may be logged for diagnosis.
    caplog.clear()
    n2 = make_notifier(notifiers, pg_engine)
    execute(pg_engine, f"TRUNCATE {items(schema)}")
    with caplog.at_level(logging.DEBUG, logger="sqlnotify"):
        _exercise(n2, Item, pg_engine, schema, secret)
    assert any(secret in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def test_the_library_does_not_configure_logging() -> None:
    code = (
        "import logging, sqlnotify, sqlnotify.notifier;"
        "root = logging.getLogger();"
        "lib = logging.getLogger('sqlnotify');"
        "print(len(root.handlers), len(lib.handlers), lib.level, lib.propagate)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).stdout.split()
    assert out == ["0", "0", "0", "True"]


def test_receivers_run_in_subscription_order(
    Item: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(Item, "insert")
    calls: list[tuple[int, int]] = []

    class Receiver:
        def __init__(self, number: int) -> None:
            self.number = number

        def method(self, sender: Any, event: Any) -> None:
            calls.append((event.id, self.number))

    kept = []
    for number in range(20):
        if number % 3 == 0:  # blinker receivers, some of them weakly referenced bound methods
            receiver = Receiver(number)
            kept.append(receiver)
            n.signal(Item, "insert").connect(receiver.method)
        else:
            n.subscribe(Item, "insert")(
                lambda event, number=number: calls.append((event.id, number))
            )
    n.start()
    execute(pg_engine, f"INSERT INTO {items(schema)} (id, label) VALUES (1, 'a'), (2, 'b')")
    wait_until(lambda: len(calls) == 40, TIMEOUT, "40 calls")
    assert calls == [(i, number) for i in (1, 2) for number in range(20)]


def test_a_dropped_watched_column_never_fails_writes(
    pg_engine: sa.Engine, schema: str, notifiers: Any, caplog: Any
) -> None:
    table = f'"{schema}".products'
    execute(pg_engine, f"CREATE TABLE {table} (id int PRIMARY KEY, name text, note text)")
    n = make_notifier(notifiers, pg_engine)
    n.watch(f"{schema}.products", "insert", extra_columns=["name", "note"])
    rec = EventRecorder()
    n.subscribe(f"{schema}.products", "insert")(rec)
    n.start()
    # A migration drops a watched column while the trigger is installed.
    execute(pg_engine, f"ALTER TABLE {table} DROP COLUMN note")
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        execute(pg_engine, f"INSERT INTO {table} VALUES (1, 'kept')")  # does not raise
        (event,) = rec.wait_for(1, TIMEOUT)
    assert (event.status, event.id, dict(event.extra_columns)) == ("lost", None, {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("42703" in w and "no longer matches" in w for w in warnings), warnings
    assert "kept" not in " ".join(warnings)
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT name FROM {table}")).scalar() == "kept"
    # Restarted with a watch that matches the table again (another spec: a
    # trigger of its own), and the broken one, now unused, is cleaned up.
    n.stop()
    fixed = make_notifier(notifiers, pg_engine, cleanup_on_start=True, cleanup_grace=0)
    fixed.watch(f"{schema}.products", "insert", extra_columns=["name"])
    rec2 = EventRecorder()
    fixed.subscribe(f"{schema}.products", "insert")(rec2)
    fixed.start()
    assert [s.state for s in fixed.install_states] == ["installed"]
    wait_until(
        lambda: triggers(pg_engine, schema, "products") == [fixed.watches[0].channel],
        TIMEOUT,
        "the broken trigger removed",
    )
    execute(pg_engine, f"INSERT INTO {table} VALUES (2, 'again')")
    assert dict(rec2.wait_for(1, TIMEOUT)[0].row) == {"id": 2, "name": "again"}
