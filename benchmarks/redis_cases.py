"""The relay into Redis Streams: latency through it, and a consumer group's throughput."""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import Worker, cpu_seconds, percentile, pg_connect
from benchmarks.pg_cases import _fill, _schema, _url, _watched_table

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


def _app_url(ctx: Context, app: str) -> str:
    """The run's URL, with connections named ``app`` in pg_stat_activity."""
    import sqlalchemy as sa

    url = sa.make_url(_url(ctx)).update_query_dict({"application_name": app})
    return url.render_as_string(hide_password=False)


_BACKENDS_SQL = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s"


def _backends(ctx: Context, app: str) -> int:
    """Sessions whose application_name starts with ``app`` (sqlnotify appends ``/sqlnotify``)."""
    conn = pg_connect(_url(ctx))
    try:
        with conn.cursor() as cur:
            cur.execute(_BACKENDS_SQL, (app.replace("_", r"\_") + "%",))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _spec(ctx: Context, name: str, app: str, prefix: str, **more: Any) -> dict[str, Any]:
    return {
        "url": _app_url(ctx, app),
        "schema": _schema(ctx),
        "table": name,
        "redis_url": REDIS_URL,
        "prefix": prefix,
        "module": "benchmarks._redis_worker",
        **more,
    }


def _consumer(ctx: Context, name: str, app: str, prefix: str, mode: str, **more: Any) -> Worker:
    spec = _spec(ctx, name, app, prefix, role="consumer", mode="durable_source", **more)
    if mode == "relay":
        spec["source"] = "redis"
    return Worker(spec, timeout=180.0)


def _paced(ctx: Context, name: str, channel: str, count: int) -> dict[str, Any]:
    """``count`` single-row transactions at 1,000 a second, from a process of their own."""
    spec = {
        "role": "producer",
        "mode": "insert",
        "url": _url(ctx),
        "schema": _schema(ctx),
        "table": name,
        "channel": channel,
        "rate": 1000.0,
        "count": count,
    }
    with Worker(spec) as producer:
        producer.expect("ready")
        produced: dict[str, Any] = producer.expect("result", timeout=120.0)
        producer.wait()
    return produced


def _stream_end(client: Any, key: str) -> int:
    info = client.xinfo_stream(key) if client.exists(key) else None
    if not info or not info.get("last-generated-id"):
        return 0
    last = info["last-generated-id"]
    return int((last.decode() if isinstance(last, bytes) else last).partition("-")[0])


def _cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def relay(ctx: Context) -> dict[str, float]:
    import redis

    name = "rlat"
    channel = _watched_table(ctx, name, durable=True)
    tag = f"bench{os.getpid()}r{ctx.run_index}"
    prefix = f"{tag}:"
    count, warmup = ctx.count(3_000, 200), ctx.count(300, 20)
    out: dict[str, float] = {}
    client = redis.Redis.from_url(REDIS_URL)
    relay_proc = Worker(_spec(ctx, name, f"{tag}-relay", prefix, role="relay"), timeout=120.0)
    try:
        relay_proc.expect("ready")
        modes = ("direct", "relay") if ctx.run_index % 2 == 0 else ("relay", "direct")
        for mode in modes:
            with _consumer(
                ctx,
                name,
                f"{tag}-{mode}",
                prefix,
                mode,
                group="lat",
                measure="phases",
                count=count,
                warmup=warmup,
            ) as listener:
                listener.expect("ready")
                produced = _paced(ctx, name, channel, count + warmup)
                got = listener.expect("result", timeout=120.0)
                listener.wait()
            lat = sorted(x * 1000.0 for x in got["latencies"])
            out[f"{mode}_p50"] = percentile(lat, 50)
            out[f"{mode}_p99"] = percentile(lat, 99)
            out[f"{mode}_rate"] = produced["rate"]
            # CPU of the listener process per event received (paced, warm-up included).
            out[f"{mode}_cpu_us"] = got["cpu"] / (count + warmup) * 1e6

        # One group's throughput: the stream filled first, a new group reads it all.
        total = ctx.count(50_000, 1_000)
        key = next(k.decode() for k in client.scan_iter(match=prefix + "*", _type="stream"))
        before = _stream_end(client, key)
        _fill(ctx, name, total, per_tx=1000)
        deadline = time.monotonic() + 120
        while _stream_end(client, key) < before + total and time.monotonic() < deadline:
            time.sleep(0.01)
        client.xgroup_create(key, "tp", id=f"{before}-0")
        with _consumer(
            ctx, name, f"{tag}-tp", prefix, "relay", group="tp", measure="throughput", count=total
        ) as reader:
            reader.expect("ready")
            got = reader.expect("result", timeout=120.0)
            reader.wait()
        span = got["t_last"] - got["t_first"]
        out["group_rate"] = got["count"] / span if span > 0 else float("nan")
    finally:
        relay_proc.proc.terminate()
        try:
            relay_proc.expect("result", timeout=30.0)
        finally:
            relay_proc.kill()
            client.close()
            _cleanup(prefix)
    return out


RELAY = Case(
    name="redis_relay",
    title="relay into Redis Streams",
    what=(
        "a durable insert watch read directly against the same watch read from Redis Streams"
        " written by a Relay: latency from"
        " the trigger's clock_timestamp() to the receiver at 1,000 single-row transactions a"
        " second; then one consumer group reading a stream filled beforehand (events/s between"
        " its first and last receipt).  The relay, the listener and the writer each run in a"
        " process of their own"
    ),
    needs=("postgresql",),
    rows=[
        Row("direct_p50", "direct durable listener p50", "ms"),
        Row("relay_p50", "through the relay p50", "ms", None, "<=2"),
        Row("direct_p99", "direct durable listener p99", "ms"),
        Row("relay_p99", "through the relay p99", "ms"),
        Row("direct_cpu_us", "listener CPU per event at 1,000/s, direct", "us"),
        Row("relay_cpu_us", "consumer CPU per event at 1,000/s, relay", "us", "direct_cpu_us"),
        Row("direct_rate", "producer rate, direct run", "commits/s"),
        Row("relay_rate", "producer rate, relay run", "commits/s"),
        Row("group_rate", "events/s through one consumer group", "events/s", None, ">=20000"),
    ],
    run=relay,
    available=_available,
)


def fanout(ctx: Context) -> dict[str, float]:
    name, listeners = "rfan", 8
    channel = _watched_table(ctx, name, durable=True)
    count, warmup = ctx.count(2_000, 100), ctx.count(200, 20)
    total = ctx.count(20_000, 500)
    tag = f"bench{os.getpid()}f{ctx.run_index}"
    prefix = f"{tag}:"
    out: dict[str, float] = {}
    modes = ("direct", "relay") if ctx.run_index % 2 == 0 else ("relay", "direct")
    for mode in modes:
        app = f"{tag}-{mode}"
        procs: list[Worker] = []
        relay_proc = None
        try:
            if mode == "relay":
                relay_proc = Worker(_spec(ctx, name, app, prefix, role="relay"), timeout=120.0)
                relay_proc.expect("ready")
            for i in range(listeners):
                procs.append(
                    _consumer(
                        ctx,
                        name,
                        app,
                        prefix,
                        mode,
                        group=f"g{i}",
                        measure="phases",
                        count=count,
                        warmup=warmup,
                        rate_count=total,
                    )
                )
            for proc in procs:
                proc.expect("ready")
            # What stays open while they run: listeners, journals, the relay's.
            out[f"{mode}_backends"] = float(_backends(ctx, app))
            _paced(ctx, name, channel, count + warmup)
            out[f"{mode}_write_rate"] = _fill(ctx, name, total, per_tx=100)
            results = [proc.expect("result", timeout=180.0) for proc in procs]
            lat = sorted(x * 1000.0 for r in results for x in r["latencies"])
            out[f"{mode}_p50"] = percentile(lat, 50)
            out[f"{mode}_p99"] = percentile(lat, 99)
            span = max(r["t_last"] for r in results) - min(r["t_first"] for r in results)
            out[f"{mode}_delivered_rate"] = total / span if span > 0 else float("nan")
            if mode == "relay":
                for p in procs:
                    p.kill()
                procs = []
                out.update(_shared(ctx, name, channel, app, prefix, listeners, count, warmup))
        finally:
            for proc in procs:
                proc.kill()
            if relay_proc is not None:
                relay_proc.proc.terminate()
                try:
                    relay_proc.expect("result", timeout=30.0)
                finally:
                    relay_proc.kill()
    _cleanup(prefix)
    return out


def _group_done(client: Any, key: str, group: str, end: int) -> bool:
    """Whether ``group`` got every entry of ``key`` up to ``end`` and acknowledged them all."""
    if _stream_end(client, key) < end:
        return False
    for info in client.xinfo_groups(key):
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            last = info["last-delivered-id"]
            last = last.decode() if isinstance(last, bytes) else last
            return int(last.partition("-")[0]) >= end and int(info["pending"]) == 0
    return False


def _shared(
    ctx: Context,
    name: str,
    channel: str,
    app: str,
    prefix: str,
    listeners: int,
    count: int,
    warmup: int,
) -> dict[str, float]:
    """``listeners`` consumer processes in one group, sharing the relay's stream (each event
    handled once by the fleet): backends, paced latency, then a burst's events/s."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    key = next(k.decode() for k in client.scan_iter(match=prefix + "*", _type="stream"))
    total = ctx.count(20_000, 500)
    procs: list[Worker] = []
    out: dict[str, float] = {}
    try:
        for i in range(listeners):
            procs.append(
                _consumer(
                    ctx,
                    name,
                    f"{app}-shared",
                    prefix,
                    "relay",
                    group="shared",
                    consumer=f"c{i}",
                    measure="shared",
                    count=count,
                    warmup=warmup,
                )
            )
        for proc in procs:
            proc.expect("ready")
        out["shared_backends"] = float(_backends(ctx, app))  # the relay's and the consumers'
        end = _stream_end(client, key)
        for n, write in ((count + warmup, False), (total, True)):
            cpu = sum(cpu_seconds(p.pid) for p in procs)
            if write:
                _fill(ctx, name, n, per_tx=100)
            else:
                _paced(ctx, name, channel, n)
            end += n
            deadline = time.monotonic() + 120
            while not _group_done(client, key, "shared", end):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"group 'shared' did not handle entry {end} of {key}")
                time.sleep(0.01)
            if not write:
                # What the eight processes together spent per paced event.
                cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu
                out["shared_cpu_us"] = cpu / n * 1e6
        for proc in procs:
            proc.proc.terminate()
        results = [proc.expect("result", timeout=60.0) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
        client.close()
    lat = sorted(x * 1000.0 for r in results for x in r["latencies"])
    out["shared_p50"] = percentile(lat, 50)
    out["shared_p99"] = percentile(lat, 99)
    got = [r for r in results if r["count"]]
    span = max(r["t_last"] for r in got) - min(r["t_first"] for r in got)
    out["shared_delivered_rate"] = total / span if span > 0 else float("nan")
    return out


FANOUT = Case(
    name="redis_fanout",
    title="eight listeners: direct against through the relay",
    what=(
        "eight notifiers with a durable insert watch, in two deployment shapes.  8 groups"
        " (each gets all): eight direct listener processes against eight consumer processes"
        " (one consumer group each) reading the stream of a relay in a process of its own."
        "  1 group of 8 (work shared): eight consumer processes in one consumer group, each"
        " event handled once by the fleet.  PostgreSQL backends held while they run"
        " (pg_stat_activity, by application_name), latency at 1,000 single-row transactions"
        " a second from a writer process, then the writer's rate (100-row transactions) with"
        " them attached, and events/s until the burst is all handled"
    ),
    needs=("postgresql",),
    rows=[
        Row("direct_backends", "PostgreSQL backends, 8 direct listeners", "backends"),
        Row(
            "relay_backends",
            "PostgreSQL backends, relay + 8 groups (each gets all)",
            "backends",
            None,
            "<=1",
        ),
        Row(
            "shared_backends",
            "PostgreSQL backends, relay + 1 group of 8 (work shared)",
            "backends",
            None,
            "<=1",
        ),
        Row("direct_p50", "p50 at 1,000 events/s, 8 direct (each gets all)", "ms"),
        Row("relay_p50", "p50 at 1,000 events/s, 8 groups (each gets all)", "ms", "direct_p50"),
        Row(
            "shared_p50",
            "p50 at 1,000 events/s, 1 group of 8 (work shared)",
            "ms",
            "direct_p50",
            "<=2",
        ),
        Row("direct_p99", "p99 at 1,000 events/s, 8 direct (each gets all)", "ms"),
        Row("relay_p99", "p99 at 1,000 events/s, 8 groups (each gets all)", "ms", "direct_p99"),
        Row("shared_p99", "p99 at 1,000 events/s, 1 group of 8 (work shared)", "ms", "direct_p99"),
        Row("direct_write_rate", "writer rate, 8 direct listeners", "rows/s"),
        Row(
            "relay_write_rate",
            "writer rate, relay + 8 groups attached",
            "rows/s",
            "direct_write_rate",
        ),
        Row("direct_delivered_rate", "events/s to all 8, direct", "events/s"),
        Row(
            "relay_delivered_rate",
            "events/s to all 8, 8 groups (each gets all)",
            "events/s",
            "direct_delivered_rate",
        ),
        Row("shared_cpu_us", "CPU per event at 1,000/s, all 8 of 1 group of 8", "us"),
        Row(
            "shared_delivered_rate",
            "events/s through 1 group of 8 (work shared)",
            "events/s",
        ),
    ],
    run=fanout,
    available=_available,
)
