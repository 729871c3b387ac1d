"""PostgreSQL bulk writers: row triggers against statement mode (``per_statement=True``)."""

from __future__ import annotations

import statistics
import time

from benchmarks._case import Case, Context, Row
from benchmarks._env import pg_connect
from benchmarks._worker import bench_table
from benchmarks.pg_cases import _backend_cpu, _engine, _schema, _url

#: variant -> (table, watch options); ``None``: no watch.
_VARIANTS: dict[str, tuple[str, dict[str, bool] | None]] = {
    "plain": ("bulk_plain", None),
    "row": ("bulk_row", {}),
    "stmt": ("bulk_stmt", {"per_statement": True}),
    "durable_row": ("bulk_drow", {"durable": True}),
    "durable_stmt": ("bulk_dstmt", {"durable": True, "per_statement": True}),
}
_LABELS = {
    "plain": "no trigger",
    "row": "row triggers",
    "stmt": "statement mode",
    "durable_row": "durable, row triggers",
    "durable_stmt": "durable, statement mode",
}


def _setup(ctx: Context) -> None:
    if "bulk" in ctx.scratch:
        return
    from sqlnotify import Notifier

    schema = _schema(ctx)
    engine = _engine(ctx)
    for table_name, options in _VARIANTS.values():
        table = bench_table(table_name, schema)
        table.metadata.create_all(engine)
        if options is None:
            continue
        notifier = Notifier(engine, use_logger=False)
        for op in ("insert", "update"):
            notifier.watch(table, op, extra_columns=["a", "b"], **options)
        notifier.install()
    ctx.scratch["bulk"] = True


def bulk(ctx: Context) -> dict[str, float]:
    """10,000-row INSERT ... SELECT and UPDATE (one transaction each), then single rows."""
    _setup(ctx)
    schema = _schema(ctx)
    rows = ctx.count(10_000, 500)
    rounds = ctx.count(5, 1)
    singles = ctx.count(300, 20)
    conn = pg_connect(_url(ctx), autocommit=False)
    cpu = _backend_cpu(conn) or (lambda: float("nan"))
    wall: dict[str, list[float]] = {}
    spent: dict[str, list[float]] = {}
    out: dict[str, float] = {}
    with conn.cursor() as cur:
        for r in range(rounds):
            # Interleaved, in a rotating order, so drift hits every variant alike.
            order = list(_VARIANTS.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for variant, (table, _) in order:
                ref = f'"{schema}".{table}'
                for key, sql in (
                    (
                        "insert",
                        f"INSERT INTO {ref} (id, a, b)"
                        f" SELECT g, g, 'bulk row' FROM generate_series(1, {rows:d}) g",
                    ),
                    ("update", f"UPDATE {ref} SET a = a + 1"),
                ):
                    start, cpu0 = time.perf_counter(), cpu()
                    cur.execute(sql)
                    conn.commit()
                    wall.setdefault(f"{key}_{variant}", []).append(
                        (time.perf_counter() - start) * 1000
                    )
                    spent.setdefault(f"{key}_cpu_{variant}", []).append(cpu() - cpu0)
                cur.execute(f"TRUNCATE {ref}")
                conn.commit()
        for variant, (table, _) in _VARIANTS.items():
            sql = f'INSERT INTO "{schema}".{table} (id, a, b) VALUES (%s, %s, %s)'
            start = time.perf_counter()
            for i in range(singles):
                cur.execute(sql, (i, i, "single row"))
                conn.commit()
            out[f"single_{variant}"] = singles / (time.perf_counter() - start)
            cur.execute(f'TRUNCATE "{schema}".{table}')
            conn.commit()
        cur.execute(f'TRUNCATE "{schema}".sqlnotify_journal')
        conn.commit()
    conn.close()
    for key, values in (*wall.items(), *spent.items()):
        out[key] = statistics.median(values)
    return out


def _rows() -> list[Row]:
    rows = []
    for key, what, unit in (
        ("insert", "10k-row INSERT SELECT", "ms"),
        ("insert_cpu", "10k-row INSERT SELECT, server CPU", "ms"),
        ("update", "10k-row UPDATE", "ms"),
        ("update_cpu", "10k-row UPDATE, server CPU", "ms"),
        ("single", "single-row INSERT", "rows/s"),
    ):
        for variant in _VARIANTS:
            base = None if variant == "plain" else f"{key}_plain"
            target = "<=2x" if variant == "stmt" and key in ("insert", "update") else None
            rows.append(Row(f"{key}_{variant}", f"{what}, {_LABELS[variant]}", unit, base, target))
    return rows


BULK = Case(
    name="pg_bulk_statement",
    title="PostgreSQL bulk writers: row triggers and statement mode",
    what=(
        "one 10,000-row INSERT ... SELECT and one 10,000-row UPDATE (wall time with commit,"
        " median of 5 interleaved rounds a run, and the server process's CPU time), then"
        " single-row INSERTs (one transaction each), on the same table without a trigger,"
        " with sqlnotify's row triggers, and with watch(..., per_statement=True), plain and"
        " durable (one insert and one update watch, two extra columns); nobody listens"
    ),
    needs=("postgresql",),
    rows=_rows(),
    run=bulk,
)
