"""Receivers are checked when added; the watch signal keeps what is connected to it."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import pytest
import sqlalchemy as sa

from sqlnotify import ChangeEvent, Notifier, SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder, wait_until


@pytest.fixture
def setup(sqlite_path: str) -> Any:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    table = sa.Table("orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    table.metadata.create_all(engine)
    notifier = Notifier(engine)
    notifier.watch(table, "insert")
    yield notifier, table, engine
    notifier.stop()
    engine.dispose()


def test_subscribe_rejects_a_sender_event_receiver(setup: Any) -> None:
    notifier, table, _ = setup

    def on_order(sender: Any, event: ChangeEvent) -> None: ...

    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.subscribe(table, "insert")(on_order)
    text = str(info.value)
    assert "subscribe() calls its receivers as fn(event)" in text
    assert "on_order(sender: 'Any', event: 'ChangeEvent')" in text
    assert "notifier.signal(model, operation).connect(fn)" in text


def test_subscribe_rejects_a_function_without_arguments(setup: Any) -> None:
    notifier, table, _ = setup
    with pytest.raises(SQLNotifyConfigurationError, match=r"<lambda>\(\) cannot be called"):
        notifier.subscribe(table, "insert")(lambda: None)


def test_subscribe_accepts_what_can_take_one_event(setup: Any) -> None:
    notifier, table, _ = setup

    async def coro(event: ChangeEvent) -> None: ...

    class Callable:
        def __call__(self, event: ChangeEvent, extra: int = 0) -> None: ...

    for fn in (coro, Callable(), print, lambda *args: None, lambda event, **kw: None):
        notifier.subscribe(table, "insert")(fn)


def test_connect_rejects_a_one_argument_receiver(setup: Any) -> None:
    notifier, table, _ = setup

    def on_order(event: ChangeEvent) -> None: ...

    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.signal(table, "insert").connect(on_order)
    text = str(info.value)
    assert "the signal of table 'orders' insert calls its receivers as" in text
    assert "fn(sender, event=ChangeEvent)" in text
    assert "on_order(event: 'ChangeEvent')" in text
    assert "@notifier.subscribe(model, operation)" in text
    # connect_via goes through connect too.
    with pytest.raises(SQLNotifyConfigurationError, match="fn\\(sender, event=ChangeEvent\\)"):
        notifier.signal(table, "insert").connect_via(table)(on_order)


def test_on_gap_wants_one_argument(setup: Any) -> None:
    notifier, _, _ = setup
    with pytest.raises(
        SQLNotifyConfigurationError, match=r"on_gap\(\) calls its receivers as fn\(gap\)"
    ):
        notifier.on_gap(lambda sender, gap: None)


def test_a_lambda_connected_to_a_watch_signal_is_called(setup: Any) -> None:
    notifier, table, engine = setup
    seen: list[Any] = []
    notifier.signal(table, "insert").connect(lambda sender, event: seen.append(event.id))

    def make() -> Any:
        def nested(sender: Any, **kw: Any) -> None:
            seen.append(("nested", kw["event"].id))

        return nested

    notifier.signal(table, "insert").connect(make())
    gc.collect()
    notifier.start()
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=3))
    wait_until(lambda: len(seen) == 2, 10, "both receivers called")
    assert sorted(seen, key=str) == [("nested", 3), 3]


def test_weak_true_is_honoured_and_a_weak_lambda_warns(setup: Any) -> None:
    notifier, table, _ = setup
    signal = notifier.signal(table, "insert")
    with pytest.warns(RuntimeWarning, match="a lambda connected with weak=True to the signal of"):
        signal.connect(lambda sender, event: None, weak=True)
    gc.collect()
    recorder = EventRecorder()

    class Owner:
        def on_event(self, sender: Any, event: ChangeEvent) -> None:
            recorder(sender, event=event)

    owner = Owner()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        signal.connect(owner.on_event, weak=True)  # a bound method: no warning
    names = [getattr(r, "__name__", "?") for r in signal.receivers_for(table)]
    assert names == ["on_event"]  # the weak lambda is gone
    del owner
    gc.collect()
    assert [
        r for r in signal.receivers_for(table) if getattr(r, "__name__", "") == "on_event"
    ] == []
