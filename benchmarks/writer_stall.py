"""How long do an application's writes wait while a notifier starts?

Usage::

    python benchmarks/writer_stall.py [--url URL] [--lock-timeout 0.5] [--install-timeout 5]

A writer thread commits one-row INSERTs into the watched table in a loop and
records how long each took (``time.perf_counter()``).  Three scenarios, each
on a fresh table:

- *quiet*: nothing else runs; a notifier starts and installs its trigger.
- *open write transaction*: another session holds an uncommitted INSERT
  into the table; the notifier's start waits, retries, and gives up after
  ``--install-timeout`` (``SQLNotifyLockTimeoutError``).
- *unbounded DDL (baseline)*: the same open transaction, and a plain
  ``CREATE TRIGGER`` waiting for its lock as sqlnotify did before it bounded
  its DDL (cut off here after ``--install-timeout`` seconds).

For each: the writes committed during the window, the median and the
longest write.  The figure that matters is the longest write: bounded by
``lock_timeout`` with sqlnotify, by the whole wait without a bound.
The tables live in a temporary schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from sqlnotify import Notifier, SQLNotifyLockTimeoutError

DEFAULT_URL = os.environ.get(
    "SQLNOTIFY_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


class Writer:
    """A thread committing one-row INSERTs, timing each."""

    def __init__(self, url: str, table: str) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.table = table
        self.samples: list[tuple[float, float]] = []  # (start, duration)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="bench-writer")

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                conn.exec_driver_sql(f"INSERT INTO {self.table} DEFAULT VALUES")
                conn.commit()
                self.samples.append((t0, time.perf_counter() - t0))

    def between(self, start: float, end: float) -> list[float]:
        return [d for t, d in self.samples if t <= end and t + d >= start]


def scenario(url: str, schema: str, name: str, action: Callable[[str], str], hold: bool) -> None:
    table = f'"{schema}"."{name}"'
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id serial PRIMARY KEY, v int DEFAULT 1)")
    holder = admin.connect() if hold else None
    if holder is not None:
        holder.exec_driver_sql(f"INSERT INTO {table} DEFAULT VALUES")  # left uncommitted
    writer = Writer(url, table)
    writer.thread.start()
    while len(writer.samples) < 200:
        time.sleep(0.01)
    start = time.perf_counter()
    outcome = action(f"{schema}.{name}")
    end = time.perf_counter()
    writer.stop.set()
    writer.thread.join()
    if holder is not None:
        holder.rollback()
        holder.close()
    writer.engine.dispose()
    admin.dispose()
    window = writer.between(start, end)
    median = statistics.median(window) * 1000 if window else float("nan")
    longest = max(window) * 1000 if window else float("nan")
    print(
        f"{name:<24} {end - start:7.2f}s  {outcome:<28} writes {len(window):6d}"
        f"  median {median:7.2f} ms  longest {longest:8.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--lock-timeout", type=float, default=0.5)
    parser.add_argument("--install-timeout", type=float, default=5.0)
    args = parser.parse_args()
    engine = sa.create_engine(args.url)
    schema = f"bench_stall_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

    def start_notifier(table: str) -> str:
        n = Notifier(engine, lock_timeout=args.lock_timeout, install_timeout=args.install_timeout)
        n.watch(table, "insert")
        try:
            n.start()
        except SQLNotifyLockTimeoutError as exc:
            return f"gave up ({len(exc.blockers)} blocker)"
        n.stop(cleanup=True)
        return "started"

    def unbounded(table: str) -> str:
        s, t = table.split(".")
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f'CREATE FUNCTION "{s}".noop() RETURNS trigger LANGUAGE plpgsql'
                " AS $$ BEGIN RETURN NULL; END $$"
            )
            conn.commit()
            conn.exec_driver_sql(f"SET lock_timeout = {int(args.install_timeout * 1000)}")
            try:
                conn.exec_driver_sql(
                    f'CREATE TRIGGER noop AFTER INSERT ON "{s}"."{t}"'
                    f' FOR EACH ROW EXECUTE FUNCTION "{s}".noop()'
                )
                conn.commit()
                return "created"
            except sa.exc.OperationalError:
                conn.rollback()
                return "cut off (lock wait)"

    print(
        f"lock_timeout={args.lock_timeout:g}s install_timeout={args.install_timeout:g}s,"
        " one writer committing one-row INSERTs"
    )
    try:
        scenario(args.url, schema, "quiet", start_notifier, hold=False)
        scenario(args.url, schema, "open_write_transaction", start_notifier, hold=True)
        scenario(args.url, schema, "unbounded_ddl_baseline", unbounded, hold=True)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


if __name__ == "__main__":
    main()
