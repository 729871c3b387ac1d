"""SQLite latency, idle cost, throughput and memory of the sqlnotify listener.

Run from a checkout::

    python benchmarks/sqlite_latency.py            # everything (about a minute)
    python benchmarks/sqlite_latency.py --quick    # shorter runs
    python benchmarks/sqlite_latency.py --only latency-cross idle

Scenarios:

``latency-cross``
    A writer process commits one row per transaction at ``--rate`` commits/s;
    the latency of each event is the time from just before its ``COMMIT`` to
    the moment the receiver runs (on the notifier's dispatcher thread), so it
    includes the commit itself; ``after_commit_*`` counts from the moment the
    writer's ``COMMIT`` returned instead.
``latency-local``
    Commits through the notifier's own engine in this process, at the same
    rate; latency from just before ``Connection.commit()`` to the receiver.
``idle``
    CPU time used by this process (listener and dispatcher threads) while
    nothing is written, as a share of one core, with inotify and with polling.
``throughput``
    A writer process inserts rows in transactions of 1,000 as fast as it can;
    events per second from the writer's start to the last event received.
``memory``
    Resident memory after each of ten rounds of events (batching writer,
    no-op receiver), measured once each round is drained.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sqlalchemy as sa  # noqa: E402

from sqlnotify import ChangeEvent, Notifier  # noqa: E402

TABLE_SQL = "CREATE TABLE bench (id INTEGER PRIMARY KEY, sent_at REAL NOT NULL)"

PACED_WRITER = """
import json, sqlite3, sys, time
path, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conn = sqlite3.connect(path, timeout=30, isolation_level=None)
pause = 1.0 / rate
next_at = time.monotonic() + 0.2
commits = []
for i in range(count):
    time.sleep(max(0.0, next_at - time.monotonic()))
    next_at += pause
    conn.execute("BEGIN IMMEDIATE")
    before = time.time()
    row = conn.execute("INSERT INTO bench (sent_at) VALUES (?)", (before,)).lastrowid
    conn.execute("COMMIT")
    commits.append((row, before, time.time()))
print(json.dumps(commits))
"""

BATCH_WRITER = """
import sqlite3, sys, time
path, count, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = sqlite3.connect(path, timeout=30, isolation_level=None)
print(time.time(), flush=True)
done = 0
while done < count:
    n = min(batch, count - done)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO bench (sent_at) VALUES (?)", [(time.time(),)] * n)
    conn.execute("COMMIT")
    done += n
"""


@contextmanager
def database() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="sqlnotify-bench-")
    path = os.path.join(tmp, "bench.db")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(TABLE_SQL)
    try:
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def notifier(
    path: str, receive: Callable[[ChangeEvent], None], **options: Any
) -> Iterator[Notifier]:
    engine = sa.create_engine(f"sqlite:///{path}")
    n = Notifier(engine, **options)
    n.watch("bench", "insert", extra_columns=["sent_at"])
    n.subscribe("bench", "insert")(receive)
    n.start()
    try:
        yield n
    finally:
        n.stop()
        engine.dispose()


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env
    )


class Latencies:
    """A receiver collecting ``now - sent_at`` in milliseconds."""

    def __init__(self, expected: int) -> None:
        self.values: list[float] = []
        self.expected = expected
        self.done = threading.Event()

    def __call__(self, event: ChangeEvent) -> None:
        self.values.append((time.time() - event.extra_columns["sent_at"]) * 1000.0)
        if len(self.values) >= self.expected:
            self.done.set()

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.values)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

        return {
            "events": len(ordered),
            "p50_ms": statistics.median(ordered),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": ordered[-1],
        }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def percentiles(values: list[float], prefix: str) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    return {
        f"{prefix}p50_ms": statistics.median(ordered),
        f"{prefix}p90_ms": pct(0.90),
        f"{prefix}p99_ms": pct(0.99),
        f"{prefix}max_ms": ordered[-1],
    }


def latency_cross(count: int, rate: float, **options: Any) -> dict[str, Any]:
    """Latency from just before the writer's COMMIT, and from when COMMIT returned.

    The second leaves out the writer's own commit (its fsync); it can be
    negative: the listener may see the commit before the writer's call returns.
    """
    with database() as path:
        received: dict[int, float] = {}
        done = threading.Event()

        def receive(event: ChangeEvent) -> None:
            received[event.id] = time.time()
            if len(received) >= count:
                done.set()

        with notifier(path, receive, **options):
            cpu0, wall0 = cpu_seconds(), time.monotonic()
            proc = run_python(PACED_WRITER, path, str(count), str(rate))
            out, _ = proc.communicate()
            if not done.wait(30):
                raise SystemExit(f"only {len(received)} of {count} events arrived")
            cpu = (cpu_seconds() - cpu0) / (time.monotonic() - wall0)
        commits = json.loads(out)
        from_before = [(received[i] - before) * 1000.0 for i, before, _ in commits]
        from_after = [(received[i] - after) * 1000.0 for i, _, after in commits]
        return {
            "events": len(commits),
            **percentiles(from_before, ""),
            **percentiles(from_after, "after_commit_"),
            "listener_cpu_pct": cpu * 100.0,
        }


def latency_local(count: int, rate: float) -> dict[str, Any]:
    """Commits through the notifier's own engine; latency from just before ``commit()``."""
    with database() as path:
        before_commit: dict[int, float] = {}
        rec = Latencies(count)

        def receive(event: ChangeEvent) -> None:
            rec.values.append((time.time() - before_commit[event.id]) * 1000.0)
            if len(rec.values) >= count:
                rec.done.set()

        with notifier(path, receive) as n:
            engine = n.db_engine
            assert isinstance(engine, sa.Engine)
            insert = sa.text("INSERT INTO bench (id, sent_at) VALUES (:i, 0)")
            pause = 1.0 / rate
            next_at = time.monotonic()
            for i in range(1, count + 1):
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += pause
                with engine.connect() as conn:
                    conn.execute(insert, {"i": i})
                    before_commit[i] = time.time()
                    conn.commit()
            if not rec.done.wait(30):
                raise SystemExit(f"only {len(rec.values)} of {count} events arrived")
        return rec.summary()


def idle(seconds: float, **options: Any) -> dict[str, Any]:
    with database() as path:
        with notifier(path, lambda event: None, **options) as n:
            time.sleep(1.0)  # let the listener settle into its idle rhythm
            cpu0, wall0 = cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            cpu = (cpu_seconds() - cpu0) / (time.monotonic() - wall0)
            source = n._listener.source if n._listener else None
            inotify = bool(getattr(source, "uses_inotify", False))
        return {"seconds": seconds, "cpu_pct_of_core": cpu * 100.0, "inotify": inotify}


def throughput(count: int, batch: int = 1000) -> dict[str, Any]:
    with database() as path:
        received = [0]
        done = threading.Event()
        last = [0.0]

        def receive(event: ChangeEvent) -> None:
            received[0] += 1
            if received[0] >= count:
                last[0] = time.time()
                done.set()

        with notifier(path, receive):
            proc = run_python(BATCH_WRITER, path, str(count), str(batch))
            assert proc.stdout is not None
            started = float(proc.stdout.readline())
            proc.wait()
            writer_done = time.time()
            if not done.wait(120):
                raise SystemExit(f"only {received[0]} of {count} events arrived")
        elapsed = last[0] - started
        return {
            "events": count,
            "events_per_s": count / elapsed,
            "writer_s": writer_done - started,
            "last_event_after_writer_ms": (last[0] - writer_done) * 1000.0,
        }


def memory(count: int, rounds: int = 10) -> dict[str, Any]:
    """RSS after each of ``rounds`` rounds of ``count / rounds`` events, once drained.

    While events flow, memory also holds the batches queued for the
    dispatcher (the listener can read faster than receivers run); measuring
    once each round is drained shows whether anything accumulates.
    """
    per_round = count // rounds
    with database() as path:
        received = [0]
        target = [0]
        done = threading.Event()
        peak_queue = [0]

        def receive(event: ChangeEvent) -> None:
            received[0] += 1
            if received[0] >= target[0]:
                done.set()

        series = []
        with notifier(path, receive) as n:
            dispatcher = n._dispatcher
            assert dispatcher is not None
            before = rss_mib()
            for _ in range(rounds):
                target[0] += per_round
                done.clear()
                proc = run_python(BATCH_WRITER, path, str(per_round), "1000")
                while proc.poll() is None:
                    peak_queue[0] = max(peak_queue[0], dispatcher.queue.qsize())
                    time.sleep(0.01)
                if not done.wait(300):
                    raise SystemExit(f"only {received[0]} of {target[0]} events arrived")
                gc.collect()
                series.append(rss_mib())
        return {
            "events": per_round * rounds,
            "rss_before_mib": before,
            "rss_after_each_round_mib": " ".join(f"{v:.0f}" for v in series),
            "last_minus_first_round_mib": series[-1] - series[0],
            "peak_queued_batches": peak_queue[0],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--rate", type=float, default=200.0, help="commits/s for latency")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["latency-cross", "latency-local", "idle", "throughput", "memory"],
    )
    parser.add_argument("--memory-events", type=int, default=None)
    args = parser.parse_args()
    quick = args.quick
    chosen = set(args.only or ["latency-cross", "latency-local", "idle", "throughput", "memory"])
    commits = 400 if quick else 2000
    results: list[tuple[str, dict[str, Any]]] = []

    def show(name: str, result: dict[str, Any]) -> None:
        results.append((name, result))
        text = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
        )
        print(f"{name:<28} {text}", flush=True)

    print(
        f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    if "latency-cross" in chosen:
        show("latency cross-process", latency_cross(commits, args.rate))
        show(
            "latency cross (polling)",
            latency_cross(commits, args.rate, sqlite_inotify=False),
        )
    if "latency-local" in chosen:
        show("latency same-process", latency_local(commits, args.rate))
    if "idle" in chosen:
        seconds = 3.0 if quick else 10.0
        show("idle (inotify)", idle(seconds))
        show("idle (polling)", idle(seconds, sqlite_inotify=False))
    if "throughput" in chosen:
        show("throughput (batches of 1000)", throughput(50_000 if quick else 200_000))
    if "memory" in chosen:
        count = args.memory_events or (100_000 if quick else 1_000_000)
        show("memory", memory(count))


if __name__ == "__main__":
    main()
