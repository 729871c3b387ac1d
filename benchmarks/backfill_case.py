"""Backfill (snapshot, then stream) on PostgreSQL: rows per second into a receiver."""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._worker import bench_table
from benchmarks.pg_cases import _engine, _schema

TABLE = "bf_source"
PAGE = 5000


def _rows(ctx: Context) -> int:
    return ctx.count(200_000, 3_000)


def _setup(ctx: Context) -> None:
    if "backfill" in ctx.scratch:
        return
    engine = _engine(ctx)
    table = bench_table(TABLE, _schema(ctx))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        # Filled before any trigger exists: the table's rows, not a journal backlog.
        conn.exec_driver_sql(
            f'INSERT INTO "{_schema(ctx)}".{TABLE} (id, a, b)'
            f" SELECT g, g %% 1000, 'backfilled row ' || g FROM generate_series(1, {_rows(ctx)}) g"
        )
        conn.exec_driver_sql(f'ANALYZE "{_schema(ctx)}".{TABLE}')
    ctx.scratch["backfill"] = True


def backfill(ctx: Context) -> dict[str, float]:
    """A new named consumer backfills the table: start() to the last SNAPSHOT event."""
    from sqlnotify import Notifier

    _setup(ctx)
    rows = _rows(ctx)
    table = bench_table(TABLE, _schema(ctx))
    done = threading.Event()
    count = 0

    def receive(event: Any) -> None:
        nonlocal count
        count += 1
        if count == rows:
            done.set()

    notifier = Notifier(_engine(ctx), use_logger=False, consumer=f"backfill{ctx.run_index}")
    notifier.watch(table, "insert", extra_columns=["a", "b"], durable=True)
    notifier.subscribe(table, "insert")(receive)
    notifier.backfill(table, page_size=PAGE)
    start = time.perf_counter()
    notifier.start()
    finished = done.wait(300)
    elapsed = time.perf_counter() - start
    notifier.stop()
    if not finished:
        raise RuntimeError(f"the backfill delivered {count} of {rows} rows")
    return {"backfill": rows / elapsed}


BACKFILL = Case(
    name="pg_backfill",
    title="Backfill",
    what=(
        "a new named consumer backfills a 200,000-row table (a bigint key and two columns) in"
        " pages of 5,000: rows/s from start() to the last SNAPSHOT event reaching a plain"
        " receiver, typed as the watch's events are"
    ),
    needs=("postgresql",),
    rows=[Row("backfill", "backfill into a receiver", "rows/s", target=">=50000")],
    run=backfill,
)
