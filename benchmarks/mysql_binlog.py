"""MySQL/MariaDB binlog source: the writer's cost and commit->receiver latency.

The server is ``SQLNOTIFY_BENCH_BINLOG_URL`` when set (it must have the
binary log on, ROW format, FULL row image and metadata); otherwise the case
starts a private ``mariadbd`` with the binary log on for each run (the
tests' own ``tests/support/mariadbserver.py``) and removes it after.
Every rate is measured on that one server, so the binary log's own cost is
in the baseline too: the ratio is what the watch adds.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid

from benchmarks._case import Case, Context, Row
from benchmarks._env import percentile
from benchmarks.mysql_cases import RATE, _insert_rate, _tables


def _available() -> str | None:
    try:
        import pymysql  # noqa: F401
        import pymysqlreplication  # noqa: F401
    except ImportError as exc:
        return f"the mysql extra is not installed ({exc})"
    if os.environ.get("SQLNOTIFY_BENCH_BINLOG_URL"):
        return None
    if not (shutil.which("mariadb-install-db") and shutil.which("mariadbd")):
        return "no SQLNOTIFY_BENCH_BINLOG_URL and no mariadbd to start"
    return None


def run(ctx: Context) -> dict[str, float]:
    url = os.environ.get("SQLNOTIFY_BENCH_BINLOG_URL")
    if url:
        return _measure(ctx, url)
    from tests.support.mariadbserver import ThrowawayMariaDB

    server = ThrowawayMariaDB()
    try:
        return _measure(ctx, server.url)
    finally:
        server.destroy()


def _measure(ctx: Context, url: str) -> dict[str, float]:
    import sqlalchemy as sa

    from sqlnotify import ChangeEvent, Notifier

    base = sa.make_url(url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    engine = sa.create_engine(base.set(database=name))
    out: dict[str, float] = {}
    try:
        plain, watched = _tables(engine)
        notifier = Notifier(engine, use_logger=False, mysql_source="binlog")
        notifier.watch(watched, "insert", extra_columns=["a", "b", "sent"])
        delays: list[float] = []
        done = threading.Event()
        total = ctx.count(2000, 100)
        writes = ctx.count(3000, 100)

        @notifier.subscribe(watched, "insert")
        def receive(event: ChangeEvent) -> None:
            if event.row["b"] != "latency":
                return
            delays.append(time.time() - event.row["sent"])
            if len(delays) >= total:
                done.set()

        with notifier:
            _insert_rate(engine, plain, writes // 10)  # warm up
            out["plain_rate"] = _insert_rate(engine, plain, writes)
            out["binlog_rate"] = _insert_rate(engine, watched, writes)
            producer = sa.create_engine(base.set(database=name), poolclass=sa.pool.NullPool)
            with producer.connect() as conn:
                start = time.perf_counter()
                for i in range(total):
                    pause = start + i / RATE - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    conn.execute(watched.insert().values(a=i, b="latency", sent=time.time()))
                    conn.commit()
                out["rate"] = total / (time.perf_counter() - start)
            producer.dispose()
            done.wait(30)
        delays.sort()
        out["p50"] = percentile(delays, 50) * 1000
        out["p99"] = percentile(delays, 99) * 1000
        out["received"] = float(len(delays))
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
    return out


BINLOG = Case(
    name="mysql_binlog",
    title="MySQL/MariaDB binlog source",
    what=(
        "on one server with the binary log on: single-row INSERTs (one transaction each) per"
        " second on an unwatched table and on a table the binlog source watches (one watch,"
        " three extra columns, the notifier running and receiving); then the time from commit"
        f" to receiver at {RATE} commits a second from a separate engine"
    ),
    needs=(),
    rows=[
        Row("plain_rate", "INSERT commits/s, unwatched", "rows/s"),
        Row("binlog_rate", "INSERT commits/s, binlog watch", "rows/s", "plain_rate", ">=0.95x"),
        Row("rate", "producer rate", "commits/s"),
        Row("p50", "commit -> receiver p50", "ms", None, "<=2"),
        Row("p99", "commit -> receiver p99", "ms"),
        Row("received", "events received", "events"),
    ],
    run=run,
    available=_available,
)
