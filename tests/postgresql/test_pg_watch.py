"""Watches on PostgreSQL: operations, columns, keys, filters, labels, signals, types, names."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import blinker
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.orm import Mapped, mapped_column
from support.pg import TIMEOUT, execute, make_notifier, model, new_base
from support.watching import Watch

from sqlnotify import ChangeEvent, Notifier, Operation, SQLNotifyConfigurationError
from sqlnotify.exceptions import SQLNotifyException, SQLNotifyUnSupportedDatabaseProviderError
from sqlnotify.testing import EventRecorder


@pytest.fixture
def models(schema: str) -> Any:
    """A ``User`` model and an ``OrderItem`` model (composite key) in the test's schema."""
    Base = new_base()
    User = model(
        None,
        schema,
        "User",
        "users",
        base=Base,
        email=mapped_column(sa.String, nullable=False),
        name=mapped_column(sa.String, nullable=False),
        age=mapped_column(sa.Integer, server_default="0", nullable=False),
        active=mapped_column(sa.Boolean, server_default=sa.true(), nullable=False),
    )
    OrderItem = model(
        None,
        schema,
        "OrderItem",
        "order_items",
        base=Base,
        order_id=mapped_column(sa.Integer, primary_key=True),
        item_id=mapped_column(sa.Integer, primary_key=True),
        quantity=mapped_column(sa.Integer, nullable=False),
    )

    class M:
        pass

    M.Base, M.User, M.OrderItem = Base, User, OrderItem  # type: ignore[attr-defined]
    return M


@pytest.fixture
def setup(models: Any, pg_engine: sa.Engine) -> Any:
    models.Base.metadata.create_all(pg_engine)
    return models


def users(schema: str) -> str:
    return f'"{schema}".users'


# -- operations --------------------------------------------------------------------------


def test_insert_update_delete(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    User = setup.User
    n = make_notifier(notifiers, pg_engine)
    n.watch(User, Operation.INSERT, extra_columns=["email"])
    n.watch(User, "update", extra_columns=["email"])
    n.watch(User, "DELETE", extra_columns=["email", "name"])
    got: dict[str, EventRecorder] = {op: EventRecorder() for op in ("insert", "update", "delete")}
    for op, rec in got.items():
        n.subscribe(User, op)(rec)
    n.start()
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (1, 'a@x', 'Ann')")
    execute(pg_engine, f"UPDATE {users(schema)} SET email = 'b@x' WHERE id = 1")
    execute(pg_engine, f"DELETE FROM {users(schema)} WHERE id = 1")

    (ins,) = got["insert"].wait_for(1, TIMEOUT)
    (upd,) = got["update"].wait_for(1, TIMEOUT)
    (dele,) = got["delete"].wait_for(1, TIMEOUT)
    assert (ins.operation, ins.id, dict(ins.extra_columns)) == (
        Operation.INSERT,
        1,
        {"email": "a@x"},
    )
    assert (upd.operation, upd.id, dict(upd.extra_columns)) == (
        Operation.UPDATE,
        1,
        {"email": "b@x"},
    )
    # DELETE carries the old row.
    assert dele.operation is Operation.DELETE
    assert (dele.id, dict(dele.extra_columns)) == (1, {"email": "b@x", "name": "Ann"})
    for event in (ins, upd, dele):
        assert event.schema == schema
        assert event.table == "users"
        assert event.custom is False
        assert event.status == "complete"
        assert isinstance(event.timestamp, dt.datetime)
        assert event.timestamp.utcoffset() == dt.timedelta(0)
        # The server's clock, at trigger time: within a generous bound of ours.
        assert abs(event.timestamp - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    assert ins.timestamp <= upd.timestamp <= dele.timestamp  # type: ignore[operator]


def test_default_payload_is_the_key_only(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(setup.User, Operation.INSERT)
    rec = EventRecorder()
    assert n.subscribe(setup.User, Operation.INSERT)(rec) is rec  # returned unchanged
    n.start()
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (7, 'a', 'b')")
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.id == 7
    assert dict(event.extra_columns) == {}
    assert dict(event.row) == {"id": 7}


def test_trigger_columns_fire_only_on_real_change(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(setup.User, "update", extra_columns=["email", "name"], trigger_columns=["email"])
    rec = EventRecorder()
    n.subscribe(setup.User, "update")(rec)
    n.start()
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (1, 'a', 'A')")
    # Named in SET but unchanged: no event.  Another column changed: no event.
    execute(pg_engine, f"UPDATE {users(schema)} SET email = 'a', name = 'B' WHERE id = 1")
    execute(pg_engine, f"UPDATE {users(schema)} SET name = 'C' WHERE id = 1")
    # A real change, then a change to NULL and back (IS DISTINCT FROM, not <>).
    execute(pg_engine, f"UPDATE {users(schema)} SET email = 'z' WHERE id = 1")
    execute(pg_engine, f"ALTER TABLE {users(schema)} ALTER COLUMN email DROP NOT NULL")
    execute(pg_engine, f"UPDATE {users(schema)} SET email = NULL WHERE id = 1")
    events = rec.wait_for(2, TIMEOUT)
    # A marker update after the others: once it arrives, nothing else is pending.
    execute(pg_engine, f"UPDATE {users(schema)} SET email = 'end' WHERE id = 1")
    events = rec.wait_for(3, TIMEOUT)
    assert [e.extra_columns["email"] for e in events] == ["z", None, "end"]
    assert events[0].extra_columns["name"] == "C"


def test_composite_key_in_primary_keys_order(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    OrderItem = setup.OrderItem
    n = make_notifier(notifiers, pg_engine)
    n.watch(OrderItem, "insert", extra_columns=["quantity"])
    n.watch(OrderItem, "update", primary_keys=["item_id", "order_id"])
    ins, upd = EventRecorder(), EventRecorder()
    n.subscribe(OrderItem, "insert")(ins)
    n.subscribe(OrderItem, "update")(upd)
    n.start()
    table = f'"{schema}".order_items'
    execute(pg_engine, f"INSERT INTO {table} VALUES (10, 20, 3)")
    execute(pg_engine, f"UPDATE {table} SET quantity = 4")
    (a,) = ins.wait_for(1, TIMEOUT)
    (b,) = upd.wait_for(1, TIMEOUT)
    assert a.id == (10, 20)
    assert a.primary_keys == ("order_id", "item_id")
    assert a.extra_columns == {"quantity": 3}
    assert b.id == (20, 10)  # the order given in primary_keys
    order_id, item_id = a.id
    assert (order_id, item_id) == (10, 20)


def test_custom_primary_key_column(pg_engine: sa.Engine, schema: str, watched: Watch) -> None:
    Account = model(
        pg_engine,
        schema,
        "Account",
        "accounts",
        account_id=mapped_column(sa.String, primary_key=True),
        region=mapped_column(sa.String, primary_key=True),
        balance=mapped_column(sa.Integer, nullable=False),
    )
    rec = watched(pg_engine, Account, primary_keys=["account_id"], extra_columns=["balance"]).events
    execute(pg_engine, f"INSERT INTO \"{schema}\".accounts VALUES ('acc-1', 'eu', 5)")
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.id == "acc-1"
    assert dict(event.row) == {"account_id": "acc-1", "balance": 5}


# -- filters -----------------------------------------------------------------------------


def test_filters_compare_typed_values(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    User = setup.User
    n = make_notifier(notifiers, pg_engine)
    n.watch(User, "insert", extra_columns=["age", "active", "name"])
    by_int, by_str, by_both, by_bool, by_one, every = (EventRecorder() for _ in range(6))
    n.subscribe(User, "insert", filters=[{"column": "id", "value": 42}])(by_int)
    n.subscribe(User, "insert", filters=[{"column": "id", "value": "42"}])(by_str)
    n.subscribe(
        User,
        "insert",
        filters=[{"column": "name", "value": "Ann"}, {"column": "age", "value": 30}],
    )(by_both)
    n.subscribe(User, "insert", filters=[{"column": "active", "value": False}])(by_bool)
    # True == 1 in Python, but a bool filter must not match an int column (and back).
    n.subscribe(User, "insert", filters=[{"column": "id", "value": True}])(by_one)
    n.subscribe(User, "insert")(every)
    n.start()
    rows = [
        (1, "Ann", 30, True),
        (42, "Bob", 30, True),
        (3, "Ann", 31, False),
        (4, "Ann", 30, True),
    ]
    for id_, name, age, active in rows:
        execute(
            pg_engine,
            f"INSERT INTO {users(schema)} (id, email, name, age, active)"
            " VALUES (:i, 'e', :n, :a, :b)",
            {"i": id_, "n": name, "a": age, "b": active},
        )
    every.wait_for(4, TIMEOUT)
    assert [e.id for e in by_int.events] == [42]
    assert by_str.events == []
    assert [e.id for e in by_both.events] == [1, 4]
    assert [e.id for e in by_bool.events] == [3]
    assert by_one.events == []
    assert type(by_int.events[0].id) is int


def test_filter_on_a_column_outside_the_payload_is_rejected(
    setup: Any, pg_engine: sa.Engine
) -> None:
    n = Notifier(pg_engine)
    n.watch(setup.User, "insert", extra_columns=["email"])
    with pytest.raises(SQLNotifyConfigurationError) as info:
        n.subscribe(setup.User, "insert", filters=[{"column": "name", "value": "x"}])
    message = str(info.value)
    assert "'name'" in message and "id, email" in message
    with pytest.raises(SQLNotifyConfigurationError, match=r"column.*value"):
        n.subscribe(setup.User, "insert", filters=[{"col": "id", "value": 1}])


def test_filters_by_name_are_checked_when_the_table_is_reflected(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(f"{schema}.users", "insert", extra_columns=["name"])
    rec = EventRecorder()
    n.subscribe(f"{schema}.users", "insert", filters=[{"column": "name", "value": "Zed"}])(rec)
    n.start()
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (1, 'e', 'Amy')")
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (2, 'e', 'Zed')")
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.id == 2

    bad = make_notifier(notifiers, pg_engine)
    bad.watch(f"{schema}.users", "update")
    bad.subscribe(f"{schema}.users", "update", filters={"nope": 1})(rec)
    with pytest.raises(SQLNotifyConfigurationError, match=r"'nope'.*filter on one of: id"):
        bad.start()
    assert not bad.is_running


# -- channel labels ----------------------------------------------------------------------


def test_channel_labels_make_separate_watches(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    User = setup.User
    n = make_notifier(notifiers, pg_engine)
    n.watch(User, "insert")
    n.watch(User, "insert", extra_columns=["email"], channel_label="new_registrations")
    plain, labelled = EventRecorder(), EventRecorder()
    n.subscribe(User, "insert")(plain)
    n.subscribe("User", Operation.INSERT, channel_label="new_registrations")(labelled)
    n.start()
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (5, 'e@x', 'n')")
    (a,) = plain.wait_for(1, TIMEOUT)
    (b,) = labelled.wait_for(1, TIMEOUT)
    assert a.id == b.id == 5
    assert dict(a.extra_columns) == {}
    assert dict(b.extra_columns) == {"email": "e@x"}
    assert a.channel != b.channel
    assert "new_registrati" in b.channel  # hashed: the label holds "_"
    with pytest.raises(SQLNotifyConfigurationError, match=r"no watch.*'other'"):
        n.subscribe(User, "insert", channel_label="other")


@pytest.mark.parametrize(
    "label", ["it's", "two words", "$$", "a$$b", 'q"uote', "semi;colon", "", "x" * 49, "é"]
)
def test_unsafe_channel_labels_are_rejected(setup: Any, pg_engine: sa.Engine, label: str) -> None:
    n = Notifier(pg_engine)
    with pytest.raises(SQLNotifyConfigurationError) as info:
        n.watch(setup.User, "insert", channel_label=label)
    assert repr(label) in str(info.value)
    assert "letters, digits" in str(info.value)


# -- blinker -----------------------------------------------------------------------------


def test_blinker_receivers_with_model_table_and_name_senders(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    User, OrderItem = setup.User, setup.OrderItem
    n = make_notifier(notifiers, pg_engine)
    n.watch(User, "insert")
    n.watch(OrderItem.__table__, "insert")
    n.watch(f"{schema}.users", "delete")
    by_model, by_table, by_name, any_sender, other_sender = (EventRecorder() for _ in range(5))
    sig = n.signal(User, "insert")
    assert isinstance(sig, blinker.Signal)
    assert n.signal("User", "insert") is sig
    sig.connect(by_model, sender=User)
    sig.connect(other_sender, sender=OrderItem)
    n.signal(OrderItem.__table__, "insert").connect(by_table, sender=OrderItem.__table__)
    n.signal(f"{schema}.users", "delete").connect(by_name, sender=f"{schema}.users")
    n.signal(f"{schema}.users", "delete").connect(any_sender)
    n.start()
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (1, 'e', 'n')")
    execute(pg_engine, f'INSERT INTO "{schema}".order_items VALUES (1, 2, 3)')
    execute(pg_engine, f"DELETE FROM {users(schema)}")
    (e1,) = by_model.wait_for(1, TIMEOUT)
    (e2,) = by_table.wait_for(1, TIMEOUT)
    (e3,) = by_name.wait_for(1, TIMEOUT)
    any_sender.wait_for(1, TIMEOUT)
    assert by_model.senders == [User]
    assert by_table.senders == [OrderItem.__table__]
    assert by_name.senders == [f"{schema}.users"]
    assert any_sender.senders == [f"{schema}.users"]
    assert isinstance(e1, ChangeEvent) and e1.id == 1
    assert e2.id == (1, 2)
    assert e3.operation is Operation.DELETE
    assert other_sender.events == []


def test_notifier_wide_signals(
    setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    from sqlnotify import signals

    n = make_notifier(notifiers, pg_engine)
    n.watch(setup.User, "insert")
    seen: list[tuple[str, Any, dict[str, Any]]] = []

    def record(name: str) -> Any:
        def receiver(sender: Any, **kw: Any) -> None:
            seen.append((name, sender, kw))

        return receiver

    on_event, on_connected = record("event"), record("connected")
    signals.event_received.connect(on_event, sender=n)
    signals.listener_connected.connect(on_connected, sender=n)
    try:
        n.start()
        execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (1, 'e', 'n')")
        from sqlnotify.testing import wait_until

        wait_until(lambda: any(s[0] == "event" for s in seen), TIMEOUT, "event_received")
    finally:
        signals.event_received.disconnect(on_event, sender=n)
        signals.listener_connected.disconnect(on_connected, sender=n)
    assert seen[0] == ("connected", n, {"reconnect": False})
    name, sender, kw = seen[1]
    assert (name, sender, kw["event"].id) == ("event", n, 1)


# -- values' Python types ----------------------------------------------------------------


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


def test_values_have_the_types_sqlalchemy_reads(
    pg_engine: sa.Engine, schema: str, watched: Watch
) -> None:
    Base = new_base()

    class Thing(Base):
        __tablename__ = "things"
        __table_args__ = {"schema": schema}
        id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
        flag: Mapped[bool]
        text: Mapped[str]
        price: Mapped[Decimal] = mapped_column(sa.Numeric(12, 4))
        ratio: Mapped[float] = mapped_column(sa.Float)
        at_tz: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))
        at_naive: Mapped[dt.datetime] = mapped_column(sa.DateTime())
        day: Mapped[dt.date]
        clock: Mapped[dt.time]
        clock_tz: Mapped[dt.time] = mapped_column(sa.Time(timezone=True))
        uid: Mapped[uuid.UUID]
        doc: Mapped[Any] = mapped_column(sa.JSON)
        docb: Mapped[Any] = mapped_column(pg.JSONB)
        blob: Mapped[bytes] = mapped_column(sa.LargeBinary)
        color: Mapped[Color] = mapped_column(sa.Enum(Color, schema=schema))
        plain_enum: Mapped[str] = mapped_column(sa.Enum("a", "b", name="ab", schema=schema))
        span: Mapped[dt.timedelta] = mapped_column(sa.Interval)
        maybe: Mapped[int | None]
        uids: Mapped[list[uuid.UUID]] = mapped_column(pg.ARRAY(sa.Uuid))
        stamps: Mapped[list[dt.datetime]] = mapped_column(pg.ARRAY(sa.DateTime(timezone=True)))
        amounts: Mapped[list[Decimal]] = mapped_column(pg.ARRAY(sa.Numeric(10, 2)))
        grid: Mapped[list[list[int]]] = mapped_column(pg.ARRAY(sa.Integer, dimensions=2))

    Base.metadata.create_all(pg_engine)
    columns = [c.name for c in Thing.__table__.columns if c.name != "id"]
    n, rec = watched(pg_engine, Thing, extra_columns=columns)
    values = {
        "id": 2**40,
        "flag": True,
        "text": "héllo \"quoted\" 'single' \\ back",
        "price": Decimal("12.3400"),
        "ratio": 0.25,
        "at_tz": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
        "at_naive": dt.datetime(2024, 5, 6, 7, 8, 9, 120000),
        "day": dt.date(2024, 2, 29),
        "clock": dt.time(23, 59, 58, 500000),
        "clock_tz": dt.time(1, 2, 3, 400000, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
        "uid": uuid.uuid4(),
        "doc": {"a": [1, 2.5, None, "x"], "b": {"c": True}},
        "docb": [1, {"k": "v"}],
        "blob": bytes(range(256)) * 2,
        "color": Color.GREEN,
        "plain_enum": "b",
        "span": dt.timedelta(days=3, seconds=7, microseconds=250000),
        "maybe": None,
        "uids": [uuid.uuid4(), uuid.uuid4()],
        "stamps": [dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), None],
        "amounts": [Decimal("0.10"), Decimal("12345678.99")],
        "grid": [[1, 2], [3, 4]],
    }
    with pg_engine.begin() as conn:
        conn.execute(sa.insert(Thing.__table__), [values])
    (event,) = rec.wait_for(1, TIMEOUT)
    with pg_engine.connect() as conn:
        read = dict(conn.execute(sa.select(Thing.__table__)).mappings().one())
    got = dict(event.row)
    assert got.keys() == read.keys()
    for name, expected in read.items():
        assert got[name] == expected, name
        assert type(got[name]) is type(expected), name
    for name in ("uids", "stamps", "amounts"):
        assert [type(v) for v in got[name]] == [type(v) for v in read[name]], name
    assert event.id == 2**40
    # notify() sends the same values through JSON; they come back with the same types.
    n.notify(Thing, "insert", payload=values)
    custom = rec.wait_for(2, TIMEOUT)[1]
    assert custom.custom
    for name, expected in read.items():
        assert custom.row[name] == expected, name
        assert type(custom.row[name]) is type(expected), name
    assert got["at_tz"].utcoffset() is not None
    assert got["at_naive"].tzinfo is None
    assert got["color"] is Color.GREEN


class LowerCase(sa.types.TypeDecorator[str]):
    """A user type: stored as text, read back lowercased."""

    impl = sa.String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return value.lower() if value is not None else None


class Cents(sa.types.TypeDecorator[Decimal]):
    """A user type over a numeric column, read back as a number of cents."""

    impl = sa.Numeric(10, 2)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return int(value * 100) if value is not None else None


def test_type_decorators_convert_like_sqlalchemy(
    pg_engine: sa.Engine, schema: str, watched: Watch
) -> None:
    Tagged = model(
        pg_engine,
        schema,
        "Tagged",
        "tagged",
        tag=mapped_column(LowerCase, nullable=False),
        price=mapped_column(Cents, nullable=False),
    )
    rec = watched(pg_engine, Tagged, extra_columns=["tag", "price"]).events
    execute(pg_engine, f"INSERT INTO \"{schema}\".tagged VALUES (1, 'MiXeD', 12.34)")
    (event,) = rec.wait_for(1, TIMEOUT)
    with pg_engine.connect() as conn:
        read = dict(conn.execute(sa.select(Tagged.__table__)).mappings().one())
    assert dict(event.row) == read == {"id": 1, "tag": "mixed", "price": 1234}


# -- awkward names -----------------------------------------------------------------------


def test_reserved_and_mixed_case_names(pg_engine: sa.Engine, schema: str, notifiers: Any) -> None:
    Order = model(
        pg_engine,
        schema,
        "Order",
        "Order",
        Id=mapped_column(sa.Integer, primary_key=True),
        user=mapped_column(sa.String, nullable=False),
        select=mapped_column(sa.Integer, nullable=False),
        MixedCase=mapped_column("Mixed Case; drop", sa.String, nullable=False),
    )
    n = make_notifier(notifiers, pg_engine)
    n.watch(Order, "insert", extra_columns=["user", "select", "Mixed Case; drop"])
    n.watch(Order, "update", trigger_columns=["user"], extra_columns=["user"])
    ins, upd = EventRecorder(), EventRecorder()
    n.subscribe(Order, "insert", filters=[{"column": "user", "value": "bob"}])(ins)
    n.subscribe(Order, "update")(upd)
    n.start()
    table = f'"{schema}"."Order"'
    execute(pg_engine, f"INSERT INTO {table} VALUES (1, 'bob', 2, 'x')")
    execute(pg_engine, f"UPDATE {table} SET \"user\" = 'amy'")
    (a,) = ins.wait_for(1, TIMEOUT)
    (b,) = upd.wait_for(1, TIMEOUT)
    assert a.table == "Order"
    assert a.id == 1
    assert dict(a.extra_columns) == {"user": "bob", "select": 2, "Mixed Case; drop": "x"}
    assert b.extra_columns["user"] == "amy"
    for channel in (a.channel, b.channel):
        assert len(channel.encode()) <= 63
        assert channel.startswith("sqlnotify_")


def test_awkward_schema_name_and_very_long_table_name(pg_engine: sa.Engine, notifiers: Any) -> None:
    schema = f'Shop "{uuid.uuid4().hex[:6]}" $$x'
    table = "t" + "_very_long_name" * 5  # 76 characters: PostgreSQL truncates to 63
    quoted_schema = '"' + schema.replace('"', '""') + '"'
    execute(pg_engine, f"CREATE SCHEMA {quoted_schema}")
    try:
        real_name = table[:63]
        execute(pg_engine, f'CREATE TABLE {quoted_schema}."{real_name}" (id int PRIMARY KEY)')
        n = make_notifier(notifiers, pg_engine)
        n.watch(f"{schema}.{real_name}", "insert")
        rec = EventRecorder()
        n.subscribe(real_name, "insert")(rec)
        n.start()
        execute(pg_engine, f'INSERT INTO {quoted_schema}."{real_name}" VALUES (9)')
        (event,) = rec.wait_for(1, TIMEOUT)
        assert (event.schema, event.table, event.id) == (schema, real_name, 9)
        assert len(event.channel.encode()) <= 63
        n.stop(cleanup=True)
    finally:
        execute(pg_engine, f"DROP SCHEMA {quoted_schema} CASCADE")


def test_long_names_that_share_a_prefix_get_distinct_channels(pg_engine: sa.Engine) -> None:
    Base = new_base()
    names = ["a" * 60 + "_one", "a" * 60 + "_two"]
    tables = [
        sa.Table(name, Base.metadata, sa.Column("id", sa.Integer, primary_key=True))
        for name in names
    ]
    n = Notifier(pg_engine)
    for table in tables:
        n.watch(table, "insert")
    channels = [w.channel for w in n.prepare()]
    assert len(set(channels)) == 2
    assert all(len(c.encode()) <= 63 for c in channels)


# -- bad input ---------------------------------------------------------------------------


def test_bad_input_errors_name_what_is_wrong(setup: Any, pg_engine: sa.Engine) -> None:
    User = setup.User
    n = Notifier(pg_engine)

    class NotAModel:
        pass

    with pytest.raises(SQLNotifyConfigurationError, match=r"NotAModel.*mapped model class"):
        n.watch(NotAModel, "insert")
    with pytest.raises(SQLNotifyConfigurationError, match=r"'emial'.*User.*id, email, name"):
        n.watch(User, "insert", extra_columns=["emial"])
    with pytest.raises(SQLNotifyConfigurationError, match=r"trigger_columns.*'nope'"):
        n.watch(User, "update", trigger_columns=["nope"])
    with pytest.raises(SQLNotifyConfigurationError, match=r"'email' is not a primary key.*\(id\)"):
        n.watch(User, "insert", primary_keys=["email"])
    with pytest.raises(
        SQLNotifyConfigurationError, match=r"trigger_columns only applies.*'insert'"
    ):
        n.watch(User, "insert", trigger_columns=["email"])
    with pytest.raises(SQLNotifyConfigurationError, match=r"unknown operation 'upsert'.*'insert'"):
        n.watch(User, "upsert")
    with pytest.raises(SQLNotifyConfigurationError, match=r"list of column names.*\['email'\]"):
        n.watch(User, "insert", extra_columns="email")  # type: ignore[arg-type]
    with pytest.raises(SQLNotifyConfigurationError, match="no watch for model User 'insert'"):
        n.subscribe(User, "insert")
    n.watch(User, "insert")
    with pytest.raises(SQLNotifyConfigurationError, match=r"no watch for 'Customer'.*User insert"):
        n.subscribe("Customer", "insert")
    with pytest.raises(SQLNotifyConfigurationError, match="different options"):
        n.watch(User, "insert", extra_columns=["email"])
    assert n.watch(User, "insert") is n  # the same watch again is harmless
    with pytest.raises(SQLNotifyConfigurationError, match="Engine or AsyncEngine"):
        Notifier("postgresql://localhost/x")  # type: ignore[arg-type]
    # Every configuration error is also a ValueError and a SQLNotifyException.
    assert issubclass(SQLNotifyConfigurationError, ValueError)
    assert issubclass(SQLNotifyConfigurationError, SQLNotifyException)


def test_unknown_table_name_fails_at_start(
    pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(f"{schema}.missing_table", "insert")
    with pytest.raises(SQLNotifyConfigurationError, match=r"missing_table.*no such table"):
        n.start()
    assert not n.is_running


def test_table_without_primary_key_needs_primary_keys(pg_engine: sa.Engine, schema: str) -> None:
    execute(pg_engine, f'CREATE TABLE "{schema}".log (a int, b text)')
    n = Notifier(pg_engine)
    n.watch(f"{schema}.log", "insert")
    with pytest.raises(SQLNotifyConfigurationError, match="no primary key: pass primary_keys"):
        n.prepare()
    ok = Notifier(pg_engine)
    ok.watch(f"{schema}.log", "insert", primary_keys=["a"], extra_columns=["b"])
    assert ok.prepare()[0].primary_keys == ("a",)


def test_unsupported_database_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlnotify.dialects import registry

    monkeypatch.delitem(registry, "mysql")  # a database without a dialect
    engine = sa.create_engine("mysql+pymysql://user:pw@127.0.0.1:1/db")
    with pytest.raises(SQLNotifyUnSupportedDatabaseProviderError) as info:
        Notifier(engine)
    assert "'mysql'" in str(info.value)
    assert "postgresql" in str(info.value) and "sqlite" in str(info.value)
    assert isinstance(info.value, SQLNotifyConfigurationError)


# -- tables by name, SQLModel ------------------------------------------------------------


def test_watch_by_table_name_is_reflected_on_start(
    pg_schema_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    execute(pg_schema_engine, "CREATE TABLE orders (id int PRIMARY KEY, total numeric(8, 2))")
    n = make_notifier(notifiers, pg_schema_engine)
    n.watch("orders", "insert", extra_columns=["total"])
    n.watch(f"{schema}.orders", "delete")
    ins, dele = EventRecorder(), EventRecorder()
    n.signal("orders", "insert").connect(ins)
    n.subscribe(f"{schema}.orders", "delete")(dele)
    assert n.watches == []  # nothing reflected before start
    n.start()
    execute(pg_schema_engine, "INSERT INTO orders VALUES (1, 9.5)")
    execute(pg_schema_engine, "DELETE FROM orders")
    (a,) = ins.wait_for(1, TIMEOUT)
    (b,) = dele.wait_for(1, TIMEOUT)
    assert (a.schema, a.table, a.id, a.extra_columns["total"]) == (
        schema,
        "orders",
        1,
        Decimal("9.50"),
    )
    assert ins.senders == ["orders"]
    assert b.id == 1


def test_sqlmodel_model(pg_engine: sa.Engine, schema: str, notifiers: Any) -> None:
    from sqlmodel import Field, SQLModel

    class Hero(SQLModel, table=True):
        __tablename__ = "heroes"
        __table_args__ = {"schema": schema}
        metadata = sa.MetaData()
        id: int | None = Field(default=None, primary_key=True)
        name: str

    Hero.metadata.create_all(pg_engine)
    n = make_notifier(notifiers, pg_engine)
    n.watch(Hero, "insert", extra_columns=["name"])
    rec = EventRecorder()
    n.subscribe("Hero", "insert")(rec)
    n.start()
    from sqlmodel import Session

    with Session(pg_engine) as session:
        session.add(Hero(name="Deadpond"))
        session.commit()
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.extra_columns == {"name": "Deadpond"}
    assert isinstance(event.id, int)
    assert rec.senders == [None]  # subscribe() receivers get the event only


def test_same_table_name_in_two_schemas_does_not_cross_talk(
    pg_url: str, pg_engine: sa.Engine, notifiers: Any
) -> None:
    schemas = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    engines = []
    try:
        recorders = []
        for name in schemas:
            execute(pg_engine, f'CREATE SCHEMA "{name}"')
            execute(pg_engine, f'CREATE TABLE "{name}".orders (id int PRIMARY KEY)')
            url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={name}"})
            engine = sa.create_engine(url)
            engines.append(engine)
            n = make_notifier(notifiers, engine)
            n.watch("orders", "insert")  # unqualified: each notifier's own search_path
            rec = EventRecorder()
            n.subscribe("orders", "insert")(rec)
            n.start()
            recorders.append(rec)
        execute(pg_engine, f'INSERT INTO "{schemas[0]}".orders VALUES (1)')
        execute(pg_engine, f'INSERT INTO "{schemas[1]}".orders VALUES (2)')
        recorders[0].wait_for(1, TIMEOUT)
        recorders[1].wait_for(1, TIMEOUT)
        # A marker after the crossing writes: the first notifier gets it after anything else.
        execute(pg_engine, f'INSERT INTO "{schemas[0]}".orders VALUES (3)')
        recorders[0].wait_for(2, TIMEOUT)
        assert [(e.schema, e.id) for e in recorders[0].events] == [(schemas[0], 1), (schemas[0], 3)]
        assert [(e.schema, e.id) for e in recorders[1].events] == [(schemas[1], 2)]
    finally:
        for n in notifiers:
            n.stop()
        for engine in engines:
            engine.dispose()
        for name in schemas:
            execute(pg_engine, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_table_name_past_postgresql_limit_is_an_error(pg_engine: sa.Engine, schema: str) -> None:
    from sqlnotify import SQLNotifyIdentifierSizeError

    name = "t" + "_very_long_name" * 5  # 76 bytes: PostgreSQL would keep only 63
    table = sa.Table(
        name, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema=schema
    )
    n = Notifier(pg_engine)
    n.watch(table, "insert")
    with pytest.raises(SQLNotifyIdentifierSizeError, match=r"table name .*76 bytes.*at most 63"):
        n.install()
    with pytest.raises(SQLNotifyIdentifierSizeError):
        n.ddl()
    assert not n.is_running


def test_channels_of_different_tables_never_collide(pg_engine: sa.Engine) -> None:
    def channel(schema: str | None, table: str, op: str, label: str | None = None) -> str:
        t = sa.Table(
            table, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema=schema
        )
        n = Notifier(pg_engine)
        n.watch(t, op, channel_label=label)
        return n.prepare()[0].channel

    pairs = [
        (("shop_eu", "orders", "insert"), ("shop", "eu_orders", "insert")),
        (("shop", "orders", "update", "insert"), ("shop", "orders_update", "insert")),
        (("shop", "orders", "insert", "a_update"), ("shop", "orders_insert_a", "update")),
    ]
    for one, other in pairs:
        assert channel(*one) != channel(*other), (one, other)
    # Plain names stay readable, followed by the spec's hash.
    assert channel("public", "order_items", "insert").startswith(
        "sqlnotify_public_order_items_insert_"
    )
    assert channel("shop", "orders", "delete", "audit").startswith(
        "sqlnotify_shop_orders_delete_audit_"
    )
    assert channel(None, "users", "insert").startswith("sqlnotify_public_users_insert")


def test_unsubscribe(setup: Any, pg_engine: sa.Engine, schema: str, notifiers: Any) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(setup.User, "insert")
    gone, kept = EventRecorder(), EventRecorder()
    n.subscribe(setup.User, "insert")(gone)
    n.subscribe(setup.User, "insert")(kept)
    assert n.unsubscribe(gone, setup.User, "insert") is True
    assert n.unsubscribe(gone, setup.User, "insert") is False
    n.start()
    execute(pg_engine, f"INSERT INTO {users(schema)} (id, email, name) VALUES (1, 'e', 'n')")
    kept.wait_for(1, TIMEOUT)
    assert gone.events == []
