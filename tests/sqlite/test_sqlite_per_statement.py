"""``per_statement=True`` is a PostgreSQL option: SQLite's triggers fire row by row anyway."""

from __future__ import annotations

import sqlalchemy as sa
from support.watching import Watch, make_table


def test_per_statement_watch_delivers_every_row(sqlite_path: str, watched: Watch) -> None:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    table = make_table(engine)
    rec = watched(engine, table, "insert", extra_columns=["note"], per_statement=True).events
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "note": f"n{i}"} for i in range(1, 6)])
    events = rec.wait_for(5, timeout=10)
    assert [(e.id, e.extra_columns["note"]) for e in events] == [(i, f"n{i}") for i in range(1, 6)]
    engine.dispose()
