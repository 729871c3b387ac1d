"""``sqlnotify listen --backfill``: the rows first, a progress bar on stderr, then changes."""

from __future__ import annotations

import io
import signal
from typing import Any

import pytest
import sqlalchemy as sa
from support.cli import Running

ROWS = 1200


def test_listen_backfill_prints_rows_then_changes(
    pg_url: str, pg_engine: sa.Engine, schema: str
) -> None:
    table = f"{schema}.item"
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".item (id int PRIMARY KEY, note text)')
        conn.exec_driver_sql(
            f"INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g"
        )
    proc = Running(
        "listen",
        pg_url,
        table,
        "--columns",
        "note",
        "--backfill",
        "--consumer",
        "cli-bf",
        "--journal-schema",
        schema,
    )
    try:
        proc.wait_stderr("listening")
        rows = proc.json_lines(ROWS, timeout=30)
        bar = proc.wait_stderr(f"{ROWS}/{ROWS}")
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {table} SET note = 'changed' WHERE id = 7")
        (change,) = proc.json_lines(1)
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.err_lines
    assert [r["operation"] for r in rows] == ["snapshot"] * ROWS
    assert [r["id"] for r in rows] == list(range(1, ROWS + 1))
    assert rows[0]["extra_columns"] == {"note": "row 1"}
    assert "backfill" in bar and "100%" in bar
    assert (change["operation"], change["id"], change["extra_columns"]) == (
        "update",
        7,
        {"note": "changed"},
    )


def test_the_plain_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from sqlnotify.cli import progress

    real = importlib.import_module

    def no_tqdm(name: str, *args: Any) -> Any:
        if name == "tqdm":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(progress.importlib, "import_module", no_tqdm)
    out = io.StringIO()
    draw = progress.progress_bar("shop.orders", out)
    draw(500, None)
    draw(5000, 10_000)
    draw(10_000, 10_000)
    draw(10_000, 10_000)  # an empty last page: not drawn again
    assert out.getvalue().split("\r")[1:] == [
        "backfill shop.orders: [                              ]   0% 500/? rows",
        "backfill shop.orders: [###############               ]  50% 5000/10000 rows",
        "backfill shop.orders: [##############################] 100% 10000/10000 rows\n",
    ]
