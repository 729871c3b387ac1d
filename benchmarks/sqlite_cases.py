"""SQLite case: cross-process and same-process latency, idle CPU, throughput."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import tempfile
import time
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import Worker, percentile

_dirs: list[str] = []


def close() -> None:
    while _dirs:
        shutil.rmtree(_dirs.pop(), ignore_errors=True)


def _database(ctx: Context) -> str:
    """One database file for the run, with sqlnotify's trigger and change log installed."""
    path = ctx.scratch.get("sqlite_path")
    if path is None:
        import sqlalchemy as sa

        from benchmarks._worker import sqlite_table
        from sqlnotify import Notifier

        folder = tempfile.mkdtemp(prefix="sqlnotify-bench-")
        _dirs.append(folder)
        path = os.path.join(folder, "bench.db")
        engine = sa.create_engine(f"sqlite:///{path}")
        table = sqlite_table()
        table.metadata.create_all(engine)
        notifier = Notifier(engine, use_logger=False)
        notifier.watch(table, "insert", extra_columns=["a", "b", "sent"])
        notifier.install()
        notifier.dialect.close()
        engine.dispose()
        ctx.scratch["sqlite_path"] = path
    return str(path)


def _process_cpu(pid: int) -> float:
    """CPU seconds of every thread of ``pid``, to the nanosecond (``schedstat``)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as fh:
                total += int(fh.read().split()[0])
        except OSError:
            continue  # the thread ended
    return total / 1e9


def _spec(ctx: Context, mode: str, **extra: Any) -> dict[str, Any]:
    return {"role": "consumer", "mode": mode, "path": _database(ctx), **extra}


def _latencies(receipts: list[Any], commits: list[Any], warmup: int) -> list[float]:
    """Receipt minus commit time per row, in ms, sorted; the first ``warmup`` rows dropped."""
    committed = {int(i): t for i, t in commits}
    out = [(t - committed[int(i)]) * 1000.0 for i, t in receipts if int(i) in committed]
    return sorted(out[warmup:])


def _modes(ctx: Context) -> tuple[str, str]:
    return ("sqlite_bare", "sqlite") if ctx.run_index % 2 == 0 else ("sqlite", "sqlite_bare")


def _name(mode: str) -> str:
    return "bare" if mode == "sqlite_bare" else "sqlnotify"


def sqlite_case(ctx: Context) -> dict[str, float]:
    count = ctx.count(1_000, 50)
    warmup = ctx.count(50, 5)
    rate = 200.0
    idle_seconds = ctx.count(5, 1)
    backlog = ctx.count(50_000, 1_000)
    out: dict[str, float] = {}
    path = _database(ctx)
    for mode in _modes(ctx):
        name = _name(mode)
        # Cross-process latency, after measuring the listener's idle cost.
        spec = _spec(ctx, mode, count=count, warmup=warmup, measure="receipts")
        with Worker(spec) as consumer:
            consumer.expect("ready")
            cpu0, t0 = _process_cpu(consumer.pid), time.monotonic()
            time.sleep(idle_seconds)  # nothing is written: what does waiting cost?
            used = _process_cpu(consumer.pid) - cpu0
            out[f"idle_{name}"] = 100.0 * used / (time.monotonic() - t0)
            producer = {"role": "producer", "mode": "sqlite", "path": path}
            producer.update(rate=rate, count=count + warmup)
            with Worker(producer) as writer:
                writer.expect("ready")
                commits = writer.expect("result")["commits"]
                writer.wait()
            result = consumer.expect("result")
            consumer.wait()
        lat = _latencies(result["receipts"], commits, warmup)
        out[f"cross_{name}_p50"] = percentile(lat, 50)
        out[f"cross_{name}_p99"] = percentile(lat, 99)

        # Same-process latency: a thread of the consumer's process writes.
        local = {"rate": rate, "count": count + warmup}
        spec = _spec(ctx, mode, count=count, warmup=warmup, measure="receipts", local=local)
        with Worker(spec) as consumer:
            consumer.expect("ready")
            result = consumer.expect("result")
            consumer.wait()
        lat = _latencies(result["receipts"], result["commits"], warmup)
        out[f"local_{name}_p50"] = percentile(lat, 50)
        out[f"local_{name}_p99"] = percentile(lat, 99)

        # Throughput: drain a backlog committed while the consumer was paused.
        with Worker(_spec(ctx, mode, count=backlog)) as consumer:
            consumer.expect("ready")
            os.kill(consumer.pid, signal.SIGSTOP)
            try:
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                for first in range(0, backlog, 100):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(
                        "INSERT INTO bench (a, b, sent) VALUES (?, 'backlog', 0)",
                        [(i,) for i in range(first, min(first + 100, backlog))],
                    )
                    conn.execute("COMMIT")
                conn.close()
            finally:
                t0 = time.monotonic()
                os.kill(consumer.pid, signal.SIGCONT)
            result = consumer.expect("result")
            consumer.wait()
        if result["count"] < backlog:
            raise RuntimeError(f"{name} received {result['count']} of {backlog} events")
        out[f"tp_{name}"] = backlog / (result["t_last"] - t0)
    return out


SQLITE = Case(
    name="sqlite",
    title="SQLite",
    what=(
        "latency from the moment the producer's single-row COMMIT returned to the moment the"
        " receiver got the row (both time.time() on this host; the receiver may see a row"
        " before its writer's commit call returns), 200 commits a second, from another"
        " process and from a"
        " thread of the listening process (through the notifier's engine); CPU share of one"
        " core used by the listening process while nothing is written; events/s draining a"
        " backlog of 100-row transactions; baseline: a plain loop checking PRAGMA"
        " data_version every millisecond and reading the same change log"
    ),
    needs=("sqlite",),
    rows=[
        Row("cross_bare_p50", "cross-process p50, 1 ms poller", "ms"),
        Row("cross_sqlnotify_p50", "cross-process p50", "ms", "cross_bare_p50", "<=2", "delta"),
        Row("cross_bare_p99", "cross-process p99, 1 ms poller", "ms"),
        Row("cross_sqlnotify_p99", "cross-process p99", "ms", "cross_bare_p99", "<=10", "delta"),
        Row("local_bare_p50", "same-process p50, 1 ms poller", "ms"),
        Row("local_sqlnotify_p50", "same-process p50", "ms", "local_bare_p50", "<=1", "delta"),
        Row("local_bare_p99", "same-process p99, 1 ms poller", "ms"),
        Row("local_sqlnotify_p99", "same-process p99", "ms", "local_bare_p99", None, "delta"),
        Row("idle_bare", "idle CPU, 1 ms poller", "% core"),
        Row("idle_sqlnotify", "idle CPU", "% core", "idle_bare", "<=2"),
        Row("tp_bare", "throughput, 1 ms poller", "events/s"),
        Row("tp_sqlnotify", "throughput", "events/s", "tp_bare"),
    ],
    run=sqlite_case,
)
