"""The relay into Redis Streams: latency through it, and a consumer group's throughput."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import Worker, percentile, pg_connect
from benchmarks.pg_cases import _engine, _fill, _schema, _url, _watched_table

REDIS_URL = os.environ.get("SQLNOTIFY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _available() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install redis (the redis extra))"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    return None


class _Sink:
    """Receives events: latency from the trigger's clock, count, first and last receipt."""

    def __init__(self, expect: int, warmup: int = 0) -> None:
        self.expect = expect
        self.warmup = warmup
        self.latencies: list[float] = []
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()

    def __call__(self, event: Any) -> None:
        now = time.time()
        self.count += 1
        if self.count == 1:
            self.first = now
        self.last = now
        if self.count > self.warmup and event.epoch is not None:
            self.latencies.append((now - event.epoch) * 1000.0)
        if self.count >= self.expect:
            self.done.set()


def _watch(notifier: Any, table: Any) -> Any:
    return notifier.watch(
        table, "insert", extra_columns=["a", "b"], durable=True, channel_label="durable"
    )


def relay(ctx: Context) -> dict[str, float]:
    import redis

    from benchmarks._worker import bench_table
    from sqlnotify import Notifier
    from sqlnotify.relay import Relay

    name = "rlat"
    channel = _watched_table(ctx, name, durable=True)
    table = bench_table(name, _schema(ctx))
    engine = _engine(ctx)
    prefix = f"bench{os.getpid()}r{ctx.run_index}:"
    count, warmup = ctx.count(3_000, 200), ctx.count(300, 20)
    out: dict[str, float] = {}
    client = redis.Redis.from_url(REDIS_URL)
    runner = Relay(
        _watch(Notifier(engine, use_logger=False), table),
        REDIS_URL,
        name=prefix,
        stream_prefix=prefix,
    )
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not runner.active and time.monotonic() < deadline:
            time.sleep(0.01)
        modes = ("direct", "relay") if ctx.run_index % 2 == 0 else ("relay", "direct")
        for mode in modes:
            sink = _Sink(count + warmup, warmup)
            if mode == "direct":
                n = Notifier(engine, use_logger=False)
            else:
                n = Notifier.from_redis(
                    engine,
                    REDIS_URL,
                    group="lat",
                    consumer="c",
                    stream_prefix=prefix,
                    use_logger=False,
                )
            _watch(n, table)
            n.subscribe(table, "insert", channel_label="durable")(sink)
            n.start()
            try:
                producer_spec = {
                    "role": "producer",
                    "mode": "insert",
                    "url": _url(ctx),
                    "schema": _schema(ctx),
                    "table": name,
                    "channel": channel,
                    "rate": 1000.0,
                    "count": count + warmup,
                }
                with Worker(producer_spec) as producer:
                    producer.expect("ready")
                    produced = producer.expect("result")
                    producer.wait()
                sink.done.wait(60)
            finally:
                n.stop()
            lat = sorted(sink.latencies)
            out[f"{mode}_p50"] = percentile(lat, 50)
            out[f"{mode}_p99"] = percentile(lat, 99)
            out[f"{mode}_rate"] = produced["rate"]

        # One group's throughput: the stream filled first, a new group reads it all.
        total = ctx.count(50_000, 1_000)
        before = runner.written
        _fill(ctx, name, total, per_tx=1000)
        deadline = time.monotonic() + 120
        while runner.written < before + total and time.monotonic() < deadline:
            time.sleep(0.01)
        key = prefix + next(w.channel for w in n.watches)
        client.xgroup_create(key, "tp", id=f"{before}-0")
        sink = _Sink(total)
        n = _watch(
            Notifier.from_redis(
                engine,
                REDIS_URL,
                group="tp",
                consumer="c",
                stream_prefix=prefix,
                use_logger=False,
            ),
            table,
        )
        n.subscribe(table, "insert", channel_label="durable")(sink)
        n.start()
        try:
            sink.done.wait(120)
        finally:
            n.stop()
        span = sink.last - sink.first
        out["group_rate"] = sink.count / span if span > 0 else float("nan")
    finally:
        runner.stop()
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    return out


RELAY = Case(
    name="redis_relay",
    title="relay into Redis Streams",
    what=(
        "a durable insert watch read directly against the same watch read from Redis Streams"
        " written by a Relay (relay and consumer threads in the measuring process): latency from"
        " the trigger's clock_timestamp() to the receiver at 1,000 single-row transactions a"
        " second; then one consumer group reading a stream filled beforehand (events/s between"
        " its first and last receipt)"
    ),
    needs=("postgresql",),
    rows=[
        Row("direct_p50", "direct durable listener p50", "ms"),
        Row("relay_p50", "through the relay p50", "ms", None, "<=2"),
        Row("direct_p99", "direct durable listener p99", "ms"),
        Row("relay_p99", "through the relay p99", "ms"),
        Row("direct_rate", "producer rate, direct run", "commits/s"),
        Row("relay_rate", "producer rate, relay run", "commits/s"),
        Row("group_rate", "events/s through one consumer group", "events/s", None, ">=20000"),
    ],
    run=relay,
    available=_available,
)


_BACKENDS_SQL = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_type = 'client backend'"
)


def _backends(ctx: Context) -> int:
    conn = pg_connect(_url(ctx))
    try:
        with conn.cursor() as cur:
            cur.execute(_BACKENDS_SQL)
            # Less this connection itself.
            return int(cur.fetchone()[0]) - 1
    finally:
        conn.close()


def fanout(ctx: Context) -> dict[str, float]:
    import sqlalchemy as sa

    from benchmarks._worker import bench_table
    from sqlnotify import Notifier
    from sqlnotify.relay import Relay

    name, listeners = "rfan", 8
    _watched_table(ctx, name, durable=True)
    table = bench_table(name, _schema(ctx))
    total = ctx.count(20_000, 500)
    prefix = f"bench{os.getpid()}f{ctx.run_index}:"
    out: dict[str, float] = {}
    modes = ("direct", "relay") if ctx.run_index % 2 == 0 else ("relay", "direct")
    for mode in modes:
        engine = sa.create_engine(_url(ctx), pool_size=1, max_overflow=2)
        before = _backends(ctx)
        notifiers: list[Any] = []
        sinks = [_Sink(total) for _ in range(listeners)]
        runner = None
        try:
            if mode == "relay":
                runner = Relay(
                    _watch(Notifier(engine, use_logger=False), table),
                    REDIS_URL,
                    name=prefix,
                    stream_prefix=prefix,
                )
                runner.start()
            for i, sink in enumerate(sinks):
                if mode == "direct":
                    n = Notifier(engine, use_logger=False)
                else:
                    n = Notifier.from_redis(
                        engine,
                        REDIS_URL,
                        group=f"g{i}",
                        consumer="c",
                        stream_prefix=prefix,
                        use_logger=False,
                    )
                _watch(n, table)
                n.subscribe(table, "insert", channel_label="durable")(sink)
                n.start()
                notifiers.append(n)
            deadline = time.monotonic() + 30
            while runner is not None and not runner.active and time.monotonic() < deadline:
                time.sleep(0.01)
            # What stays open while they run: listeners, journals, the relay's.
            engine.pool.dispose()
            out[f"{mode}_backends"] = float(_backends(ctx) - before)
            out[f"{mode}_write_rate"] = _fill(ctx, name, total, per_tx=100)
            for sink in sinks:
                sink.done.wait(120)
            span = max(s.last for s in sinks) - min(s.first for s in sinks)
            out[f"{mode}_delivered_rate"] = total / span if span > 0 else float("nan")
        finally:
            for n in notifiers:
                n.stop()
            if runner is not None:
                runner.stop()
            engine.dispose()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    return out


FANOUT = Case(
    name="redis_fanout",
    title="eight listeners: direct against through the relay",
    what=(
        "eight notifiers with a durable insert watch, each getting every event: eight direct"
        " listeners against eight consumer groups reading the relay's stream (all in the"
        " measuring process); PostgreSQL backends held while they run, the writer's rate"
        " (100-row transactions) with them attached, and events/s until all eight have all"
    ),
    needs=("postgresql",),
    rows=[
        Row("direct_backends", "PostgreSQL backends, 8 direct listeners", "backends"),
        Row("relay_backends", "PostgreSQL backends, relay + 8 consumers", "backends", None, "<=2"),
        Row("direct_write_rate", "writer rate, 8 direct listeners", "rows/s"),
        Row("relay_write_rate", "writer rate, relay attached", "rows/s", "direct_write_rate"),
        Row("direct_delivered_rate", "events/s to all 8, direct", "events/s"),
        Row("relay_delivered_rate", "events/s to all 8, relay", "events/s"),
    ],
    run=fanout,
    available=_available,
)
