"""Quick PostgreSQL figures: throughput through a no-op receiver, and latency at a fixed rate.

Usage::

    python benchmarks/quick_pg.py [--url URL] [--events 100000] [--rate 1000] [--seconds 10]

*Throughput*: a producer thread INSERTs rows, 100 per transaction (one
``INSERT ... SELECT`` each), as fast as it can; a no-op receiver counts events.
The figure is events delivered per second, from the first commit to the
last delivery.

*Latency*: a producer commits one-row transactions at ``--rate`` per second;
the receiver records, for each event, the time since the producer started
that row's COMMIT (so the commit itself is included).  Both clocks are this
process's ``time.perf_counter()``.

The tables live in a temporary schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid

import sqlalchemy as sa

from sqlnotify import ChangeEvent, Notifier

DEFAULT_URL = os.environ.get(
    "SQLNOTIFY_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def throughput(engine: sa.Engine, total: int, batch: int = 100) -> float:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE tp (id bigint PRIMARY KEY, payload text)")
    notifier = Notifier(engine)
    notifier.watch("tp", "insert", extra_columns=["payload"])
    done = threading.Event()
    count = 0
    last = 0.0

    @notifier.subscribe("tp", "insert")
    def noop(event: ChangeEvent) -> None:
        nonlocal count, last
        count += 1
        if count == total:
            last = time.perf_counter()
            done.set()

    insert = sa.text(
        "INSERT INTO tp (id, payload) SELECT g, 'row ' || g FROM generate_series(:a, :b) g"
    )
    with notifier:
        start = time.perf_counter()
        with engine.connect() as conn:
            for first in range(0, total, batch):
                conn.execute(insert, {"a": first, "b": first + batch - 1})
                conn.commit()
        produced = time.perf_counter()
        if not done.wait(300):
            raise SystemExit(f"only {count} of {total} events arrived")
    print(
        f"  produced {total} rows in {produced - start:.2f}s ({total / (produced - start):,.0f}/s)"
    )
    return total / (last - start)


def latency(engine: sa.Engine, rate: float, seconds: float) -> tuple[float, float, float, int]:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE lat (id bigint PRIMARY KEY)")
    notifier = Notifier(engine)
    notifier.watch("lat", "insert")
    started: dict[int, float] = {}
    samples: list[float] = []
    total = int(rate * seconds)
    done = threading.Event()

    @notifier.subscribe("lat", "insert")
    def measure(event: ChangeEvent) -> None:
        samples.append(time.perf_counter() - started[event.id])
        if len(samples) == total:
            done.set()

    insert = sa.text("INSERT INTO lat (id) VALUES (:id)")
    with notifier:
        with engine.connect() as conn:
            t0 = time.perf_counter()
            for i in range(total):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                conn.execute(insert, {"id": i})
                started[i] = time.perf_counter()
                conn.commit()
            elapsed = time.perf_counter() - t0
        if not done.wait(60):
            raise SystemExit(f"only {len(samples)} of {total} events arrived")
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return p50, p99, total / elapsed, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--events", type=int, default=100_000, help="throughput run size")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency run, events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    args = parser.parse_args()

    admin = sa.create_engine(args.url)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(args.url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = sa.create_engine(url)
    try:
        print(f"throughput: {args.events} events, INSERTs of 100 rows per transaction")
        rate = throughput(engine, args.events)
        print(f"  delivered {rate:,.0f} events/s through a no-op receiver")
        print(f"latency: one-row transactions at {args.rate:g}/s for {args.seconds:g}s")
        p50, p99, achieved, n = latency(engine, args.rate, args.seconds)
        print(
            f"  {n} events at {achieved:,.0f}/s: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"
        )
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


if __name__ == "__main__":
    main()
