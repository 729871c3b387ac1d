"""PostgreSQL: TRUNCATE is an event, once per truncated table, with no row.

A statement-level ``AFTER TRUNCATE`` trigger sends it (plain watch) or
journals it and sends a wake-up (durable watch, delivered with its position,
also after a restart).  ``TRUNCATE ... CASCADE`` fires the trigger of every
table it empties.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.watching import Watch

from sqlnotify import Notifier, Operation
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder

TIMEOUT = 10.0


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
def test_truncate_is_one_event_without_a_row(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch, durable: bool
) -> None:
    n, rec = watched(pg_schema_engine, table, "truncate", "insert", durable=durable)
    with pg_schema_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "note": "x"} for i in (1, 2, 3)])
        conn.exec_driver_sql(f"TRUNCATE {table.name}")
    with pg_schema_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 9, "note": "after"}])
    events = rec.wait_for(5, TIMEOUT)
    assert [e.operation for e in events] == [Operation.INSERT] * 3 + [
        Operation.TRUNCATE,
        Operation.INSERT,
    ]
    truncated = events[3]
    assert truncated.table == table.name and truncated.id is None
    assert dict(truncated.row) == {} and truncated.status == "complete"
    assert truncated.changed_columns is None and truncated.old is None
    assert truncated.to_dict()["operation"] == "truncate"
    if durable:
        assert isinstance(truncated.position, int)
        with pg_schema_engine.connect() as conn:
            sql = "SELECT count(*) FROM sqlnotify_journal WHERE channel = %s"
            channel = next(w.channel for w in n.watches if w.operation is Operation.TRUNCATE)
            assert conn.exec_driver_sql(sql, (channel,)).scalar_one() == 1


def test_durable_truncate_is_delivered_after_a_restart(
    pg_schema_engine: sa.Engine, table: sa.Table, notifiers: list[Notifier]
) -> None:
    def consumer() -> tuple[Notifier, EventRecorder]:
        n = Notifier(pg_schema_engine, consumer="truncates").watch(table, "truncate", durable=True)
        notifiers.append(n)
        rec = EventRecorder()
        n.subscribe(table, "truncate")(rec)
        return n, rec

    first, _ = consumer()
    first.start()
    first.stop()
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {table.name}")
    second, rec = consumer()
    second.start()
    (event,) = rec.wait_for(1, TIMEOUT)
    assert event.operation is Operation.TRUNCATE and event.position is not None


def test_truncate_cascade_fires_for_each_table(pg_schema_engine: sa.Engine, watched: Watch) -> None:
    meta = sa.MetaData()
    parent = sa.Table("parent", meta, sa.Column("id", sa.Integer, primary_key=True))
    child = sa.Table(
        "child",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.ForeignKey("parent.id")),
    )
    meta.create_all(pg_schema_engine)
    n, rec = watched(pg_schema_engine, parent, "truncate", start=False)
    n.watch(child, "truncate")
    n.subscribe(child, "truncate")(rec)
    n.start()
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE parent CASCADE")
    events = rec.wait_for(2, TIMEOUT)
    assert sorted(e.table for e in events) == ["child", "parent"]


def test_a_truncate_watch_takes_no_row_options(
    pg_schema_engine: sa.Engine, table: sa.Table
) -> None:
    n = Notifier(pg_schema_engine)
    with pytest.raises(SQLNotifyConfigurationError, match="TRUNCATE event has no row"):
        n.watch(table, "truncate", extra_columns=["note"])
    with pytest.raises(SQLNotifyConfigurationError, match="TRUNCATE event has no row"):
        n.watch(table, "truncate", where=table.c.id > 1)
