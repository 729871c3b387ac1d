"""PostgreSQL cases: throughput, latency, writer cost, memory, start-up.

The cases of durable watches and poll mode are in :mod:`benchmarks.pg_durable_cases`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import Worker, percentile, pg_connect, pg_schema, schema_url
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


def _url(ctx: Context) -> str:
    """The run's URL with ``search_path`` set to its schema.

    Everything a case creates without naming a schema (the durable journal,
    the consumers' table, the trigger registry) then lands in the run's own
    schema and is dropped with it, never in ``public``.
    """
    assert ctx.pg_url is not None
    return schema_url(ctx.pg_url, _schema(ctx))


def close() -> None:
    global _stack
    if _stack is not None:
        _stack.close()
        _stack = None


def _engine(ctx: Context) -> Any:
    import sqlalchemy as sa

    engine = ctx.scratch.get("pg_engine")
    if engine is None:
        engine = sa.create_engine(_url(ctx), pool_size=2, max_overflow=4)
        ctx.scratch["pg_engine"] = engine
    return engine


def _watched_table(
    ctx: Context, name: str, operations: tuple[str, ...] = ("insert",), durable: bool = False
) -> str:
    """Create ``name`` with sqlnotify's trigger(s) installed; return the insert channel.

    ``durable``: the table also gets a durable insert watch (label ``durable``),
    so every row is both notified and journalled whichever side listens.
    """
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
    if durable:
        notifier.watch(
            table, "insert", extra_columns=["a", "b"], durable=True, channel_label="durable"
        )
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
        "url": _url(ctx),
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
    conn = pg_connect(_url(ctx), autocommit=False)
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


def throughput(ctx: Context, modes: tuple[str, ...] = ("bare", "sqlnotify")) -> dict[str, float]:
    count = ctx.count(200_000, 2_000)
    channel = _watched_table(ctx, "tp")
    out: dict[str, float] = {}
    # A-B-B-A, best of two per side: drift hits both sides alike, and a drain
    # slowed by other work on the machine does not count.
    order = _modes(ctx, modes)
    for mode in (*order, *reversed(order)):
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
        out[mode] = max(out.get(mode, 0.0), count / (result["t_last"] - t0))
    return out


THROUGHPUT = Case(
    name="pg_throughput",
    title="PostgreSQL throughput",
    what=(
        "events/s from a backlog of committed INSERTs (100 rows a transaction, one watch with"
        " two extra columns) to a receiver that only counts; the consumer process is paused"
        " while the producer commits, then timed from resume to the last event; each run"
        " drains twice per side (A-B-B-A) and keeps the better drain"
    ),
    needs=("postgresql",),
    rows=[
        Row("bare", "bare psycopg2 loop", "events/s"),
        Row("sqlnotify", "sqlnotify", "events/s", baseline="bare", target=">=0.7x"),
    ],
    run=throughput,
)


# -- 2. latency ---------------------------------------------------------------


def _latency(
    ctx: Context,
    producer_mode: str,
    modes: tuple[str, ...] = ("bare", "sqlnotify"),
    table: str = "lat",
    rate: float = 1000.0,
    counts: tuple[int, int, int, int] = (3_000, 200, 300, 20),
    **more: Any,
) -> dict[str, float]:
    """p50/p95/p99 and the producer's rate of each mode; ``counts``: events and
    warm-up events, full and smoke; ``more``: more of the consumers' spec."""
    count = ctx.count(counts[0], counts[1])
    warmup = ctx.count(counts[2], counts[3])
    channel = _watched_table(ctx, table, durable=bool({"durable", "poll"} & set(modes)))
    out: dict[str, float] = {}
    for mode in _modes(ctx, modes):
        spec = _consumer_spec(
            ctx, mode, table, channel, count=count, warmup=warmup, measure="latency", **more
        )
        with Worker(spec) as consumer:
            consumer.expect("ready")
            producer_spec = {
                "role": "producer",
                "mode": producer_mode,
                "url": _url(ctx),
                "schema": _schema(ctx),
                "table": table,
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
        rows.append(Row(f"sqlnotify_p{q}", f"sqlnotify p{q}", "ms", f"bare_p{q}", target, "delta"))
    # A producer that fell behind its 1,000/s measured something else: show it.
    rows.append(Row("bare_rate", "producer rate, bare loop run", "commits/s"))
    rows.append(Row("sqlnotify_rate", "producer rate, sqlnotify run", "commits/s"))
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


# -- 5. the asyncio bridge -----------------------------------------------------


def _aio_available() -> str | None:
    from sqlnotify import Notifier

    if not hasattr(Notifier, "astart"):
        return "this sqlnotify has no asyncio bridge (Notifier.astart)"
    return None


def aio(ctx: Context) -> dict[str, float]:
    out = {f"tp_{k}": v for k, v in throughput(ctx, ("sqlnotify", "aio")).items()}
    out.update(_latency(ctx, "insert", ("sqlnotify", "aio")))
    return out


AIO = Case(
    name="aio_bridge",
    title="asyncio bridge",
    what=(
        "an async def receiver on the loop that ran astart(), against the same receiver as a"
        " plain function on the dispatcher thread: throughput as in pg_throughput, latency as"
        " in pg_latency"
    ),
    needs=("postgresql",),
    rows=[
        Row("tp_sqlnotify", "throughput, sync receiver", "events/s"),
        Row("tp_aio", "throughput, async def receiver", "events/s", "tp_sqlnotify", ">=0.5x"),
        Row("sqlnotify_p50", "latency p50, sync receiver", "ms"),
        Row("aio_p50", "latency p50, async def receiver", "ms", "sqlnotify_p50", "<=+0.3", "delta"),
        Row("sqlnotify_p99", "latency p99, sync receiver", "ms"),
        Row("aio_p99", "latency p99, async def receiver", "ms", "sqlnotify_p99", None, "delta"),
    ],
    run=aio,
    available=_aio_available,
)


# -- 3. writer cost -----------------------------------------------------------

_HAND_SQL = """\
CREATE OR REPLACE FUNCTION "{schema}".hand_{op}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hand_{op}', json_build_object('id', NEW.id, 'a', NEW.a, 'b', NEW.b)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER hand_{op} AFTER {OP} ON "{schema}".w_hand
FOR EACH ROW EXECUTE FUNCTION "{schema}".hand_{op}();
"""

# One notification per ~7 KB of rows, from the statement's transition table.
_STMT_SQL = """\
CREATE OR REPLACE FUNCTION "{schema}".stmt_{op}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    chunk record;
BEGIN
    FOR chunk IN
        SELECT '[' || string_agg(j, ',' ORDER BY n) || ']' AS payload
        FROM (SELECT j, n, sum(octet_length(j)) OVER (ORDER BY n) / 7000 AS part
              FROM (SELECT row_to_json(c)::text AS j, row_number() OVER () AS n
                    FROM (SELECT id, a, b FROM changed) c) numbered) parts
        GROUP BY part
    LOOP
        PERFORM pg_notify('stmt_{op}', chunk.payload);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER stmt_{op} AFTER {OP} ON "{schema}".w_stmt
REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".stmt_{op}();
"""

_WRITER_TABLES = {"plain": "w_plain", "hand": "w_hand", "stmt": "w_stmt", "sqlnotify": "w_watch"}


def _writer_setup(ctx: Context) -> None:
    if "writer" in ctx.scratch:
        return
    schema = _schema(ctx)
    engine = _engine(ctx)
    for name in ("w_plain", "w_hand", "w_stmt"):
        bench_table(name, schema).metadata.create_all(engine)
    _watched_table(ctx, "w_watch", ("insert", "update"))
    conn = pg_connect(_url(ctx))
    with conn.cursor() as cur:
        for op in ("insert", "update"):
            cur.execute(_HAND_SQL.format(schema=schema, op=op, OP=op.upper()))
            cur.execute(_STMT_SQL.format(schema=schema, op=op, OP=op.upper()))
    conn.close()
    ctx.scratch["writer"] = True


def _backend_cpu(conn: Any) -> Any:
    """A function returning the connection's server process CPU time in ms, if readable."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    path = f"/proc/{pid}/schedstat"
    try:
        with open(path, encoding="ascii") as fh:
            fh.read()
    except OSError:
        return None

    def cpu_ms() -> float:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().split()[0]) / 1e6

    return cpu_ms


def writer(ctx: Context) -> dict[str, float]:
    """Single-row INSERTs (each its own transaction), then 10,000-row statements."""
    _writer_setup(ctx)
    schema = _schema(ctx)
    rounds = ctx.count(10, 2)
    per_round = ctx.count(300, 20)
    bulk = ctx.count(10_000, 500)
    conn = pg_connect(_url(ctx))
    cpu = _backend_cpu(conn) or (lambda: float("nan"))
    wall = dict.fromkeys(_WRITER_TABLES, 0.0)
    spent = dict.fromkeys(_WRITER_TABLES, 0.0)
    out: dict[str, float] = {}
    with conn.cursor() as cur:
        # Interleave the tables round by round, so drift hits all of them alike.
        for r in range(rounds):
            order = list(_WRITER_TABLES.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for variant, table in order:
                sql = f'INSERT INTO "{schema}".{table} (a, b) VALUES (%s, %s)'
                start, cpu0 = time.perf_counter(), cpu()
                for i in range(per_round):
                    cur.execute(sql, (i, "single row"))
                wall[variant] += time.perf_counter() - start
                spent[variant] += cpu() - cpu0
        rows = rounds * per_round
        for variant in _WRITER_TABLES:
            out[f"insert_{variant}"] = rows / wall[variant]
            out[f"insert_cpu_{variant}"] = spent[variant] * 1000 / rows
        for table in _WRITER_TABLES.values():
            cur.execute(f'TRUNCATE "{schema}".{table}')
        conn.autocommit = False
        for variant, table in _WRITER_TABLES.items():
            ref = f'"{schema}".{table}'
            statements = (
                (
                    "bulk_insert",
                    f"INSERT INTO {ref} (a, b)"
                    f" SELECT g, 'bulk row' FROM generate_series(1, {bulk:d}) g",
                ),
                ("bulk_update", f"UPDATE {ref} SET a = a + 1"),
            )
            for key, sql in statements:
                start, cpu0 = time.perf_counter(), cpu()
                cur.execute(sql)
                conn.commit()
                out[f"{key}_{variant}"] = (time.perf_counter() - start) * 1000
                out[f"{key}_cpu_{variant}"] = cpu() - cpu0
            cur.execute(f"TRUNCATE {ref}")
            conn.commit()
    conn.close()
    return out


_VARIANTS = (
    ("plain", "no trigger"),
    ("hand", "hand-written trigger"),
    ("stmt", "statement-level trigger"),
    ("sqlnotify", "sqlnotify trigger"),
)


def _writer_rows() -> list[Row]:
    rows = []
    for key, what, unit, target in (
        ("insert", "single-row INSERT", "rows/s", ">=0.9x"),
        ("insert_cpu", "single-row INSERT, server CPU", "us/row", "<=1.1x"),
        ("bulk_insert", "10k-row INSERT SELECT", "ms", "<=2x"),
        ("bulk_insert_cpu", "10k-row INSERT SELECT, server CPU", "ms", "<=2x"),
        ("bulk_update", "10k-row UPDATE", "ms", "<=2x"),
        ("bulk_update_cpu", "10k-row UPDATE, server CPU", "ms", "<=2x"),
    ):
        single = key.startswith("insert")
        for variant, label in _VARIANTS:
            base = None if variant == "plain" else f"{key}_plain"
            goal = None
            if variant == "sqlnotify":
                # Single rows: against the hand-written trigger; bulk: against no trigger.
                base = f"{key}_hand" if single else base
                goal = target
            rows.append(Row(f"{key}_{variant}", f"{what}, {label}", unit, base, goal))
    return rows


WRITER = Case(
    name="pg_writer",
    title="PostgreSQL writer cost",
    what=(
        "what a watch costs the writer: single-row INSERTs (one transaction each) per second"
        " and the server process's CPU time per row, and one 10,000-row INSERT ... SELECT and"
        " one 10,000-row UPDATE (wall time with commit, and server CPU time), on the same"
        " table without a trigger, with a minimal hand-written row trigger"
        " (PERFORM pg_notify(json_build_object(...))), with a hand-written statement-level"
        " trigger (transition table, one notification per ~7 KB of rows), and with"
        " sqlnotify's (one watch per operation, two extra columns); nobody listens; server"
        " CPU is read from /proc/<backend pid>/schedstat when the server runs on this host"
    ),
    needs=("postgresql",),
    rows=_writer_rows(),
    run=writer,
)


# -- 6. memory ----------------------------------------------------------------

_NOTIFY_SQL = """\
SELECT count(pg_notify(%s, json_build_object(
    'ts', extract(epoch from clock_timestamp()),
    'row', json_build_object('id', g, 'a', g, 'b', 'memory'))::text))
FROM generate_series(%s, %s) g"""


def memory(ctx: Context) -> dict[str, float]:
    total = ctx.count(1_000_000, 5_000)
    warmup = ctx.count(100_000, 1_000)
    chunk = ctx.count(5_000, 500)
    window = chunk * 8
    channel = _watched_table(ctx, "mem")
    out: dict[str, float] = {}
    conn = pg_connect(_url(ctx), autocommit=False)
    for mode in _modes(ctx, ("bare", "sqlnotify")):
        spec = _consumer_spec(
            ctx,
            mode,
            "mem",
            channel,
            count=total,
            warmup=warmup,
            measure="memory",
            progress=chunk,
        )
        with Worker(spec, timeout=600) as worker, conn.cursor() as cur:
            worker.expect("ready")
            sent = received = 0
            before = after = None
            # Flow control: never more than a few chunks ahead of the consumer,
            # so what grows is the consumer's own state, not a backlog.  The
            # warm-up goes the same way, so "before" already holds what a
            # steady stream keeps in flight.
            while after is None:
                if sent < warmup + total and sent - received < window:
                    n = min(chunk, warmup + total - sent)
                    cur.execute(_NOTIFY_SQL, (channel, sent + 1, sent + n))
                    conn.commit()
                    sent += n
                    continue
                message = worker.next()
                if "progress" in message:
                    received = message["progress"]
                elif "warm" in message:
                    before = message["warm"]["rss"]
                elif "result" in message:
                    after = message["result"]["rss"]
            worker.wait()
        assert before is not None
        out[f"{mode}_before"] = before / 2**20
        out[f"{mode}_after"] = after / 2**20
        out[f"{mode}_growth"] = (after - before) / 2**20
    conn.close()
    return out


MEMORY = Case(
    name="pg_memory",
    title="Listener memory",
    what=(
        "resident memory (VmRSS) of a consumer process after a warm-up of 100,000 events and"
        " after 1,000,000 more, sent with pg_notify() in transactions of 5,000, never more"
        " than 40,000 ahead of the consumer"
    ),
    needs=("postgresql",),
    rows=[
        Row("bare_before", "bare loop RSS after warm-up", "MB"),
        Row("bare_growth", "bare loop growth", "MB"),
        Row("sqlnotify_before", "sqlnotify RSS after warm-up", "MB"),
        Row("sqlnotify_growth", "sqlnotify growth", "MB", target="<=10"),
    ],
    run=memory,
    max_repeat=2,
)


# -- 7. start-up --------------------------------------------------------------

_DDL_WORDS = ("CREATE", "DROP", "ALTER", "COMMENT")


def _startup_setup(ctx: Context, n: int) -> list[Any]:
    tables = ctx.scratch.get("startup_tables")
    if tables is None:
        import sqlalchemy as sa

        schema = _schema(ctx)
        metadata = sa.MetaData()
        tables = [
            sa.Table(
                f"s{i:02d}",
                metadata,
                sa.Column("id", sa.BigInteger, primary_key=True),
                sa.Column("a", sa.Integer),
                sa.Column("b", sa.Text),
                schema=schema,
            )
            for i in range(n)
        ]
        metadata.create_all(_engine(ctx))
        ctx.scratch["startup_tables"] = tables
    return list(tables)


def startup(ctx: Context) -> dict[str, float]:
    import sqlalchemy as sa

    from sqlnotify import Notifier

    n = ctx.count(50, 5)
    tables = _startup_setup(ctx, n)
    engine = sa.create_engine(_url(ctx), pool_size=2, max_overflow=2)
    ddl = [0]

    # Every engine of the process: installation runs on connections of its own.
    def count_ddl(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(_DDL_WORDS):
            ddl[0] += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count_ddl)

    def make() -> Notifier:
        # cleanup_grace=0: the uninstall below really removes the triggers
        # earlier runs used, so the first start installs every one.
        notifier = Notifier(engine, use_logger=False, cleanup_grace=0)
        for table in tables:
            notifier.watch(table, "insert", extra_columns=["a", "b"])
        return notifier

    out: dict[str, float] = {}
    cold = make()
    cold.uninstall()
    for label in ("first", "second"):
        notifier = cold if label == "first" else make()
        ddl[0] = 0
        start = time.perf_counter()
        notifier.start()
        out[f"{label}_ms"] = (time.perf_counter() - start) * 1000
        out[f"{label}_ddl"] = ddl[0]
        notifier.stop()
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", count_ddl)
    engine.dispose()

    # The floor: connect, LISTEN on every channel, and one round trip to itself.
    channels = [w.channel for w in cold.watches]
    start = time.perf_counter()
    conn = pg_connect(_url(ctx))
    with conn.cursor() as cur:
        cur.execute("".join(f'LISTEN "{c}";' for c in [*channels, "bench_ping"]))
        cur.execute("NOTIFY bench_ping")
        while not conn.notifies:
            conn.poll()
    out["bare_ms"] = (time.perf_counter() - start) * 1000
    conn.close()
    return out


STARTUP = Case(
    name="pg_startup",
    title="Start-up with 50 watches",
    what=(
        "Notifier.start() with 50 watched tables: first start (installs 50 triggers) and a"
        " second start by a new notifier with nothing to change, with the number of DDL"
        " statements each executed; the floor is a bare psycopg2 connect + LISTEN on the 50"
        " channels + one NOTIFY round trip"
    ),
    needs=("postgresql",),
    rows=[
        Row("bare_ms", "connect + LISTEN every channel + round trip", "ms"),
        Row("second_ms", "second start(), nothing to change", "ms", "bare_ms"),
        Row("second_ddl", "DDL statements, second start()", "stmts", target="==0"),
        Row("first_ms", "first start(), installs every trigger", "ms", "bare_ms"),
        Row("first_ddl", "DDL statements, first start()", "stmts"),
    ],
    run=startup,
)
