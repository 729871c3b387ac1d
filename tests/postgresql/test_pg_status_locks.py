"""``status`` walks the whole database without deadlocking with concurrent DDL."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from support.faults import insert
from support.watching import make_table

from sqlnotify import Notifier
from sqlnotify.testing import wait_until


def waits_for_item(engine: sa.Engine, schema: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE relation = to_regclass(:t) AND NOT granted"
            ),
            {"t": f'"{schema}"."item"'},
        ).scalar_one()
    return bool(found)


def test_status_gives_way_to_a_drop_schema_under_way(
    pg_schema_engine: sa.Engine, pg_engine: sa.Engine, schema: str
) -> None:
    # DROP SCHEMA ... CASCADE locks the schema's objects one by one.  Here a
    # session has locked the watched table and then asks for the registry
    # table: a status walk holding the registry's lock while it reads the
    # table deadlocks with it; one that reads each object in a transaction of
    # its own lets it through and reports the table as locked.
    table = make_table(pg_schema_engine)
    n = Notifier(pg_schema_engine).watch(table, "insert")
    n.start()
    insert(pg_schema_engine, table, [1])
    n.stop()
    result: dict[str, Any] = {}

    def run_status() -> None:
        try:
            result["rows"] = n.dialect.status()
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    with pg_engine.connect() as ddl:
        ddl.exec_driver_sql("SET lock_timeout = '20s'")
        ddl.exec_driver_sql(f'LOCK TABLE "{schema}"."item" IN ACCESS EXCLUSIVE MODE')
        walker = threading.Thread(target=run_status, name="status-walk")
        walker.start()
        try:
            # Once the walk waits for the table, ask for the registry.
            wait_until(
                lambda: waits_for_item(pg_engine, schema) or not walker.is_alive(),
                timeout=30,
                message="the status walk reaching the locked table",
            )
            ddl.exec_driver_sql(f'LOCK TABLE "{schema}"."sqlnotify_users" IN ACCESS EXCLUSIVE MODE')
        finally:
            ddl.rollback()
            walker.join(60)
    assert not walker.is_alive()
    assert "error" not in result, result.get("error")
    mine = [r for r in result["rows"] if r["schema"] == schema]
    assert [r["table"] for r in mine] == ["item"]
    assert mine[0]["state"] in ("locked", "installed")


def test_status_reports_a_locked_table_instead_of_waiting(
    pg_schema_engine: sa.Engine, table: sa.Table, pg_engine: sa.Engine, schema: str
) -> None:
    n = Notifier(pg_schema_engine).watch(table, "insert")
    n.start()
    n.stop()
    with pg_engine.connect() as ddl:
        ddl.exec_driver_sql(f'LOCK TABLE "{schema}"."item" IN ACCESS EXCLUSIVE MODE')
        try:
            rows = n.dialect.status()
        finally:
            ddl.rollback()
    assert [r["state"] for r in rows if r["schema"] == schema] == ["locked"]
    rows = n.dialect.status()
    assert [r["state"] for r in rows if r["schema"] == schema] == ["installed"]
