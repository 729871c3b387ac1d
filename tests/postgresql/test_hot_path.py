"""The dispatcher's fast paths behave exactly like the plain ones they replace."""

from __future__ import annotations

import gc
import json
from typing import Any

import blinker
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from support.watching import Watch, make_table

from sqlnotify import Notifier
from sqlnotify._payload import decode_json
from sqlnotify._pipeline.route import Route
from sqlnotify._watch import WatchRequest
from sqlnotify.testing import EventRecorder


def _route(signal: blinker.Signal) -> Route:
    table = sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text),
        schema="shop",
    )
    request = WatchRequest.build(table, "insert", ["name"], None, None, None, False)
    return Route(request.resolve(table), signal, "postgresql")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_decode_json_matches_json_loads(value: Any) -> None:
    text = json.dumps(value)
    assert decode_json(text) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    ['  {"a": 1}', '{"a": 1}  ', '{"a": 1}\n', "[1, 2]", '"text"', "3.5", "null"],
)
def test_decode_json_accepts_what_json_loads_accepts(text: str) -> None:
    assert decode_json(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a": }', '{"a": 1} x', "nope", '{"a": 1}{}'])
def test_decode_json_rejects_what_json_loads_rejects(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        decode_json(text)
    assert str(got.value) == str(expected.value)


def test_receiver_list_follows_connect_and_disconnect() -> None:
    signal = blinker.Signal()
    route = _route(signal)

    def first(sender: Any, **kw: Any) -> None: ...

    def second(sender: Any, **kw: Any) -> None: ...

    def other_sender(sender: Any, **kw: Any) -> None: ...

    assert route.receivers() == ()
    signal.connect(first, weak=False)
    assert route.receivers() == (first,)
    signal.connect(second, sender=route.sender, weak=False)
    signal.connect(other_sender, sender="someone else", weak=False)
    assert route.receivers() == (first, second)  # in the order they were connected
    signal.disconnect(first)
    assert route.receivers() == (second,)
    signal.disconnect(second, sender=route.sender)
    assert route.receivers() == ()


def test_weak_receivers_are_not_kept_alive_by_the_route() -> None:
    signal = blinker.Signal()
    route = _route(signal)
    calls: list[str] = []

    def make() -> Any:
        def weakly(sender: Any, **kw: Any) -> None:
            calls.append("weak")

        return weakly

    receiver = make()
    signal.connect(receiver)  # weak by default
    assert route.receivers() == (receiver,)
    del receiver
    gc.collect()
    assert route.receivers() == ()


def test_an_old_route_stops_listening_to_the_signal() -> None:
    signal = blinker.Signal()
    route = _route(signal)
    assert signal.receiver_connected.receivers
    del route
    gc.collect()
    signal.connect(lambda sender, **kw: None, weak=False)
    assert not signal.receiver_connected.receivers


@pytest.mark.postgresql
def test_receivers_connected_while_running_get_the_next_event(
    pg_schema_engine: sa.Engine, watched: Watch
) -> None:
    table = make_table(pg_schema_engine, name="things", columns=("name",))
    notifier = watched(pg_schema_engine, table, start=False, record=False, extra_columns=["name"])[
        0
    ]
    early = EventRecorder()
    notifier.signal(table, "insert").connect(early, weak=False)
    notifier.start()

    def insert(name: str) -> None:
        with pg_schema_engine.begin() as conn:
            conn.execute(table.insert().values(name=name))

    insert("one")
    early.wait_for(1, timeout=10)
    late = EventRecorder()
    notifier.signal(table, "insert").connect(late, weak=False)
    insert("two")
    early.wait_for(2, timeout=10)
    late.wait_for(1, timeout=10)
    assert [e["extra_columns"]["name"] for e in late.events] == ["two"]
    notifier.signal(table, "insert").disconnect(early)
    insert("three")
    late.wait_for(2, timeout=10)
    assert [e.extra_columns["name"] for e in early.events] == ["one", "two"]


@pytest.mark.postgresql
def test_generated_trigger_payload_round_trips_values(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    import datetime as dt
    from decimal import Decimal

    table = sa.Table(
        "mixed",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("flag", sa.Boolean),
        sa.Column("doc", sa.JSON),
    )
    table.create(pg_schema_engine)
    notifier = Notifier(pg_schema_engine)
    notifiers.append(notifier)
    columns = ["name", "price", "at", "flag", "doc"]
    recorders = {}
    for op in ("insert", "update", "delete"):
        notifier.watch(table, op, extra_columns=columns)
        recorders[op] = EventRecorder()
        notifier.subscribe(table, op)(recorders[op])
    notifier.start()
    at = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
    row = {
        "id": 7,
        "name": 'quote " backslash \\ unicode \u00e9\u4e2d newline \n',
        "price": Decimal("12.50"),
        "at": at,
        "flag": True,
        "doc": {"k": [1, "two", None]},
    }
    before = dt.datetime.now(dt.timezone.utc)
    with pg_schema_engine.begin() as conn:
        conn.execute(table.insert().values(**row))
        conn.execute(table.update().values(name=None).where(table.c.id == 7))
        conn.execute(table.delete().where(table.c.id == 7))
    inserted = recorders["insert"].wait_for(1, timeout=10)[0]
    updated = recorders["update"].wait_for(1, timeout=10)[0]
    deleted = recorders["delete"].wait_for(1, timeout=10)[0]
    assert inserted.id == 7
    assert dict(inserted.extra_columns) == {k: v for k, v in row.items() if k != "id"}
    assert updated.extra_columns["name"] is None
    assert deleted.extra_columns["name"] is None and deleted.extra_columns["flag"] is True
    assert inserted.timestamp is not None
    assert (
        before - dt.timedelta(seconds=5) <= inserted.timestamp <= dt.datetime.now(dt.timezone.utc)
    )
    assert all(e.status == "complete" for e in (inserted, updated, deleted))


@pytest.mark.postgresql
def test_generated_trigger_sends_an_oversize_row_by_key(
    pg_schema_engine: sa.Engine, watched: Watch
) -> None:
    table = make_table(pg_schema_engine, name="big", columns=("body",))
    options = {"use_logger": False}
    recorder = watched(pg_schema_engine, table, options=options, extra_columns=["body"]).events
    with pg_schema_engine.begin() as conn:
        conn.execute(table.insert().values(id=1, body="x" * 9000))
        conn.execute(table.insert().values(id=2, body="small"))
    first, second = recorder.wait_for(2, timeout=10)
    # Sent by key only; the listener re-reads the row.
    assert (first.id, first.status, first.extra_columns["body"]) == (1, "hydrated", "x" * 9000)
    assert (second.id, second.status, second.extra_columns["body"]) == (2, "complete", "small")


def test_the_dispatcher_constructor_matches_the_public_one() -> None:
    from sqlnotify.events import ChangeEvent, Operation

    args = ("shop", "items", Operation.UPDATE, {"id": 3, "name": "x"}, ("id",), 12.5, "ch")
    fast = ChangeEvent._complete(*args)
    slow = ChangeEvent(
        schema="shop",
        table="items",
        operation=Operation.UPDATE,
        row={"id": 3, "name": "x"},
        primary_keys=("id",),
        epoch=12.5,
        channel="ch",
    )
    for slot in ChangeEvent.__slots__:
        assert getattr(fast, slot) == getattr(slow, slot), slot
    assert fast == slow and dict(fast) == dict(slow) and fast.status == "complete"
