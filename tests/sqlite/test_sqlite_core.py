"""The Notifier API on SQLite files: watches, receivers, installation."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from support.env import need_module
from support.sqlite import file_engine, ids
from support.watching import keyed_table

from sqlnotify import ChangeEvent, Notifier, Operation, signals
from sqlnotify._pipeline.listener import Listener
from sqlnotify.dialects.sqlite import LOG_TABLE, SQLiteDialect, SQLiteSource
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder, wait_until


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None]
    name: Mapped[str]
    active: Mapped[bool] = mapped_column(default=True)


class Membership(Base):
    __tablename__ = "membership"
    org_id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str]


@pytest.fixture
def engine(sqlite_path: str) -> Iterator[sa.Engine]:
    engine = file_engine(sqlite_path)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def make(engine: sa.Engine, notifiers: list[Notifier], **kwargs: object) -> Notifier:
    notifier = Notifier(engine, **kwargs)  # type: ignore[arg-type]
    notifiers.append(notifier)
    return notifier


def test_insert_update_delete(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch(Account, Operation.INSERT, extra_columns=["email"])
    n.watch(Account, "update", extra_columns=["email", "active"])
    n.watch(Account, Operation.DELETE, extra_columns=["name"])
    rec = EventRecorder()
    for op in Operation.rows():
        n.subscribe(Account, op)(rec)
    n.start()
    assert n.dialect_name == "sqlite"
    with engine.begin() as conn:
        conn.execute(sa.insert(Account).values(id=1, email="a@x", name="Ann"))
    with engine.begin() as conn:
        conn.execute(sa.update(Account).values(email="b@x", active=False))
    with engine.begin() as conn:
        conn.execute(sa.delete(Account))
    events = rec.wait_for(3)
    assert [e.operation for e in events] == [Operation.INSERT, Operation.UPDATE, Operation.DELETE]
    ins, upd, dele = events
    assert ins.id == 1 and dict(ins.extra_columns) == {"email": "a@x"}
    assert dict(upd.extra_columns) == {"email": "b@x", "active": False}
    assert upd.extra_columns["active"] is False
    assert dict(dele.extra_columns) == {"name": "Ann"}
    assert ins.table == "account" and ins.schema is None
    assert re.fullmatch("sqlnotify_account_insert_[0-9a-f]{10}", ins.channel)  # + spec hash
    assert ins.timestamp is not None and ins.custom is False and ins.status == "complete"
    # Positions are the change log's sequence numbers, in commit order.
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 3


def test_orm_session_and_model_names(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    from sqlalchemy.orm import Session

    n = make(engine, notifiers)
    n.watch(Account, Operation.INSERT, extra_columns=["name"])
    by_class, by_table = EventRecorder(), EventRecorder()
    n.subscribe("Account", "insert")(by_class)
    n.subscribe("account", "insert")(by_table)
    n.start()
    with Session(engine) as session:
        session.add_all([Account(id=i, email=f"{i}@x", name=f"n{i}") for i in range(1, 4)])
        session.commit()
    assert ids(by_class.wait_for(3)) == [1, 2, 3]
    assert ids(by_table.wait_for(3)) == [1, 2, 3]


def test_trigger_columns(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch(Account, Operation.UPDATE, extra_columns=["email"], trigger_columns=["email"])
    rec = EventRecorder()
    n.subscribe(Account, "update")(rec)
    n.start()
    with engine.begin() as conn:
        conn.execute(sa.insert(Account).values(id=1, email="a@x", name="Ann"))
        conn.execute(sa.update(Account).values(name="Bob"))  # not a trigger column
        conn.execute(sa.update(Account).values(email="a@x"))  # unchanged value
        conn.execute(sa.update(Account).values(email="c@x"))
        conn.execute(sa.update(Account).values(email=None, name="x"))  # NULL is a change
    events = rec.wait_for(2)
    assert [e.extra_columns["email"] for e in events] == ["c@x", None]
    assert "WHEN OLD" in n.ddl()[-1] and 'UPDATE OF "email"' in n.ddl()[-1]


def test_composite_keys_filters_and_labels(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch(Membership, Operation.INSERT, extra_columns=["role"])
    n.watch(Membership, Operation.INSERT, primary_keys=["org_id"], channel_label="by-org")
    everything, admins, org7 = EventRecorder(), EventRecorder(), EventRecorder()
    n.subscribe(Membership, "insert")(everything)
    n.subscribe(Membership, "insert", filters=[{"column": "role", "value": "admin"}])(admins)
    n.subscribe(Membership, "insert", filters={"org_id": 7}, channel_label="by-org")(org7)
    n.start()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Membership),
            [
                {"org_id": 7, "user_id": 1, "role": "admin"},
                {"org_id": 7, "user_id": 2, "role": "member"},
                {"org_id": 8, "user_id": 1, "role": "admin"},
            ],
        )
    assert ids(everything.wait_for(3)) == [(7, 1), (7, 2), (8, 1)]
    assert ids(admins.wait_for(2)) == [(7, 1), (8, 1)]
    assert ids(org7.wait_for(2)) == [7, 7]
    labelled = n.signal(Membership, "insert", channel_label="by-org")
    assert labelled is not n.signal(Membership, "insert")
    assert org7.events[0].channel != everything.events[0].channel
    assert len(admins) == 2 and len(org7) == 2


def test_blinker_signal_sender(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch(Account, Operation.INSERT)
    rec = EventRecorder()
    n.signal(Account, "insert").connect(rec, sender=Account)
    seen = EventRecorder()
    signals.event_received.connect(seen, sender=n)
    try:
        n.start()
        with engine.begin() as conn:
            conn.execute(sa.insert(Account).values(id=5, email="e", name="n"))
        assert rec.wait_for(1)[0].id == 5
        assert rec.senders == [Account]
        assert seen.wait_for(1)[0].id == 5
    finally:
        signals.event_received.disconnect(seen)


def test_receiver_exception_isolated(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers, use_logger=False)
    n.watch(Account, Operation.INSERT)
    failures = EventRecorder()
    signals.receiver_failed.connect(failures, sender=n)

    @n.subscribe(Account, "insert")
    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("receiver bug")

    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    try:
        n.start()
        with engine.begin() as conn:
            conn.execute(sa.insert(Account), [{"id": i, "email": "e", "name": "n"} for i in (1, 2)])
        assert ids(rec.wait_for(2)) == [1, 2]
        wait_until(lambda: n.stats.receiver_errors == 2, 10, "two receiver errors counted")
        assert n.listener_thread_name and n.is_running
    finally:
        signals.receiver_failed.disconnect(failures)


def test_ten_thousand_events_in_order(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch(Account, Operation.INSERT)
    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    n.start()
    rows = [{"id": i, "email": "e", "name": "n"} for i in range(1, 10_001)]
    with engine.begin() as conn:
        conn.execute(sa.insert(Account), rows[:4000])
    for start in range(4000, 10_000, 1000):
        with engine.begin() as conn:
            conn.execute(sa.insert(Account), rows[start : start + 1000])
    events = rec.wait_for(10_000, timeout=30)
    assert ids(events) == list(range(1, 10_001))
    positions = [e.position for e in events]
    assert positions == sorted(positions)


def test_custom_notify(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch(Account, Operation.UPDATE, extra_columns=["active", "email"])
    rec = EventRecorder()
    n.subscribe(Account, "update")(rec)
    n.start()
    big = "x" * 100_000  # no payload limit on SQLite
    n.notify(Account, "update", {"id": 9, "active": True, "email": big}, use_overflow_table=True)
    n.notify(Account, "update", {"id": 10, "active": 0})
    first, second = rec.wait_for(2)
    assert first.custom and first.id == 9 and first.extra_columns["email"] == big
    assert first.extra_columns["active"] is True
    assert second.extra_columns["active"] is False
    assert n.encode_custom(Account, "update", {"id": 1})[0] == first.channel


def test_awkward_names(sqlite_path: str, notifiers: list[Notifier]) -> None:
    engine = file_engine(sqlite_path)
    md = sa.MetaData()
    table = sa.Table(
        'Odd "Table"; DROP',
        md,
        sa.Column("Key 'quoted'", sa.Integer, primary_key=True),
        sa.Column('we"ird\ncol', sa.String),
        sa.Column("-- not a comment */", sa.String),
    )
    md.create_all(engine)
    n = make(engine, notifiers)
    n.watch(table, Operation.INSERT, extra_columns=['we"ird\ncol', "-- not a comment */"])
    n.watch(table, Operation.UPDATE, trigger_columns=['we"ird\ncol'])
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.subscribe(table, "update")(rec)
    n.start()
    with engine.begin() as conn:
        values = {"Key 'quoted'": 1, 'we"ird\ncol': "v'1", "-- not a comment */": "*/"}
        conn.execute(table.insert().values(values))
        conn.execute(table.update().values({'we"ird\ncol': "v2"}))
    ins, upd = rec.wait_for(2)
    assert ins.id == 1
    assert dict(ins.extra_columns) == {'we"ird\ncol': "v'1", "-- not a comment */": "*/"}
    assert upd.id == 1
    # The second start finds the triggers unchanged (the metadata comment survived).
    n.stop()
    again = make(engine, notifiers)
    again.watch(table, Operation.INSERT, extra_columns=['we"ird\ncol', "-- not a comment */"])
    again.watch(table, Operation.UPDATE, trigger_columns=['we"ird\ncol'])
    assert [s.state for s in again.install()] == ["unchanged", "unchanged"]
    engine.dispose()


def _schema_version(path: str) -> int:
    with closing(sqlite3.connect(path)) as conn, conn:
        version: int = conn.execute("PRAGMA schema_version").fetchone()[0]
    return version


def test_unchanged_second_start_does_no_ddl(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier]
) -> None:
    first = make(engine, notifiers)
    first.watch(Account, Operation.INSERT, extra_columns=["email"])
    first.start()
    assert [s.state for s in first.install_states] == ["installed"]
    first.stop()
    before = _schema_version(sqlite_path)
    second = make(engine, notifiers)
    second.watch(Account, Operation.INSERT, extra_columns=["email"])
    second.start()
    assert [s.state for s in second.install_states] == ["unchanged"]
    assert _schema_version(sqlite_path) == before


def test_model_change_revoke_and_keep(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    make(engine, notifiers).watch(Account, "insert", extra_columns=["active"]).install()
    # The model changed (``active`` is now a float), the watch's spec did not.
    retyped = keyed_table("account", sa.Column("name", sa.String), sa.Column("active", sa.Float))
    keep = make(engine, notifiers, revoke_on_model_change=False)
    keep.watch(retyped, "insert", extra_columns=["active"])
    assert [s.state for s in keep.install()] == ["outdated"]
    keep.stop()
    revoke = make(engine, notifiers)
    revoke.watch(retyped, "insert", extra_columns=["active"])
    assert [s.state for s in revoke.install()] == ["replaced"]
    assert [s.state for s in revoke.install()] == ["unchanged"]
    # Another spec on the same table and operation is a trigger of its own.
    other = make(engine, notifiers, revoke_on_model_change=False)
    other.watch(Account, "insert", extra_columns=["name"])
    assert [s.state for s in other.install()] == ["installed"]


def test_cleanup_uninstall_status_ddl(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier]
) -> None:
    n = make(engine, notifiers)
    n.watch(Account, "insert").watch(Account, "delete").watch(Membership, "insert")
    n.install()
    status = n.dialect.status()
    assert {(s["table"], s["operation"]) for s in status} == {
        ("account", "insert"),
        ("account", "delete"),
        ("membership", "insert"),
    }
    assert all(s["state"] == "installed" and s["fingerprint"] for s in status)
    ddl = n.ddl()
    assert sum("CREATE TRIGGER" in s for s in ddl) == 3
    assert any(LOG_TABLE in s and "CREATE TABLE IF NOT EXISTS" in s for s in ddl)
    # ddl() is what install runs: applying it to a fresh file gives the same triggers.
    fresh = os.path.join(os.path.dirname(sqlite_path), "fresh.db")
    fresh_engine = file_engine(fresh)
    Base.metadata.create_all(fresh_engine)
    with closing(sqlite3.connect(fresh)) as conn, conn:
        for stmt in ddl:
            conn.execute(stmt)
    other = make(fresh_engine, notifiers)
    other.watch(Account, "insert").watch(Account, "delete").watch(Membership, "insert")
    assert [s.state for s in other.install()] == ["unchanged"] * 3
    fresh_engine.dispose()

    only_account = make(engine, notifiers)
    only_account.watch(Account, "insert")
    assert only_account.cleanup() == 0  # n used them just now: within the grace period
    only_account = make(engine, notifiers, cleanup_grace=0)
    only_account.watch(Account, "insert")
    assert only_account.cleanup() == 2  # both triggers on account, not membership's
    assert [s["table"] for s in n.dialect.status()] == ["membership"]
    assert n.uninstall() == 1
    assert n.dialect.status() == []
    # cleanup_on_start installs, then removes the unused triggers of the watched
    # tables on the maintenance thread.
    n.install()
    fresh_start = make(engine, notifiers, cleanup_on_start=True, cleanup_grace=0)
    fresh_start.watch(Account, "update")
    fresh_start.start()
    assert [s.state for s in fresh_start.install_states] == ["installed"]
    wait_until(
        lambda: (
            {s["table"] + ":" + s["operation"] for s in n.dialect.status()}
            == {"account:update", "membership:insert"}
        ),
        10,
        "the deferred cleanup",
    )


def test_cleanup_on_stop(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers, cleanup_on_stop=True)
    n.watch(Account, "insert")
    n.start()
    assert len(n.dialect.status()) == 1
    n.stop()
    assert n.dialect.status() == []
    # Writes keep working without sqlnotify.
    with engine.begin() as conn:
        conn.execute(sa.insert(Account).values(id=1, email="e", name="n"))


def test_table_by_name_is_reflected(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch("account", Operation.INSERT, extra_columns=["active"])
    rec = EventRecorder()
    n.subscribe("account", "insert")(rec)
    n.start()
    with engine.begin() as conn:
        conn.execute(sa.insert(Account).values(id=3, email="e", name="n", active=True))
    event = rec.wait_for(1)[0]
    assert event.id == 3 and event.extra_columns["active"] is True
    missing = make(engine, notifiers)
    missing.watch("nope", "insert")
    with pytest.raises(SQLNotifyConfigurationError, match="no such table"):
        missing.start()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "sqlite:///file:mem1?mode=memory&cache=shared&uri=true"],
)
def test_in_memory_database_is_refused(url: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.StaticPool)
    with pytest.raises(SQLNotifyConfigurationError, match="needs an SQLite database file"):
        Notifier(engine)


def test_uri_file_url(sqlite_path: str, notifiers: list[Notifier]) -> None:
    engine = sa.create_engine(f"sqlite:///file:{sqlite_path}?uri=true")
    Base.metadata.create_all(engine)
    n = make(engine, notifiers)
    n.watch(Account, "insert")
    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    n.start()
    assert isinstance(n.dialect, SQLiteDialect) and n.dialect.path == sqlite_path
    with engine.begin() as conn:
        conn.execute(sa.insert(Account).values(id=1, email="e", name="n"))
    assert rec.wait_for(1)[0].id == 1
    engine.dispose()


def test_options_are_checked(engine: sa.Engine) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="sqlite_retention"):
        Notifier(engine, sqlite_retension=10)
    with pytest.raises(SQLNotifyConfigurationError, match="sqlite_wal must be True or False"):
        Notifier(engine, sqlite_wal="no")
    with pytest.raises(SQLNotifyConfigurationError, match="at least"):
        Notifier(engine, sqlite_retention=-1)


def test_attached_database_is_refused(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = sa.Table(
        "t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema="aux"
    )
    n = make(engine, notifiers)
    n.watch(table, "insert")
    with pytest.raises(SQLNotifyConfigurationError, match="attached databases"):
        n.install()


@pytest.mark.parametrize("wal", [True, False])
def test_wal_switch_and_opt_out(sqlite_path: str, notifiers: list[Notifier], wal: bool) -> None:
    engine = file_engine(sqlite_path)
    Base.metadata.create_all(engine)
    n = make(engine, notifiers, sqlite_wal=wal)
    n.watch(Account, "insert")
    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    n.start()
    with closing(sqlite3.connect(sqlite_path)) as conn, conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == ("wal" if wal else "delete")
    with engine.begin() as conn:
        conn.execute(sa.insert(Account).values(id=1, email="e", name="n"))
    assert rec.wait_for(1)[0].id == 1
    engine.dispose()


def test_polling_fallback(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers, sqlite_inotify=False, sqlite_poll_interval=0.02)
    n.watch(Account, "insert")
    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    n.start()
    # A writer outside the notifier's engine: only the poll can find it.
    with closing(sqlite3.connect(n.dialect.path)) as conn, conn:  # type: ignore[attr-defined]
        conn.execute("INSERT INTO account (id, email, name, active) VALUES (4, 'e', 'n', 1)")
    assert rec.wait_for(1)[0].id == 4
    assert n._listener is not None and n._listener.source is not None
    assert not n._listener.source.uses_inotify  # type: ignore[attr-defined]


def test_inotify_wakes_on_foreign_commit(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    need_module("inotify_simple")
    n = make(engine, notifiers)
    n.watch(Account, "insert")
    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    n.start()
    assert n._listener is not None and n._listener.source is not None
    assert n._listener.source.uses_inotify  # type: ignore[attr-defined]
    with closing(sqlite3.connect(n.dialect.path)) as conn, conn:  # type: ignore[attr-defined]
        conn.execute("INSERT INTO account (id, email, name, active) VALUES (4, 'e', 'n', 1)")
    assert rec.wait_for(1)[0].id == 4


def test_async_engine(sqlite_path: str, notifiers: list[Notifier]) -> None:
    need_module("aiosqlite")
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def main() -> list[ChangeEvent]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{sqlite_path}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        n = make(engine, notifiers)  # type: ignore[arg-type]
        n.watch("account", "insert", extra_columns=["name"])  # reflected by name
        n.watch(Account, "update", extra_columns=["active"])
        rec = EventRecorder()
        n.subscribe("account", "insert")(rec)
        n.subscribe(Account, "update")(rec)
        with pytest.warns(RuntimeWarning, match="called from a running event loop"):
            n.start()
        async with engine.begin() as conn:
            await conn.execute(sa.insert(Account).values(id=1, email="e", name="Ann"))
            await conn.execute(sa.update(Account).values(active=False))
        events = await asyncio.to_thread(rec.wait_for, 2)
        n.stop()
        await engine.dispose()
        return events

    ins, upd = asyncio.run(main())
    assert ins.id == 1 and ins.extra_columns["name"] == "Ann"
    assert upd.extra_columns["active"] is False


def test_same_process_commit_wakes_the_listener(
    engine: sa.Engine, notifiers: list[Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Polling only, every 30 s: only the commit hook can deliver within 10 s.
    monkeypatch.setattr(Listener, "WAIT_TIMEOUT", 30.0)
    monkeypatch.setattr(SQLiteSource, "MIN_POLL", 30.0)
    n = make(engine, notifiers, sqlite_inotify=False, sqlite_poll_interval=30.0)
    n.watch(Account, "insert")
    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    n.start()
    assert n._listener is not None
    source = n._listener.source
    assert isinstance(source, SQLiteSource)
    for i in (1, 2):
        # Wait until the listener has left its quick checks after activity.
        wait_until(lambda: source.pacer.settled, 10, "the listener to go idle")
        with engine.begin() as conn:
            conn.execute(sa.insert(Account).values(id=i, email="e", name="n"))
        assert rec.wait_for(i, timeout=10)[-1].id == i
    dialect = n.dialect
    assert isinstance(dialect, SQLiteDialect)
    assert sa.event.contains(engine, "commit", dialect._commits._on_commit)
    n.stop()
    assert not sa.event.contains(engine, "commit", dialect._commits._on_commit)


def test_notify_before_the_first_start(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    n = make(engine, notifiers)
    n.watch(Account, "insert")
    n.notify(Account, "insert", {"id": 1})  # nobody listens yet: not delivered later
    rec = EventRecorder()
    n.subscribe(Account, "insert")(rec)
    n.start()
    n.notify(Account, "insert", {"id": 2})
    assert ids(rec.wait_for(1)) == [2]
    n.notify(Account, "insert", {"id": 3})
    assert ids(rec.wait_for(2)) == [2, 3]


def test_database_behind_a_symlink(tmp_path: os.PathLike[str], notifiers: list[Notifier]) -> None:
    need_module("inotify_simple")
    real_dir = os.path.join(os.fspath(tmp_path), "real")
    os.mkdir(real_dir)
    real = os.path.join(real_dir, "app.db")
    link = os.path.join(os.fspath(tmp_path), "link.db")
    with closing(sqlite3.connect(real)) as conn, conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    os.symlink(real, link)
    engine = file_engine(link)
    n = make(engine, notifiers)
    n.watch("t", "insert")
    rec = EventRecorder()
    n.subscribe("t", "insert")(rec)
    n.start()
    assert n._listener is not None
    source = n._listener.source
    assert isinstance(source, SQLiteSource) and source.uses_inotify
    # SQLite keeps the WAL next to the real file.
    assert os.path.exists(real + "-wal") and not os.path.exists(link + "-wal")
    with closing(sqlite3.connect(link)) as conn, conn:
        conn.execute("INSERT INTO t (id) VALUES (1)")
    assert rec.wait_for(1)[0].id == 1
    engine.dispose()
