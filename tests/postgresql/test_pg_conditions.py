"""PostgreSQL: a write a watch's condition rejects sends nothing and journals nothing.

A connection of the test's own LISTENs on the watch's channel: rejected
writes, then one accepted write; notifications of one session arrive in
commit order, so the first one that arrives is the accepted write's, and
nothing came before it.  Durable watches (row by row, and per statement)
journal only the accepted rows.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from sqlnotify import Notifier
from sqlnotify._names import quote_ident
from sqlnotify.dialects.postgresql import listener_dsn

TIMEOUT = 10.0


@pytest.fixture
def listening(pg_url: str) -> Iterator[Any]:
    conn = psycopg2.connect(**listener_dsn(sa.make_url(pg_url)))
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    try:
        yield conn
    finally:
        conn.close()


def first_notifications(conn: Any) -> list[tuple[str, str]]:
    """Wait (bounded) until notifications arrived; return them all."""
    deadline = time.monotonic() + TIMEOUT
    while not conn.notifies:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no notification arrived"
        select.select([conn], [], [], min(remaining, 0.5))
        conn.poll()
    return [(n.channel, n.payload) for n in conn.notifies]


def journal_rows(engine: sa.Engine, channel: str) -> list[str]:
    with engine.connect() as conn:
        sql = "SELECT payload FROM sqlnotify_journal WHERE channel = %s ORDER BY id"
        return list(conn.exec_driver_sql(sql, (channel,)).scalars())


def table_of_totals(engine: sa.Engine) -> sa.Table:
    table = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("total", sa.Numeric(10, 2)),
        sa.Column("status", sa.Text),
    )
    table.create(engine)
    return table


@pytest.mark.parametrize(
    "options, durable",
    [({}, False), ({}, True), ({"pg_journal_per_statement": True}, True)],
    ids=["plain", "durable", "durable-per-statement"],
)
def test_rejected_writes_send_nothing_and_journal_nothing(
    pg_schema_engine: sa.Engine,
    listening: Any,
    notifiers: list[Notifier],
    options: dict[str, Any],
    durable: bool,
) -> None:
    orders = table_of_totals(pg_schema_engine)
    hostile = "x'); DROP TABLE orders; --$$\\"
    where = sa.and_(orders.c.total > 100, orders.c.status != hostile)
    n = Notifier(pg_schema_engine, **options).watch(orders, "insert", durable=durable, where=where)
    notifiers.append(n)
    n.install()
    channel = n.watches[0].channel
    listening.cursor().execute(f"LISTEN {quote_ident(channel)}")
    with pg_schema_engine.begin() as conn:
        conn.execute(
            orders.insert(),
            [
                {"id": 1, "total": 5, "status": "new"},
                {"id": 2, "total": None, "status": "new"},
                {"id": 3, "total": 500, "status": hostile},
            ],
        )
    with pg_schema_engine.begin() as conn:
        conn.execute(orders.insert(), [{"id": 4, "total": 101, "status": "new"}])
    received = first_notifications(listening)
    assert len(received) == 1 and received[0][0] == channel
    if durable:
        assert received[0][1] == '{"wake":true}'
        (payload,) = journal_rows(pg_schema_engine, channel)
        assert '"id" : 4' in payload or '"id":4' in payload
    else:
        assert '"id" : 4' in received[0][1]
    with pg_schema_engine.connect() as conn:  # the hostile value stayed a value
        assert conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one() == 4
