"""Fixtures of the PostgreSQL tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from support.pg import model
from support.watching import Watch, Watched, make_table


@pytest.fixture
def Item(pg_engine: sa.Engine, schema: str) -> Any:
    """A mapped class ``Item`` on ``<schema>.items``: an integer key ``id``, nothing else."""
    return model(pg_engine, schema)


@pytest.fixture
def table(pg_schema_engine: sa.Engine) -> sa.Table:
    """The ``item`` table (``id`` key, ``note`` text) in the test's own schema."""
    return make_table(pg_schema_engine)


@pytest.fixture
def consumer(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch
) -> Callable[..., Watched]:
    """``consumer(name, start=False)``: a notifier of durable consumer ``name`` on ``table``."""

    def make(name: str, start: bool = False) -> Watched:
        options = {"consumer": name}
        return watched(pg_schema_engine, table, options=options, start=start, durable=True)

    return make
