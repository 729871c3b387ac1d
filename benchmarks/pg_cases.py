"""PostgreSQL cases: throughput, latency, writer cost, memory, start-up."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import Worker, percentile, pg_connect, pg_schema
from benchmarks._worker import bench_table

_stack: contextlib.ExitStack | None = None


def _schema(ctx: Context) -> str:
    """One schema for the whole run, created on first use and dropped at exit."""
    global _stack
    schema = ctx.scratch.get("pg_schema")
    if schema is None:
        assert ctx.pg_url is not None
        _stack = contextlib.ExitStack()
        schema = _stack.enter_context(pg_schema(ctx.pg_url))
        ctx.scratch["pg_schema"] = schema
    return str(schema)


def close() -> None:
    global _stack
    if _stack is not None:
        _stack.close()
        _stack = None


def _engine(ctx: Context) -> Any:
    import sqlalchemy as sa

    engine = ctx.scratch.get("pg_engine")
    if engine is None:
        engine = sa.create_engine(ctx.pg_url, pool_size=2, max_overflow=4)
        ctx.scratch["pg_engine"] = engine
    return engine


def _watched_table(ctx: Context, name: str, operations: tuple[str, ...] = ("insert",)) -> str:
    """Create ``name`` with sqlnotify's trigger(s) installed; return the insert channel."""
    key = f"table:{name}"
    if key in ctx.scratch:
        return str(ctx.scratch[key])
    from sqlnotify import Notifier

    schema = _schema(ctx)
    engine = _engine(ctx)
    table = bench_table(name, schema)
    table.metadata.create_all(engine)
    notifier = Notifier(engine, use_logger=False)
    for op in operations:
        notifier.watch(table, op, extra_columns=["a", "b"])
    notifier.install()
    channel = notifier.watches[0].channel
    ctx.scratch[key] = channel
    return channel


def _consumer_spec(
    ctx: Context, mode: str, table: str, channel: str, **extra: Any
) -> dict[str, Any]:
    return {
        "role": "consumer",
        "mode": mode,
        "url": ctx.pg_url,
        "schema": _schema(ctx),
        "table": table,
        "channel": channel,
        **extra,
    }


def _modes(ctx: Context, modes: tuple[str, ...]) -> tuple[str, ...]:
    # Alternate the order run by run, so neither side always runs first.
    return modes if ctx.run_index % 2 == 0 else tuple(reversed(modes))


# -- 1. throughput ------------------------------------------------------------


def _fill(ctx: Context, table: str, count: int, per_tx: int = 100) -> float:
    """Commit ``count`` rows, ``per_tx`` a transaction; return the rows/s achieved."""
    conn = pg_connect(str(ctx.pg_url), autocommit=False)
    ref = f'"{_schema(ctx)}"."{table}"'
    start = time.perf_counter()
    with conn.cursor() as cur:
        for first in range(0, count, per_tx):
            n = min(per_tx, count - first)
            cur.execute(
                f"INSERT INTO {ref} (a, b) SELECT g, 'throughput' FROM generate_series(1, %s) g",
                (n,),
            )
            conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


def throughput(ctx: Context) -> dict[str, float]:
    count = ctx.count(100_000, 2_000)
    channel = _watched_table(ctx, "tp")
    out: dict[str, float] = {}
    for mode in _modes(ctx, ("bare", "sqlnotify")):
        with Worker(_consumer_spec(ctx, mode, "tp", channel, count=count)) as worker:
            worker.expect("ready")
            # The consumer is frozen while the producer commits every row, so
            # the producer never competes with it for a core; the clock starts
            # when it is let go, with every notification queued for it.
            os.kill(worker.pid, signal.SIGSTOP)
            try:
                out["fill"] = _fill(ctx, "tp", count)
            finally:
                t0 = time.monotonic()
                os.kill(worker.pid, signal.SIGCONT)
            result = worker.expect("result")
            worker.wait()
        if result["count"] < count:
            raise RuntimeError(f"{mode} received {result['count']} of {count} events")
        out[mode] = count / (result["t_last"] - t0)
    return out


THROUGHPUT = Case(
    name="pg_throughput",
    title="PostgreSQL throughput",
    what=(
        "events/s from a backlog of committed INSERTs (100 rows a transaction, one watch with"
        " two extra columns) to a receiver that only counts; the consumer process is paused"
        " while the producer commits, then timed from resume to the last event"
    ),
    needs=("postgresql",),
    rows=[
        Row("bare", "bare psycopg2 loop", "events/s"),
        Row("sqlnotify", "sqlnotify", "events/s", baseline="bare", target=">=0.7x"),
    ],
    run=throughput,
)


# -- 2. latency ---------------------------------------------------------------


def _latency(ctx: Context, producer_mode: str) -> dict[str, float]:
    count = ctx.count(3_000, 200)
    warmup = ctx.count(300, 20)
    rate = 1000.0
    channel = _watched_table(ctx, "lat")
    out: dict[str, float] = {}
    for mode in _modes(ctx, ("bare", "sqlnotify")):
        spec = _consumer_spec(
            ctx, mode, "lat", channel, count=count, warmup=warmup, measure="latency"
        )
        with Worker(spec) as consumer:
            consumer.expect("ready")
            producer_spec = {
                "role": "producer",
                "mode": producer_mode,
                "url": ctx.pg_url,
                "schema": _schema(ctx),
                "table": "lat",
                "channel": channel,
                "rate": rate,
                "count": count + warmup,
            }
            with Worker(producer_spec) as producer:
                producer.expect("ready")
                produced = producer.expect("result")
                producer.wait()
            result = consumer.expect("result")
            consumer.wait()
        lat = sorted(x * 1000.0 for x in result["latencies"])
        for q in (50, 95, 99):
            out[f"{mode}_p{q}"] = percentile(lat, q)
        out[f"{mode}_rate"] = produced["rate"]
    return out


def _latency_rows() -> list[Row]:
    rows = []
    for q, target in ((50, "<=+0.3"), (95, None), (99, "<=+1")):
        rows.append(Row(f"bare_p{q}", f"bare loop p{q}", "ms"))
        rows.append(Row(f"sqlnotify_p{q}", f"sqlnotify p{q}", "ms", f"bare_p{q}", target))
    return rows


LATENCY = Case(
    name="pg_latency",
    title="PostgreSQL latency, committed INSERT",
    what=(
        "time from the trigger's clock_timestamp() (inside the INSERT, before COMMIT) to the"
        " receiver's time.time(), same host clock; 1,000 single-row transactions a second from"
        " a separate producer process"
    ),
    needs=("postgresql",),
    rows=_latency_rows(),
    run=lambda ctx: _latency(ctx, "insert"),
)

NOTIFY_LATENCY = Case(
    name="pg_notify_latency",
    title="PostgreSQL latency, NOTIFY alone",
    what=(
        "time from the producer's time.time() before it sends SELECT pg_notify() (autocommit,"
        " same payload shape) to the receiver's time.time(); 1,000 a second"
    ),
    needs=("postgresql",),
    rows=_latency_rows(),
    run=lambda ctx: _latency(ctx, "notify"),
)
