"""PostgreSQL cases of durable watches: writer cost, catch-up, latency, poll mode."""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import pg_connect
from benchmarks._worker import bench_table
from benchmarks.pg_cases import _backend_cpu, _engine, _fill, _latency, _schema, _url

# -- durable watches ------------------------------------------------------------


def _durable_available() -> str | None:
    import inspect

    from sqlnotify import Notifier

    if "durable" not in inspect.signature(Notifier.watch).parameters:
        return "this sqlnotify has no durable watches (watch(durable=...))"
    return None


def _durable_setup(ctx: Context) -> None:
    if "durable" in ctx.scratch:
        return
    from sqlnotify import Notifier

    schema = _schema(ctx)
    engine = _engine(ctx)
    plain = bench_table("d_plain", schema)
    journaled = bench_table("d_durable", schema)
    replay = bench_table("d_replay", schema)
    for table in (plain, journaled, replay):
        table.metadata.create_all(engine)
    notifier = Notifier(engine, use_logger=False)
    notifier.watch(plain, "insert", extra_columns=["a", "b"])
    notifier.watch(journaled, "insert", extra_columns=["a", "b"], durable=True)
    notifier.install()
    ctx.scratch["durable"] = True


def durable(ctx: Context) -> dict[str, float]:
    """Writer cost of a durable watch against a plain one, then catch-up speed."""
    import sqlalchemy as sa

    from sqlnotify import Notifier

    _durable_setup(ctx)
    schema = _schema(ctx)
    rounds = ctx.count(10, 2)
    per_round = ctx.count(300, 20)
    bulk_per_round = ctx.count(3, 1)
    backlog = ctx.count(100_000, 2_000)
    tables = {"plain": "d_plain", "durable": "d_durable"}
    conn = pg_connect(_url(ctx))
    cpu = _backend_cpu(conn) or (lambda: float("nan"))
    wall = dict.fromkeys(tables, 0.0)
    spent = dict.fromkeys(tables, 0.0)
    bulk_wall = dict.fromkeys(tables, 0.0)
    out: dict[str, float] = {}
    with conn.cursor() as cur:
        for r in range(rounds):
            order = list(tables.items()) if r % 2 == 0 else list(tables.items())[::-1]
            for variant, table in order:
                sql = f'INSERT INTO "{schema}".{table} (a, b) VALUES (%s, %s)'
                start, cpu0 = time.perf_counter(), cpu()
                for i in range(per_round):
                    cur.execute(sql, (i, "single row"))
                wall[variant] += time.perf_counter() - start
                spent[variant] += cpu() - cpu0
                bulk = (
                    f'INSERT INTO "{schema}".{table} (a, b)'
                    " SELECT g, 'bulk row' FROM generate_series(1, 1000) g"
                )
                start = time.perf_counter()
                for _ in range(bulk_per_round):
                    cur.execute(bulk)
                bulk_wall[variant] += time.perf_counter() - start
    conn.close()
    for variant in tables:
        out[f"single_{variant}"] = rounds * per_round / wall[variant]
        out[f"single_cpu_{variant}"] = spent[variant] * 1000 / (rounds * per_round)
        out[f"bulk_{variant}"] = rounds * bulk_per_round * 1000 / bulk_wall[variant]

    # Catch-up: a named consumer is away while ``backlog`` rows are committed.
    engine = sa.create_engine(_url(ctx), pool_size=2, max_overflow=2)
    replay = bench_table("d_replay", schema)
    consumer = f"bench{ctx.run_index}"

    def make() -> Any:
        notifier = Notifier(engine, use_logger=False, consumer=consumer)
        notifier.watch(replay, "insert", extra_columns=["a", "b"], durable=True)
        return notifier

    # A writing transaction stays open in another database of the server
    # from before the consumer stops until it has caught up.
    elsewhere = pg_connect(
        sa.make_url(ctx.pg_url).set(database="postgres").render_as_string(False),
        autocommit=False,
    )
    elsewhere.cursor().execute("SELECT pg_current_xact_id()")
    first = make()
    first.start()
    first.stop()
    _fill(ctx, "d_replay", backlog, per_tx=1000)
    done = threading.Event()
    count = 0

    def receive(event: Any) -> None:
        nonlocal count
        count += 1
        if count == backlog:
            done.set()

    second = make()
    second.subscribe(replay, "insert")(receive)
    start = time.perf_counter()
    second.start()
    finished = done.wait(300)
    elapsed = time.perf_counter() - start
    second.stop()
    elsewhere.close()
    engine.dispose()
    if not finished:
        raise RuntimeError(f"catch-up delivered {count} of {backlog} events")
    out["catch_up"] = backlog / elapsed
    return out


DURABLE = Case(
    name="pg_durable",
    title="Durable watches",
    what=(
        "a durable watch (journal table + NOTIFY) against a plain one on the same table shape:"
        " single-row INSERTs per second and server CPU per row, 1,000-row INSERT statements in"
        " rows/s, in alternating rounds; and catch-up: events/s from start() to the last"
        " event of 100,000 committed while the named consumer was stopped, with a writing"
        " transaction open in another database of the server throughout"
    ),
    needs=("postgresql",),
    rows=[
        Row("single_plain", "single-row INSERT, plain watch", "rows/s"),
        Row("single_durable", "single-row INSERT, durable", "rows/s", "single_plain", ">=0.85x"),
        Row("single_cpu_plain", "single-row INSERT server CPU, plain", "us/row"),
        Row(
            "single_cpu_durable",
            "single-row INSERT server CPU, durable",
            "us/row",
            "single_cpu_plain",
        ),
        Row("bulk_plain", "1,000-row INSERT, plain watch", "rows/s"),
        Row("bulk_durable", "1,000-row INSERT, durable", "rows/s", "bulk_plain"),
        Row(
            "catch_up",
            "catch-up, a transaction open elsewhere",
            "events/s",
            target=">=50000",
        ),
    ],
    run=durable,
    available=_durable_available,
)


DURABLE_LATENCY = Case(
    name="pg_durable_latency",
    title="PostgreSQL latency, durable watch",
    what=(
        "time from the trigger's clock_timestamp() to the receiver, 1,000 single-row"
        " transactions a second, on a table with a plain and a durable insert watch (both"
        " triggers fire for every row): the plain watch's listener (from the payload) against"
        " the durable watch's (woken by the notification, reads the journal)"
    ),
    needs=("postgresql",),
    rows=[
        Row("sqlnotify_p50", "plain watch p50", "ms"),
        Row("durable_p50", "durable watch p50", "ms", "sqlnotify_p50", "<=+0.5", "delta"),
        Row("sqlnotify_p99", "plain watch p99", "ms"),
        Row("durable_p99", "durable watch p99", "ms", "sqlnotify_p99", None, "delta"),
        Row("sqlnotify_rate", "producer rate, plain run", "commits/s"),
        Row("durable_rate", "producer rate, durable run", "commits/s"),
    ],
    run=lambda ctx: _latency(ctx, "insert", ("sqlnotify", "durable"), table="dlat"),
    available=_durable_available,
)


# -- poll mode ---------------------------------------------------------------


#: Poll mode's ``pg_poll_interval`` in the benchmark (its default).
POLL_INTERVAL = 0.5


def poll_latency(ctx: Context) -> dict[str, float]:
    """Commit -> receiver of a durable watch in poll mode, 50 commits a second."""
    out = _latency(
        ctx,
        "insert",
        ("durable", "poll"),
        table="plat",
        rate=50.0,
        counts=(1_000, 40, 50, 5),
        poll_interval=POLL_INTERVAL,
    )
    out["poll_interval"] = POLL_INTERVAL * 1000.0
    return out


POLL_LATENCY = Case(
    name="pg_poll_latency",
    title="PostgreSQL latency, poll mode (pg_listen=False)",
    what=(
        "time from the trigger's clock_timestamp() to the receiver for a durable watch, 50"
        " single-row transactions a second from a separate producer process (sparse enough"
        " for the poller to back off between them): LISTEN mode against poll mode with"
        f" pg_poll_interval={POLL_INTERVAL:g} s (no pooler in between: the journal reads are"
        " the same through one)"
    ),
    needs=("postgresql",),
    rows=[
        Row("poll_interval", "pg_poll_interval", "ms"),
        Row("durable_p50", "LISTEN mode p50", "ms"),
        Row("poll_p50", "poll mode p50", "ms", "poll_interval", "<=+1", "delta"),
        Row("durable_p99", "LISTEN mode p99", "ms"),
        Row("poll_p99", "poll mode p99", "ms", "poll_interval", None, "delta"),
        Row("durable_rate", "producer rate, LISTEN run", "commits/s"),
        Row("poll_rate", "producer rate, poll run", "commits/s"),
    ],
    run=poll_latency,
    available=_durable_available,
)
