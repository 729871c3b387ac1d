"""Fixtures of the PostgreSQL tests."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from support.pg import model


@pytest.fixture
def Item(pg_engine: sa.Engine, schema: str) -> Any:
    """A mapped class ``Item`` on ``<schema>.items``: an integer key ``id``, nothing else."""
    return model(pg_engine, schema)
