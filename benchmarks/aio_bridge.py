"""What the asyncio bridge costs: added latency and throughput, async vs sync callbacks.

Three paths deliver the same PostgreSQL row events to a callback:

``sync``
    a plain function, called on the dispatcher thread;
``async``
    an ``async def`` function on the loop that called ``astart()``;
``async-private``
    an ``async def`` function on the notifier's private loop thread (``start()``).

Latency: rows are inserted one per transaction at a steady rate (default
1,000/s); for each event we take the commit-to-callback time (the trigger's
``clock_timestamp()`` to the callback) and, on the async paths, the handoff
time: from the dispatcher thread seeing the event to the async callback
running, for the same event.  The handoff is what the bridge adds; the
difference between the commit-to-callback medians of separate runs says the
same, but with the run-to-run noise of the database and the machine on top.

Throughput: one transaction inserts N rows; we time from its commit to the
last no-op callback.

Usage::

    python benchmarks/aio_bridge.py [--url URL] [--rate 1000] [--seconds 5]
        [--burst 20000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlnotify import ChangeEvent, Notifier, Operation

DEFAULT_URL = os.environ.get(
    "SQLNOTIFY_BENCH_POSTGRES_URL",
    os.environ.get(
        "SQLNOTIFY_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    ),
)
PATHS = ("sync", "async", "async-private")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, pool_size=2)
        self.schema = f"bench_aio_{uuid.uuid4().hex[:8]}"
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{self.schema}"')
        self.table = sa.Table(
            "tick",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("n", sa.Integer, nullable=False),
            schema=self.schema,
        )
        self.table.metadata.create_all(self.engine)

    def close(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{self.schema}" CASCADE')
        self.engine.dispose()

    def notifier(self) -> Notifier:
        notifier = Notifier(self.engine, use_logger=False)
        notifier.watch(self.table, Operation.INSERT)
        return notifier

    # -- producers (run on their own thread) ---------------------------------
    def paced_inserts(self, rate: float, seconds: float) -> float:
        """One row per transaction at ``rate`` per second; return the rate achieved."""
        count = int(rate * seconds)
        interval = 1.0 / rate
        stmt = self.table.insert()
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SET synchronous_commit = off")
            conn.commit()
            start = time.perf_counter()
            for i in range(count):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                conn.execute(stmt, {"n": i})
                conn.commit()
            return count / (time.perf_counter() - start)

    def burst(self, count: int) -> float:
        """Insert ``count`` rows in one transaction; return the commit's perf_counter time."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql(
                f'INSERT INTO "{self.schema}".tick (n) SELECT g FROM generate_series(1, {count}) g'
            )
            conn.commit()
            return time.perf_counter()


class Collector:
    """Records, per event, when the dispatcher saw it and when the measured callback ran."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen: dict[Any, float] = {}
        self.latency: list[float] = []
        self.handoff: list[float] = []
        self.count = 0
        self.last = 0.0
        self.done = threading.Event()

    def on_dispatcher(self, event: ChangeEvent) -> None:
        self.seen[event.id] = time.perf_counter()

    def record(self, event: ChangeEvent) -> None:
        now = time.perf_counter()
        wall = time.time()
        if event.epoch is not None:
            self.latency.append(wall - event.epoch)
        seen = self.seen.get(event.id)
        if seen is not None:
            self.handoff.append(now - seen)
        self.count += 1
        if self.count >= self.expected:
            self.last = now
            self.done.set()

    def tick(self, event: ChangeEvent) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.last = time.perf_counter()
            self.done.set()


def wire(
    notifier: Notifier, table: sa.Table, path: str, callback: Callable[[ChangeEvent], None]
) -> None:
    if path == "sync":
        notifier.subscribe(table, Operation.INSERT)(callback)
    else:

        async def on_event(event: ChangeEvent) -> None:
            callback(event)

        notifier.subscribe(table, Operation.INSERT)(on_event)


def measure_sync(
    notifier: Notifier, measure: Callable[[Notifier], dict[str, Any]]
) -> dict[str, Any]:
    notifier.start()
    try:
        return measure(notifier)
    finally:
        notifier.stop()


def latency(bench: Bench, path: str, rate: float, seconds: float) -> dict[str, Any]:
    expected = int(rate * seconds)
    collector = Collector(expected)

    achieved: list[float] = []

    def measure(notifier: Notifier) -> dict[str, Any]:
        achieved.append(bench.paced_inserts(rate, seconds))
        if not collector.done.wait(60):
            raise RuntimeError(f"{path}: got {collector.count} of {expected} events")
        return {}

    notifier = bench.notifier()
    if path != "sync":
        notifier.subscribe(bench.table, Operation.INSERT)(collector.on_dispatcher)
    wire(notifier, bench.table, path, collector.record)
    if path == "async":

        async def main() -> None:
            async with notifier:
                await asyncio.to_thread(measure, notifier)

        asyncio.run(main())
    else:
        measure_sync(notifier, measure)
    warm = collector.latency[len(collector.latency) // 10 :]  # skip the warm-up tenth
    hand = collector.handoff[len(collector.handoff) // 10 :]
    result = {
        "path": path,
        "events": collector.count,
        "achieved_rate": achieved[0],
        "latency_p50_ms": percentile(warm, 0.5) * 1e3,
        "latency_p99_ms": percentile(warm, 0.99) * 1e3,
    }
    if hand:
        result["handoff_p50_ms"] = percentile(hand, 0.5) * 1e3
        result["handoff_p99_ms"] = percentile(hand, 0.99) * 1e3
    return result


def throughput(bench: Bench, path: str, count: int) -> dict[str, Any]:
    collector = Collector(count)
    notifier = bench.notifier()
    wire(notifier, bench.table, path, collector.tick)
    committed: list[float] = []

    def measure(_: Notifier) -> dict[str, Any]:
        committed.append(bench.burst(count))
        if not collector.done.wait(120):
            raise RuntimeError(f"{path}: got {collector.count} of {count} events")
        return {}

    if path == "async":

        async def main() -> None:
            async with notifier:
                await asyncio.to_thread(measure, notifier)

        asyncio.run(main())
    else:
        measure_sync(notifier, measure)
    elapsed = collector.last - committed[0]
    return {"path": path, "events": count, "seconds": elapsed, "events_per_s": count / elapsed}


def measure(
    url: str = DEFAULT_URL,
    rate: float = 1000.0,
    seconds: float = 5.0,
    burst: int = 20000,
    repeat: int = 5,
) -> dict[str, Any]:
    """Run every measurement; return the results as a JSON-ready dict."""
    bench = Bench(url)
    try:
        lat = {p: latency(bench, p, rate, seconds) for p in PATHS}
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        for _ in range(repeat):  # interleaved, so drifting machine load hits every path
            for p in PATHS:
                runs[p].append(throughput(bench, p, burst))
        thr = {p: max(runs[p], key=lambda r: r["events_per_s"]) for p in PATHS}
    finally:
        bench.close()
    return {
        "rate": rate,
        "latency": lat,
        "throughput": thr,
        # What the bridge adds: the median handoff, measured per event.
        "handoff_p50_ms": {p: lat[p]["handoff_p50_ms"] for p in PATHS[1:]},
        "added_latency_p50_ms": {
            p: lat[p]["latency_p50_ms"] - lat["sync"]["latency_p50_ms"] for p in PATHS[1:]
        },
        "throughput_ratio": {
            p: thr[p]["events_per_s"] / thr["sync"]["events_per_s"] for p in PATHS[1:]
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (a sync driver)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--burst", type=int, default=20000, help="rows in the throughput run")
    parser.add_argument(
        "--repeat", type=int, default=5, help="throughput runs per path (best kept)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = measure(args.url, args.rate, args.seconds, args.burst, args.repeat)
    lat, thr = results["latency"], results["throughput"]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"latency at {args.rate:g} events/s for {args.seconds:g}s (commit to callback):")
        for p in PATHS:
            r = lat[p]
            extra = ""
            if "handoff_p50_ms" in r:
                extra = (
                    f"  handoff p50 {r['handoff_p50_ms']:.3f} ms p99 {r['handoff_p99_ms']:.3f} ms"
                )
            p50, p99 = r["latency_p50_ms"], r["latency_p99_ms"]
            print(
                f"  {p:14s} p50 {p50:.3f} ms  p99 {p99:.3f} ms"
                f"  (achieved {r['achieved_rate']:,.0f}/s){extra}"
            )
        for p, added in results["added_latency_p50_ms"].items():
            print(f"  added p50 over sync, {p}: {added:+.3f} ms")
        print(
            f"throughput, {args.burst} rows in one transaction, no-op callback"
            f" (best of {args.repeat}):"
        )
        for p in PATHS:
            r = thr[p]
            print(f"  {p:14s} {r['events_per_s']:,.0f} events/s ({r['seconds']:.3f} s)")
        for p, ratio in results["throughput_ratio"].items():
            print(f"  {p} / sync: {ratio:.0%}")
    return results


if __name__ == "__main__":
    main()
