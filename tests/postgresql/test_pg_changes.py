"""PostgreSQL: an UPDATE too large for one notification keeps what changed.

With the overflow table the whole payload, ``old`` included, is stored and
fetched; without it the row travels by key and is re-read (hydrated): its
``changed_columns`` still arrive, its old values cannot be read back.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.watching import Watch


@pytest.mark.parametrize("overflow", [True, False], ids=["overflow-table", "by-key"])
def test_large_update_keeps_changed_columns(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch, overflow: bool
) -> None:
    with pg_schema_engine.begin() as conn:
        conn.execute(table.insert().values(id=1, note="small"))
    rec = watched(
        pg_schema_engine,
        table,
        "update",
        extra_columns=["note"],
        include_old=True,
        use_overflow_table=overflow,
    ).events
    big = "x" * 9000
    with pg_schema_engine.begin() as conn:
        conn.execute(table.update().values(note=big))
    (event,) = rec.wait_for(1, timeout=10)
    assert event.changed_columns == ("note",)
    assert event.row["note"] == big
    if overflow:
        assert event.status == "complete"
        assert event.old is not None and dict(event.old) == {"id": 1, "note": "small"}
    else:
        assert event.status == "hydrated"
        assert event.old is None
