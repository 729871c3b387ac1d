"""PostgreSQL cases of richer events: a server-side condition, and ``include_old``.

Both measure what the writer pays, single-row statements each in its own
transaction, nobody listening, the tables taking turns statement by statement so
drift hits all of them alike.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import pg_connect
from benchmarks._worker import bench_table
from benchmarks.pg_cases import _engine, _schema, _url


def _install(ctx: Context, name: str, operation: str, **watch: Any) -> None:
    """Create table ``name``; with ``watch`` options, install its watch."""
    from sqlnotify import Notifier

    table = bench_table(name, _schema(ctx))
    table.metadata.create_all(_engine(ctx))
    if watch:
        where = watch.pop("where", None)
        notifier = Notifier(_engine(ctx), use_logger=False)
        notifier.watch(
            table,
            operation,
            extra_columns=["a", "b"],
            where=where(table) if where else None,
            **watch,
        )
        notifier.install()


def _run(ctx: Context, sql: str) -> None:
    conn = pg_connect(_url(ctx))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _interleaved(
    ctx: Context, tables: dict[str, str], statement: str, rows: int
) -> dict[str, float]:
    """Microseconds per single-row ``statement`` (``{table}``, ``%s`` = i) on each table.

    The tables take turns statement by statement (the order reversed every
    other row), so a slow commit flush or a burst of load elsewhere lands on
    all of them alike instead of on whichever block of rows it hit.
    """
    schema = _schema(ctx)
    rounds = ctx.count(10, 2)
    spent = dict.fromkeys(tables, 0.0)
    sqls = [
        (variant, statement.format(table=f'"{schema}".{table}'))
        for variant, table in tables.items()
    ]
    conn = pg_connect(_url(ctx))
    try:
        with conn.cursor() as cur:
            for r in range(rounds):
                for i in range(rows):
                    order = sqls if (r * rows + i) % 2 else sqls[::-1]
                    for variant, sql in order:
                        start = time.perf_counter()
                        cur.execute(sql, (i,))
                        spent[variant] += time.perf_counter() - start
    finally:
        conn.close()
    return {variant: spent[variant] * 1e6 / (rounds * rows) for variant in tables}


# -- a condition that rejects 99% of the writes -----------------------------------

_CONDITION_TABLES = {"plain": "cond_plain", "condition": "cond_watch"}


def condition(ctx: Context) -> dict[str, float]:
    if "condition" not in ctx.scratch:
        _install(ctx, "cond_plain", "insert")
        _install(ctx, "cond_watch", "insert", where=lambda t: t.c.a % 100 == 99)
        ctx.scratch["condition"] = True
    per_round = ctx.count(300, 20)
    for table in _CONDITION_TABLES.values():
        _run(ctx, f'TRUNCATE "{_schema(ctx)}".{table}')
    us = _interleaved(
        ctx,
        _CONDITION_TABLES,
        "INSERT INTO {table} (a, b) VALUES (%s, 'single row')",
        per_round,
    )
    return {f"insert_{variant}": value for variant, value in us.items()}


CONDITION = Case(
    name="pg_condition_writer",
    title="PostgreSQL writer cost of a rejecting condition",
    what=(
        "single-row INSERTs (one transaction each), microseconds per row, on a table without"
        " a trigger and on a watched table whose where= condition (a % 100 = 99) rejects 99%"
        " of the rows; nobody listens"
    ),
    needs=("postgresql",),
    rows=[
        Row("insert_plain", "single-row INSERT, no trigger", "us/row"),
        Row(
            "insert_condition",
            "single-row INSERT, watch rejecting 99%",
            "us/row",
            "insert_plain",
            "<=1.1x",
        ),
    ],
    run=condition,
)


# -- include_old on single-row UPDATEs ----------------------------------------------

_OLD_TABLES = {"new_only": "old_without", "include_old": "old_with"}


def include_old(ctx: Context) -> dict[str, float]:
    per_round = ctx.count(300, 20)
    if "include_old" not in ctx.scratch:
        _install(ctx, "old_without", "update")
        _install(ctx, "old_with", "update", include_old=True)
        for table in _OLD_TABLES.values():
            _run(
                ctx,
                f'INSERT INTO "{_schema(ctx)}".{table} (id, a, b)'
                f" SELECT g, g, 'row' FROM generate_series(0, {per_round - 1}) g",
            )
        ctx.scratch["include_old"] = True
    us = _interleaved(ctx, _OLD_TABLES, "UPDATE {table} SET a = a + 1 WHERE id = %s", per_round)
    return {f"update_{variant}": value for variant, value in us.items()}


INCLUDE_OLD = Case(
    name="pg_include_old",
    title="PostgreSQL include_old cost",
    what=(
        "single-row UPDATEs (one transaction each), microseconds per row, of a watched table"
        " (two extra columns) without and with include_old=True; nobody listens"
    ),
    needs=("postgresql",),
    rows=[
        Row("update_new_only", "single-row UPDATE, watch without include_old", "us/row"),
        Row(
            "update_include_old",
            "single-row UPDATE, watch with include_old=True",
            "us/row",
            "update_new_only",
            "<=1.15x",
        ),
    ],
    run=include_old,
)
