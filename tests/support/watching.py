"""The steps most tests begin with: a table, a notifier watching it, a recorder, a start.

``watched(...)`` is also a fixture (see ``conftest.py``) that passes the
test's ``notifiers`` list, so every notifier it makes is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol, TypeVar

import sqlalchemy as sa

from sqlnotify import Notifier, Operation
from sqlnotify.testing import EventRecorder


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


def stopped_at_end() -> Iterator[list[S]]:
    """The body of a fixture collecting what a test starts (notifiers, relays) and stopping
    each at teardown: ``yield from stopped_at_end()``."""
    made: list[S] = []
    yield made
    for each in made:
        each.stop()


def make_table(
    engine: sa.Engine,
    schema: str | None = None,
    name: str = "item",
    columns: Iterable[str] = ("note",),
    **column_options: Any,
) -> sa.Table:
    """Create table ``name``: an integer key ``id`` and a Text column for each of ``columns``."""
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(column, sa.Text, **column_options) for column in columns),
        schema=schema,
    )
    table.create(engine)
    return table


def keyed_table(name: str, *columns: sa.Column[Any]) -> sa.Table:
    """Table ``name`` (not created) of its own metadata: an integer key ``id`` and ``columns``."""
    return sa.Table(name, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), *columns)


def orders_table() -> sa.Table:
    """The ``orders`` table (not created) of the conditions tests: ``id``, ``total``, ``status``."""
    return keyed_table("orders", sa.Column("total", sa.Integer), sa.Column("status", sa.Text))


class Watched(NamedTuple):
    """A notifier and the recorder subscribed to everything it watches."""

    notifier: Notifier
    events: EventRecorder


#: The type of the ``watched`` fixture: :func:`watched` without its first argument.
Watch = Callable[..., Watched]


def watched(
    notifiers: list[Notifier],
    engine: Any,
    table: Any,
    *operations: str | Operation,
    options: Mapping[str, Any] | None = None,
    start: bool = True,
    record: bool = True,
    **watch: Any,
) -> Watched:
    """A notifier on ``engine`` watching ``table`` for ``operations`` (default: insert).

    ``watch`` goes to each ``watch()`` call, ``options`` to the notifier; one
    :class:`EventRecorder` is subscribed to every watched operation (with the
    watch's ``channel_label``, if any) unless ``record=False``.  The notifier is appended to
    ``notifiers`` (stopped at teardown) and, unless ``start=False``, started.
    """
    notifier = Notifier(engine, **(options or {}))
    notifiers.append(notifier)
    recorder = EventRecorder()
    for operation in operations or ("insert",):
        notifier.watch(table, operation, **watch)
        if record:
            notifier.subscribe(table, operation, channel_label=watch.get("channel_label"))(recorder)
    if start:
        notifier.start()
    return Watched(notifier, recorder)


def durable_and_plain(
    notifiers: list[Notifier], engine: Any, table: Any
) -> tuple[Notifier, EventRecorder, EventRecorder]:
    """A notifier (not started) with two inserts watches on ``table``: durable, and plain.

    The plain one has the channel label ``plain``.  Returns the notifier and
    the recorders of the durable watch and of the plain one.
    """
    notifier = (
        Notifier(engine)
        .watch(table, "insert", durable=True)
        .watch(table, "insert", channel_label="plain")
    )
    notifiers.append(notifier)
    durable, plain = EventRecorder(), EventRecorder()
    notifier.subscribe(table, "insert")(durable)
    notifier.subscribe(table, "insert", channel_label="plain")(plain)
    return notifier, durable, plain
