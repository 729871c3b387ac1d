"""Durable watches: the writer's cost against a plain watch, and catch-up speed.

Run against a PostgreSQL server (default: the local test server)::

    python benchmarks/durable.py [--url URL] [--per-statement] [--no-listener] [--catch-up N]

Writer cost: transactions per second of single-row INSERT statements, and of
1,000-row INSERT statements, on a table with a plain watch and on one with a
durable watch, in short rounds that alternate (so background load hits both
alike); the ratio is the median over rounds of the durable rate divided by
the plain rate measured next to it.  Catch-up: a consumer is stopped,
``--catch-up`` rows are committed, and the time from ``start()`` to the last
event reaching the receiver gives the replay rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa

from sqlnotify import Notifier

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()
        self.target = 0

    def __call__(self, event: Any) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


def make_table(engine: sa.Engine, name: str) -> sa.Table:
    meta = sa.MetaData()
    table = sa.Table(
        name,
        meta,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("note", sa.Text),
        sa.Column("amount", sa.Integer),
    )
    meta.create_all(engine)
    return table


WRITER = """
import sys, time, psycopg2
dsn, schema, table, statements, rows, start = sys.argv[1:7]
statements, rows, start = int(statements), int(rows), int(start)
conn = psycopg2.connect(dsn, options=f"-csearch_path={schema}")
conn.autocommit = True
cur = conn.cursor()
values = ",".join(["(%s, 'benchmark row', 42)"] * rows)
sql = f'INSERT INTO "{table}" (id, note, amount) VALUES {values}'
t0 = time.perf_counter()
for n in range(statements):
    first = start + n * rows
    cur.execute(sql, list(range(first, first + rows)))
print(statements / (time.perf_counter() - t0))
"""


def write_rate(dsn: str, schema: str, table: str, statements: int, rows: int, start: int) -> float:
    """Statements per second, each its own transaction of ``rows`` rows.

    The writer is a separate process, as an application's would be, so the
    notifier's threads do not share its interpreter.
    """
    args = [dsn, schema, table, str(statements), str(rows), str(start)]
    out = subprocess.run(
        [sys.executable, "-c", WRITER, *args], check=True, capture_output=True, text=True
    )
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--single", type=int, default=300, help="single-row transactions per round")
    ap.add_argument("--bulk", type=int, default=5, help="1,000-row statements per round")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--catch-up", type=int, default=100_000, dest="catch_up")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument(
        "--per-statement",
        action="store_true",
        dest="per_statement",
        help="durable triggers journal once per statement (pg_journal_per_statement=True)",
    )
    ap.add_argument(
        "--no-listener",
        action="store_true",
        dest="no_listener",
        help="measure the writes with the triggers installed but nothing listening",
    )
    args = ap.parse_args()

    admin = sa.create_engine(args.url)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(args.url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = sa.create_engine(url)
    dsn = sa.make_url(args.url).set(drivername="postgresql").render_as_string(False)
    results: dict[str, Any] = {}
    notifier = None
    try:
        plain = make_table(engine, "plain_rows")
        durable = make_table(engine, "durable_rows")
        notifier = Notifier(engine, pg_journal_per_statement=args.per_statement)
        notifier.watch(plain, "insert").watch(durable, "insert", durable=True)
        counter = Counter()
        notifier.subscribe(plain, "insert")(counter)
        notifier.subscribe(durable, "insert")(counter)
        if args.no_listener:
            notifier.install()  # the triggers alone: the writer's own cost
        else:
            notifier.start()

        # Short rounds, alternating which table goes first, compared by their
        # medians: other work on the machine hits both sides alike.
        rates: dict[str, list[float]] = {}
        next_id = {"plain_rows": 1, "durable_rows": 1}
        for kind, statements, rows in (("single", args.single, 1), ("bulk", args.bulk, 1000)):
            for r in range(args.rounds):
                order = ("plain_rows", "durable_rows")
                for table in order if r % 2 == 0 else order[::-1]:
                    rate = write_rate(dsn, schema, table, statements, rows, next_id[table])
                    next_id[table] += statements * rows
                    rates.setdefault(f"{kind}_{table.split('_')[0]}", []).append(rate)
        med = {k: statistics.median(v) for k, v in rates.items()}

        def paired(kind: str) -> float:
            # Each round's durable rate over the plain rate measured next to it.
            pairs = zip(rates[f"{kind}_durable"], rates[f"{kind}_plain"], strict=True)
            return statistics.median(d / p for d, p in pairs)

        results["single_row_tx_per_s"] = {
            "plain": med["single_plain"],
            "durable": med["single_durable"],
        }
        results["single_row_ratio"] = paired("single")
        results["bulk_1000_rows_per_s"] = {
            "plain": med["bulk_plain"] * 1000,
            "durable": med["bulk_durable"] * 1000,
        }
        results["bulk_ratio"] = paired("bulk")
        notifier.stop()

        # Catch-up: a consumer that was away while catch_up rows were committed.
        replay = make_table(engine, "replay_rows")
        consumer = Notifier(engine, consumer="bench").watch(replay, "insert", durable=True)
        consumer.start()
        consumer.stop()
        rate = write_rate(dsn, schema, "replay_rows", args.catch_up // 1000, 1000, 1)
        del rate
        counter = Counter()
        counter.target = (args.catch_up // 1000) * 1000
        consumer = Notifier(engine, consumer="bench").watch(replay, "insert", durable=True)
        consumer.subscribe(replay, "insert")(counter)
        t0 = time.perf_counter()
        consumer.start()
        if not counter.done.wait(600):
            raise SystemExit(f"catch-up stalled at {counter.count} of {counter.target}")
        elapsed = time.perf_counter() - t0
        consumer.stop()
        results["catch_up_events"] = counter.target
        results["catch_up_seconds"] = elapsed
        results["catch_up_events_per_s"] = counter.target / elapsed
    finally:
        if notifier is not None:
            notifier.stop()
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    s = results["single_row_tx_per_s"]
    b = results["bulk_1000_rows_per_s"]
    print(
        f"single-row INSERT, tx/s:  plain {s['plain']:9.0f}  durable {s['durable']:9.0f}"
        f"  ratio {results['single_row_ratio']:.2f}"
    )
    print(
        f"1,000-row INSERT, rows/s: plain {b['plain']:9.0f}  durable {b['durable']:9.0f}"
        f"  ratio {results['bulk_ratio']:.2f}"
    )
    print(
        f"catch-up: {results['catch_up_events']} events in {results['catch_up_seconds']:.2f}s"
        f" = {results['catch_up_events_per_s']:.0f} events/s"
    )


if __name__ == "__main__":
    main()
