"""SQLite: a write a watch's condition rejects adds no row to the change log.

The trigger's ``WHEN`` holds the condition, so a rejected row costs no log
row at all (and no listener ever reads one); the literal stays a value.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import sqlalchemy as sa
from support.watching import orders_table

from sqlnotify import Notifier


def log_payloads(path: str, channel: str) -> list[str]:
    with closing(sqlite3.connect(path)) as conn, conn:
        sql = "SELECT payload FROM sqlnotify_log WHERE channel = ? ORDER BY seq"
        return [row[0] for row in conn.execute(sql, (channel,))]


def test_rejected_writes_log_nothing(sqlite_path: str, notifiers: list[Notifier]) -> None:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    orders = orders_table()
    orders.create(engine)
    hostile = "x'); DROP TABLE orders; --\\"
    where = sa.or_(orders.c.total > 100, orders.c.status == hostile)
    n = Notifier(engine).watch(orders, "update", where=where)
    notifiers.append(n)
    n.install()
    channel = n.watches[0].channel
    with engine.begin() as conn:
        conn.execute(orders.insert(), [{"id": i, "total": 1, "status": "new"} for i in (1, 2, 3)])
        conn.execute(orders.update().where(orders.c.id == 1).values(total=50))
        conn.execute(orders.update().where(orders.c.id == 2).values(total=None))
    assert log_payloads(sqlite_path, channel) == []
    with engine.begin() as conn:
        conn.execute(orders.update().where(orders.c.id == 2).values(total=101))
        conn.execute(orders.update().where(orders.c.id == 3).values(status=hostile))
    logged = log_payloads(sqlite_path, channel)
    assert [json.loads(p)["row"] for p in logged] == [{"id": 2}, {"id": 3}]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one() == 3
    engine.dispose()
