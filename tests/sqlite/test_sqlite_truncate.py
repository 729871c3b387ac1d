"""SQLite has no TRUNCATE: ``DELETE`` without ``WHERE`` fires the row triggers.

SQLite empties a table without visiting its rows (the "truncate
optimisation") only when the table has no triggers; a watched table has
one, so every row's DELETE event arrives.  A TRUNCATE watch is refused with
that advice.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.watching import Watch, make_table

from sqlnotify import Notifier, Operation
from sqlnotify.exceptions import SQLNotifyConfigurationError


def test_delete_without_where_fires_every_row(sqlite_path: str, watched: Watch) -> None:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    table = make_table(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "note": f"n{i}"} for i in range(1, 6)])
    rec = watched(engine, table, "delete", extra_columns=["note"]).events
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {table.name}")
    events = rec.wait_for(5, timeout=10)
    assert sorted((e.id, e.extra_columns["note"]) for e in events) == [
        (i, f"n{i}") for i in range(1, 6)
    ]
    assert {e.operation for e in events} == {Operation.DELETE}
    engine.dispose()


def test_a_truncate_watch_is_refused_with_advice(
    sqlite_path: str, notifiers: list[Notifier]
) -> None:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    table = make_table(engine)
    n = Notifier(engine).watch(table, "truncate")
    notifiers.append(n)
    with pytest.raises(SQLNotifyConfigurationError, match=r"watch Operation\.DELETE"):
        n.start()
    engine.dispose()
