"""SQLModel models are watched exactly like SQLAlchemy declarative models."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlmodel import Field, SQLModel

from sqlnotify import Notifier
from sqlnotify.testing import EventRecorder

pytestmark = pytest.mark.postgresql


class Base(DeclarativeBase):
    pass


class DeclarativeHero(Base):
    __tablename__ = "sqlmodel_heroes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    power: Mapped[int]


class SQLModelHero(SQLModel, table=True):
    __tablename__ = "sqlmodel_heroes"
    id: int | None = Field(default=None, primary_key=True)
    name: str
    power: int


@pytest.mark.parametrize("model", [DeclarativeHero, SQLModelHero], ids=lambda m: m.__name__)
def test_the_same_watches_give_the_same_events(
    model: Any, pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    model.__table__.create(pg_schema_engine)
    notifier = Notifier(pg_schema_engine)
    notifiers.append(notifier)
    notifier.watch(model, "insert", extra_columns=["name"])
    notifier.watch(model, "update", extra_columns=["power"], trigger_columns=["power"])
    inserted, updated, via_blinker = EventRecorder(), EventRecorder(), EventRecorder()
    every_update = EventRecorder()
    notifier.subscribe(model, "insert")(inserted)
    notifier.subscribe(model.__name__, "update", filters={"power": 9})(updated)
    notifier.subscribe("sqlmodel_heroes", "update")(every_update)
    notifier.signal(model, "insert").connect(via_blinker, sender=model)
    notifier.start()

    with Session(pg_schema_engine) as session:
        hero = model(name="Deadpond", power=1)
        session.add(hero)
        session.commit()
        hero.name = "renamed only"
        session.commit()
        hero.power = 9
        session.commit()
        hero_id = hero.id

    (created,) = inserted.wait_for(1, timeout=10)
    (powered,) = updated.wait_for(1, timeout=10)
    assert (created.table, created.operation.value, created.id) == (
        "sqlmodel_heroes",
        "insert",
        hero_id,
    )
    assert created.extra_columns == {"name": "Deadpond"}
    assert powered.id == hero_id and powered.extra_columns == {"power": 9}
    assert isinstance(powered.extra_columns["power"], int)
    via_blinker.wait_for(1, timeout=10)
    assert via_blinker.senders == [model]
    # Events arrive in commit order, so a name-only update would have come first.
    assert [e.id for e in every_update.wait_for(1)] == [hero_id], "name-only updates do not fire"
