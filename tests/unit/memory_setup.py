"""What the ``test_memory_*`` unit tests share: a notifier on the in-memory dialect.

Import the fixture into a test module with
``from memory_setup import memory_fixture  # noqa: F401`` (it is named ``memory``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sqlnotify import Notifier
from sqlnotify.testing import MemoryDatabase, MemoryDialect

#: Bound of every wait in these tests (they finish in milliseconds).
TIMEOUT = 5.0


def item_table(name: str = "item") -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text),
    )


class Memory:
    """An in-memory database with one table, and the notifiers a test makes on it."""

    def __init__(self) -> None:
        self.engine = sa.create_engine("sqlite://")
        self.db = MemoryDatabase.of(self.engine)
        self.table = self.db.define(item_table())
        self.notifiers: list[Notifier] = []

    def notifier(self, *operations: str, **options: Any) -> Notifier:
        """A notifier watching ``operations`` (default insert) on the table, extra column name."""
        n = Notifier(self.engine, dialect=MemoryDialect, **options)
        for op in operations or ("insert",):
            n.watch(self.table, op, extra_columns=["name"])
        self.notifiers.append(n)
        return n

    def insert(self, *ids: int, name: str = "x") -> None:
        for i in ids:
            self.db.insert(self.table, {"id": i, "name": name})

    def close(self) -> None:
        for n in self.notifiers:
            n.stop()
        self.engine.dispose()


@pytest.fixture(name="memory")
def memory_fixture() -> Iterator[Memory]:
    m = Memory()
    try:
        yield m
    finally:
        m.close()
