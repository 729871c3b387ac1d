"""Conditions (``where=``) and TRUNCATE watches refused before any trigger exists, saying why."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from support.watching import orders_table

from sqlnotify import Notifier
from sqlnotify._condition import Condition
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import MemoryDatabase, MemoryDialect

TABLE = orders_table()


def watch(where: Any) -> Notifier:
    return Notifier(sa.create_engine("sqlite://"), dialect=MemoryDialect).watch(
        TABLE, "insert", where=where
    )


@pytest.mark.parametrize("where", [True, "total > 1", 42, TABLE.c.total])
def test_only_boolean_expressions_are_conditions(where: Any) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="SQLAlchemy boolean expression"):
        watch(where)


def test_a_subquery_is_refused() -> None:
    sub = sa.select(TABLE.c.id).where(TABLE.c.total > 1).scalar_subquery()
    with pytest.raises(SQLNotifyConfigurationError, match="subquery"):
        watch(TABLE.c.id == sub)


def test_a_parameter_without_value_is_refused() -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="'limit' without a value"):
        watch(TABLE.c.total > sa.bindparam("limit"))


def test_a_value_without_literal_form_is_refused_naming_the_condition() -> None:
    condition = Condition.build(TABLE.c.status == sa.literal(object(), sa.Text))
    with pytest.raises(SQLNotifyConfigurationError, match="cannot be written into a sqlite"):
        condition.render(sa.create_engine("sqlite://").dialect, "NEW")


def test_the_memory_dialect_refuses_what_it_cannot_evaluate_at_start() -> None:
    engine = sa.create_engine("sqlite://")
    MemoryDatabase.of(engine).define(TABLE)
    n = Notifier(engine, dialect=MemoryDialect).watch(TABLE, "insert", where=TABLE.c.id % 2 == 0)
    with pytest.raises(SQLNotifyConfigurationError, match="does not evaluate"):
        n.install()


def test_the_key_holds_the_values_so_different_values_differ() -> None:
    assert Condition.build(TABLE.c.total > 1).key != Condition.build(TABLE.c.total > 2).key
    assert Condition.build(TABLE.c.total > 1).key == Condition.build(TABLE.c.total > 1).key


def test_the_memory_dialect_refuses_truncate() -> None:
    engine = sa.create_engine("sqlite://")
    MemoryDatabase.of(engine).define(TABLE)
    n = Notifier(engine, dialect=MemoryDialect).watch(TABLE, "truncate")
    with pytest.raises(SQLNotifyConfigurationError, match="no TRUNCATE"):
        n.install()
