"""MySQL/MariaDB: rejected writes log nothing; TRUNCATE fires no trigger.

The condition guards the trigger's body (``IF ... THEN``), so a rejected row
appends nothing to the change log.  MySQL fires no trigger on ``TRUNCATE``:
a TRUNCATE watch is refused, and ``DELETE`` without ``WHERE`` fires the row
triggers.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from sqlnotify import Notifier, Operation
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder

TIMEOUT = 10.0


@pytest.fixture
def mysql_engine(each_mysql_engine: sa.Engine) -> sa.Engine:
    """This module's tests run on the shared MariaDB and on the private MySQL."""
    return each_mysql_engine


def orders(engine: sa.Engine) -> sa.Table:
    table = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("total", sa.Integer),
        sa.Column("status", sa.String(50)),
    )
    table.metadata.create_all(engine)
    return table


def logged(engine: sa.Engine, channel: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        sql = "SELECT payload FROM sqlnotify_log WHERE channel = %s ORDER BY id"
        return [json.loads(p) for p in conn.exec_driver_sql(sql, (channel,)).scalars()]


def test_rejected_writes_log_nothing(mysql_engine: sa.Engine) -> None:
    table = orders(mysql_engine)
    hostile = "x'); DROP TABLE orders; --\\"
    n = Notifier(mysql_engine).watch(
        table, "update", where=sa.or_(table.c.total > 100, table.c.status == hostile)
    )
    try:
        n.install()
        channel = n.watches[0].channel
        with mysql_engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "total": 1, "status": "new"} for i in (1, 2)])
            conn.execute(table.update().where(table.c.id == 1).values(total=50))
            conn.execute(table.update().where(table.c.id == 2).values(total=None))
        assert logged(mysql_engine, channel) == []
        with mysql_engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == 1).values(total=101))
            conn.execute(table.update().where(table.c.id == 2).values(status=hostile))
        rows = [(p["row"], p["chg"]) for p in logged(mysql_engine, channel)]
        assert rows == [({"id": 1}, []), ({"id": 2}, [])]
    finally:
        n.uninstall()


def test_truncate_is_refused_and_delete_fires_every_row(mysql_engine: sa.Engine) -> None:
    table = orders(mysql_engine)
    with pytest.raises(SQLNotifyConfigurationError, match="no trigger on TRUNCATE"):
        Notifier(mysql_engine).watch(table, "truncate").install()
    with mysql_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "total": i, "status": "s"} for i in (1, 2, 3)])
    n = Notifier(mysql_engine).watch(table, "delete")
    rec = EventRecorder()
    n.subscribe(table, "delete")(rec)
    n.start()
    try:
        with mysql_engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM orders")
        events = rec.wait_for(3, TIMEOUT)
        assert sorted(e.id for e in events) == [1, 2, 3]
        assert {e.operation for e in events} == {Operation.DELETE}
    finally:
        n.stop()
