"""Large rows on PostgreSQL: what the overflow table and the re-read cost in latency.

Three paths deliver row events to a plain receiver:

``direct``
    a small row, sent whole in the notification;
``overflow``
    a row over the 7999-byte limit on a watch with ``use_overflow_table=True``:
    stored by the trigger, fetched by the dispatcher;
``reread``
    a row over the limit on a watch without it: sent by key, its columns
    re-read by the dispatcher.

Rows are written one per transaction; the latency of each is the time from
the trigger's ``clock_timestamp()`` to the receiver's call (same machine, so
the same clock).

Usage::

    python benchmarks/large_payloads.py [--url URL] [--count 200] [--size 20000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

import sqlalchemy as sa

from sqlnotify import ChangeEvent, Notifier


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    parser.add_argument("--count", type=int, default=200, help="rows per path")
    parser.add_argument("--size", type=int, default=20_000, help="bytes of a large row")
    args = parser.parse_args()

    engine = sa.create_engine(args.url)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    metadata = sa.MetaData()
    docs = sa.Table(
        "docs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text),
        schema=schema,
    )
    metadata.create_all(engine)
    notifier = Notifier(engine)
    notifier.watch(docs, "insert", extra_columns=["body"], use_overflow_table=True)
    notifier.watch(docs, "update", extra_columns=["body"])
    latencies: list[float] = []
    arrived = threading.Semaphore(0)

    def receive(event: ChangeEvent) -> None:
        assert event.epoch is not None
        latencies.append(time.time() - event.epoch)
        arrived.release()

    notifier.subscribe(docs, "insert")(receive)
    notifier.subscribe(docs, "update")(receive)
    try:
        with notifier:
            paths = {
                "direct": lambda i: docs.insert().values(id=i, body="x" * 100),
                "overflow": lambda i: docs.insert().values(id=args.count + i, body="y" * args.size),
                "reread": lambda i: (
                    docs.update().where(docs.c.id == args.count + i).values(body="z" * args.size)
                ),
            }
            for name, statement in paths.items():
                latencies.clear()
                for i in range(args.count):
                    with engine.begin() as conn:
                        conn.execute(statement(i))
                    if not arrived.acquire(timeout=10):
                        raise SystemExit(f"{name}: an event did not arrive within 10 s")
                ms = [x * 1000 for x in latencies]
                print(
                    f"{name:9} {args.count} rows: median {statistics.median(ms):.2f} ms,"
                    f" p95 {percentile(ms, 0.95):.2f} ms"
                )
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


if __name__ == "__main__":
    main()
