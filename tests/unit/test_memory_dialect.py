"""The in-memory dialect itself: triggers, writes, sources, journal, consumers, reconnects."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from memory_setup import TIMEOUT, Memory, item_table, memory_fixture  # noqa: F401

from sqlnotify import Gap, Notifier, SQLNotifyConfigurationError, SQLNotifyListenerError
from sqlnotify.dialects.base import SourceDisconnected
from sqlnotify.testing import EventRecorder, MemoryDatabase, MemoryDialect, wait_until


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_install_shares_one_trigger_per_spec_and_status_lists_its_users(memory: Memory) -> None:
    first = memory.notifier(cleanup_grace=0)
    second = memory.notifier(cleanup_grace=0)
    first.start()
    second.start()
    assert [s.state for s in first.install_states] == ["installed"]
    assert [s.state for s in second.install_states] == ["unchanged"]
    (row,) = first.dialect.status()
    assert row["channel"] == first.watches[0].channel
    assert (row["table"], row["operation"], row["state"]) == ("item", "insert", "installed")
    assert row["spec"] == {
        "keys": ["id"],
        "columns": ["name"],
        "trigger_columns": [],
        "label": None,
    }
    assert len(row["users"]) == 2 and all(u["live"] for u in row["users"])
    assert first.ddl() == [f"-- memory trigger {row['channel']}: insert on item"]
    first.stop()
    assert first.uninstall() == 0  # the second notifier still uses it
    second.stop()
    assert second.uninstall() == 1
    assert first.dialect.status() == []


def test_a_changed_watch_replaces_or_keeps_the_installed_trigger(memory: Memory) -> None:
    # The same spec on a table whose column types changed: another fingerprint.
    first = memory.notifier()
    first.install()
    changed = item_table()
    changed.c.name.type = sa.Integer()
    memory.db.define(changed)
    kept = Notifier(memory.engine, dialect=MemoryDialect, revoke_on_model_change=False)
    kept.watch(changed, "insert", extra_columns=["name"])
    assert [s.state for s in kept.install()] == ["outdated"]
    replaced = Notifier(memory.engine, dialect=MemoryDialect)
    replaced.watch(changed, "insert", extra_columns=["name"])
    assert [s.state for s in replaced.install()] == ["replaced"]


def test_writes_fire_only_the_watches_of_their_table_and_operation(memory: Memory) -> None:
    other = memory.db.define(item_table("other"))
    n = memory.notifier("insert", "delete")
    rec = EventRecorder()
    n.subscribe(memory.table, "insert")(rec)
    n.subscribe(memory.table, "delete")(rec)
    n.start()
    memory.db.insert(other, {"id": 1, "name": "elsewhere"})
    memory.insert(1, 2)
    assert memory.db.update(memory.table, 1, {"name": "no update watch"}) == 1
    assert memory.db.update(memory.table, {"name": "nobody"}, {"name": "x"}) == 0
    assert memory.db.delete("item", {"id": 2}) == 1
    events = rec.wait_for(3, TIMEOUT)
    assert [(e.operation.value, e.id) for e in events] == [
        ("insert", 1),
        ("insert", 2),
        ("delete", 2),
    ]
    assert memory.db.rows("item") == [{"id": 1, "name": "no update watch"}]


def test_write_errors_name_the_problem(memory: Memory) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="no table 'missing'"):
        memory.db.insert("missing", {"id": 1})
    with pytest.raises(SQLNotifyConfigurationError, match="no column 'colour'"):
        memory.db.insert(memory.table, {"id": 1, "colour": "red"})
    with pytest.raises(SQLNotifyConfigurationError, match="does not match the primary key"):
        memory.db.delete(memory.table, (1, 2))
    memory.insert(1)
    with pytest.raises(ValueError, match=r"duplicate key \(id=1\) in table 'item'"):
        memory.insert(1)
    assert len(memory.db.rows(memory.table)) == 1


def test_an_integer_key_left_out_is_numbered(memory: Memory) -> None:
    first = memory.db.insert(memory.table, {"name": "a"})
    second = memory.db.insert(memory.table, {"name": "b"})
    assert (first["id"], second["id"]) == (1, 2)


def test_a_table_given_by_name_is_reflected_through_the_engine() -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    item_table("orders").metadata.create_all(engine)
    database = MemoryDatabase()
    n = Notifier(engine, dialect=MemoryDialect, memory_database=database)
    n.watch("orders", "insert", extra_columns=["name"])
    rec = EventRecorder()
    n.subscribe("orders", "insert")(rec)
    try:
        n.start()
        database.insert("orders", {"id": 5, "name": "by name"})
        (event,) = rec.wait_for(1, TIMEOUT)
    finally:
        n.stop()
        engine.dispose()
    assert dict(event.row) == {"id": 5, "name": "by name"}
    assert MemoryDatabase.of(engine) is not database  # the option chose the database


def test_the_memory_database_option_is_checked() -> None:
    engine = sa.create_engine("sqlite://")
    with pytest.raises(SQLNotifyConfigurationError, match="must be a MemoryDatabase"):
        Notifier(engine, dialect=MemoryDialect, memory_database={})
    with pytest.raises(SQLNotifyConfigurationError, match="memory_database"):
        Notifier(engine, dialect=MemoryDialect, sqlite_retention=1)


def test_a_source_wakes_on_delivery_and_on_the_wake_pipe(
    memory: Memory, pipe: tuple[int, int]
) -> None:
    wake_r, wake_w = pipe
    source = memory.db.open_source(["a"])
    try:
        os.write(wake_w, b"\0")
        assert source.wait(TIMEOUT * 10, wake_r) == []  # the wake pipe ended the wait
        os.read(wake_r, 1)
        sender = threading.Thread(target=memory.db.send, args=("a", "{}"), name="test-sender")
        sender.start()
        got = source.wait(TIMEOUT * 10, wake_r)  # returns once the notification is there
        sender.join(TIMEOUT)
        assert [(n.channel, n.payload) for n in got] == [("a", "{}")]
        memory.db.send("b", "{}")  # not a channel it listens on
        assert source.wait(0, wake_r) == []
        assert memory.db.disconnect() == 1
        with pytest.raises(SourceDisconnected):
            source.wait(TIMEOUT * 10, wake_r)
    finally:
        source.close()
    assert memory.db.listeners == 0


def test_one_notifier_per_consumer_name(memory: Memory) -> None:
    first = memory.notifier(consumer="c")
    first.watch(memory.table, "update", durable=True)
    first.start()
    second = memory.notifier(consumer="c")
    second.watch(memory.table, "update", durable=True)
    with pytest.raises(SQLNotifyListenerError, match="'c' is already active"):
        second.start()
    first.stop()
    second.start()  # the name is free again


def test_a_reconnect_loses_plain_events_only_and_says_so(
    memory: Memory, fast_reconnect: None
) -> None:
    n = memory.notifier("insert")
    n.watch(memory.table, "update", extra_columns=["name"], durable=True)
    plain, durable = n.watches
    inserted, updated = EventRecorder(), EventRecorder()
    n.subscribe(memory.table, "insert")(inserted)
    n.subscribe(memory.table, "update")(updated)
    gaps: list[Gap] = []
    n.on_gap(gaps.append)
    n.start()
    memory.insert(1)
    inserted.wait_for(1, TIMEOUT)
    assert memory.db.disconnect() == 1
    # Until the listener reconnects nobody listens: an insert's notification
    # then goes nowhere, while the update waits in the journal.
    memory.insert(2)
    memory.db.update(memory.table, 1, {"name": "while away"})
    wait_until(lambda: n.health()["reconnects"] == 1, TIMEOUT, "a reconnect")
    wait_until(lambda: gaps, TIMEOUT, "a gap")
    (event,) = updated.wait_for(1, TIMEOUT)
    assert event.row["name"] == "while away"
    assert gaps[0].reason == "disconnected"
    assert gaps[0].channels == (plain.channel,)  # the durable channel lost nothing
    memory.insert(3)
    assert [e.id for e in inserted.wait_for(2, TIMEOUT)][-1] == 3
    assert durable.channel not in gaps[0].channels


def test_durable_events_carry_their_journal_position(memory: Memory) -> None:
    n = Notifier(memory.engine, dialect=MemoryDialect)
    memory.notifiers.append(n)
    n.watch(memory.table, "insert", extra_columns=["name"], durable=True)
    n.watch(memory.table, "update", extra_columns=["name"], durable=True)
    inserted, updated = EventRecorder(), EventRecorder()
    n.subscribe(memory.table, "insert")(inserted)
    n.subscribe(memory.table, "update")(updated)
    n.start()
    try:
        memory.insert(1)
        memory.db.update(memory.table, 1, {"name": "renamed"})
        (insert,) = inserted.wait_for(1, TIMEOUT)
        (update,) = updated.wait_for(1, TIMEOUT)
    finally:
        n.stop()
    ids = [row[0] for row in memory.db.journal_rows()]
    assert [insert.position, update.position] == ids[-2:]
    assert update.row["name"] == "renamed"
