"""MySQL/MariaDB binlog source: the writer's cost and commit->receiver latency.

The server is ``SQLNOTIFY_BENCH_BINLOG_URL`` when set (it must have the
binary log on, ROW format, FULL row image and metadata); otherwise the case
starts a private ``mariadbd`` with the binary log on for each run (the
tests' own ``tests/support/mariadbserver.py``) and removes it after.

The writer is a process of its own (``python -m benchmarks.mysql_binlog
write``), as an application's would be: the notifier's threads do not share
its interpreter.  Its rate is measured in short rounds on one table of that
one server, alternately with nothing reading the binary log and with a
notifier watching the table (started before the round, stopped once it
received every row of it), in the order off, on, on, off, ...: the binary
log's own cost is in both, and other work on the machine hits both alike.
The rates compared are the medians of the rounds.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import ROOT, cpu_seconds, percentile
from benchmarks.mysql_cases import RATE

#: Rounds of each kind (off and on) per run.
ROUNDS = 6


def _extra_missing() -> str | None:
    try:
        import pymysql  # noqa: F401
        import pymysqlreplication  # noqa: F401
    except ImportError as exc:
        return f"the mysql extra is not installed ({exc})"
    return None


def _available() -> str | None:
    missing = _extra_missing()
    if missing is not None:
        return missing
    if os.environ.get("SQLNOTIFY_BENCH_BINLOG_URL"):
        return None
    if not (shutil.which("mariadb-install-db") and shutil.which("mariadbd")):
        return "no SQLNOTIFY_BENCH_BINLOG_URL and no mariadbd to start"
    return None


def _table(name: str) -> Any:
    import sqlalchemy as sa

    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("a", sa.Integer),
        sa.Column("b", sa.String(40)),
        sa.Column("sent", sa.Float(precision=53)),
    )


def write(spec: dict[str, Any]) -> dict[str, Any]:
    """The writer process: ``count`` single-row INSERT transactions, as fast as it can
    or ``rate`` a second; its rate, and with ``stamps`` each row's ``(a, sent, committed)``."""
    import sqlalchemy as sa

    engine = sa.create_engine(spec["url"], poolclass=sa.pool.NullPool)
    table = _table(spec["table"])
    count, rate, first = int(spec["count"]), spec.get("rate"), int(spec.get("first", 0))
    label = "latency" if spec.get("stamps") else "writer"
    stamps: list[tuple[int, float, float]] = []
    with engine.connect() as conn:
        started = time.perf_counter()
        for i in range(first, first + count):
            if rate:
                pause = started + (i - first) / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            sent = time.time()
            conn.execute(table.insert().values(a=i, b=label, sent=sent))
            conn.commit()
            if spec.get("stamps"):
                stamps.append((i, sent, time.time()))
        elapsed = time.perf_counter() - started
    engine.dispose()
    return {"rate": count / elapsed, "stamps": stamps}


def _run_writer(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.mysql_binlog", "write", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


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


def _mysql_available() -> str | None:
    missing = _extra_missing()
    if missing is not None:
        return missing
    from tests.support.mysqlserver import mysql_missing

    return mysql_missing()


def run_mysql(ctx: Context) -> dict[str, float]:
    """The same measures on a private MySQL (the tests' ``ThrowawayMySQL``), its commits
    made durable as MySQL's defaults make them (the tests' server does not sync)."""
    from tests.support.mysqlserver import ThrowawayMySQL

    server = ThrowawayMySQL(extra=["--sync-binlog=1", "--innodb-flush-log-at-trx-commit=1"])
    try:
        return _measure(ctx, server.url)
    finally:
        server.destroy()


class _Receipts:
    """What the notifier received: the time each row's ``a`` arrived."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self._lock = threading.Lock()
        self._want = 0
        self.done = threading.Event()

    def expect(self, total: int) -> None:
        with self._lock:
            self._want = total
            self.done.clear()
            if len(self.at) >= total:
                self.done.set()

    def __call__(self, event: Any) -> None:
        now = time.time()
        with self._lock:
            self.at[event.row["a"]] = now
            if len(self.at) >= self._want:
                self.done.set()


def _measure(ctx: Context, url: str) -> dict[str, float]:
    import sqlalchemy as sa

    from sqlnotify import Notifier

    base = sa.make_url(url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    db_url = base.set(database=name)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    writer_url = db_url.render_as_string(hide_password=False)
    out: dict[str, float] = {}
    try:
        table = _table("rows")
        table.metadata.create_all(engine)
        receipts = _Receipts()

        def notifier() -> Notifier:
            n = Notifier(engine, use_logger=False, mysql_source="binlog")
            n.watch(table, "insert", extra_columns=["a", "b", "sent"])
            n.subscribe(table, "insert")(receipts)
            return n

        per_round = ctx.count(1200, 100)
        spec = {"url": writer_url, "table": "rows", "count": per_round}
        _run_writer({**spec, "count": per_round // 5, "first": -per_round})  # warm up
        rates: dict[str, list[float]] = {"off": [], "on": []}
        cpu = 0.0
        first = 0
        for r in range(2 * ROUNDS):
            kind = "off" if r % 4 in (0, 3) else "on"
            if kind == "off":
                rates["off"].append(_run_writer({**spec, "first": first})["rate"])
            else:
                n = notifier()
                with n:
                    receipts.expect(len(receipts.at) + per_round)
                    before = cpu_seconds()
                    rates["on"].append(_run_writer({**spec, "first": first})["rate"])
                    if not receipts.done.wait(60):
                        raise RuntimeError("the binlog notifier did not receive every row")
                    cpu += cpu_seconds() - before
            first += per_round
        out["plain_rate"] = statistics.median(rates["off"])
        out["binlog_rate"] = statistics.median(rates["on"])
        out["cpu_per_row"] = cpu / (ROUNDS * per_round) * 1e6

        total = ctx.count(2000, 100)
        receipts.at.clear()
        with notifier():
            receipts.expect(total)
            result = _run_writer(
                {**spec, "count": total, "first": first, "rate": RATE, "stamps": True}
            )
            receipts.done.wait(30)
        sent = [(at - receipts.at[a]) for a, at, _ in result["stamps"] if a in receipts.at]
        done = [(at - receipts.at[a]) for a, _, at in result["stamps"] if a in receipts.at]
        delays = sorted(-d for d in sent)
        after_commit = sorted(-d for d in done)
        out["rate"] = result["rate"]
        out["p50"] = percentile(delays, 50) * 1000
        out["p99"] = percentile(delays, 99) * 1000
        out["commit_p50"] = percentile(after_commit, 50) * 1000
        out["received"] = float(len(delays))
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
    return out


_WHAT = (
    "on one server with the binary log on, a writer process of its own: single-row"
    " INSERTs (one transaction each) per second, in alternating rounds with nothing"
    " reading the binary log and with a notifier watching the table (one watch, three"
    " extra columns, receiving every row), medians of the rounds; the notifier's CPU per"
    f" row; then the time from the writer's INSERT to the receiver at {RATE} commits a"
    " second (the same clock as the trigger case), and from the writer's COMMIT returning"
)
_ROWS = [
    Row("plain_rate", "INSERT commits/s, nothing reading", "rows/s"),
    Row("binlog_rate", "INSERT commits/s, binlog watch", "rows/s", "plain_rate", ">=0.95x"),
    Row("cpu_per_row", "notifier CPU per row", "us"),
    Row("rate", "producer rate", "commits/s"),
    Row("p50", "commit -> receiver p50", "ms", None, "<=2"),
    Row("p99", "commit -> receiver p99", "ms"),
    Row("commit_p50", "COMMIT returned -> receiver p50", "ms"),
    Row("received", "events received", "events"),
]

BINLOG = Case(
    name="mysql_binlog",
    title="MySQL/MariaDB binlog source (private MariaDB)",
    what=_WHAT,
    needs=(),
    rows=_ROWS,
    run=run,
    available=_available,
)

BINLOG_MYSQL = Case(
    name="mysql_binlog_mysql",
    title="MySQL/MariaDB binlog source (private MySQL 9.7, durable commits)",
    what=_WHAT + "; on MySQL with sync_binlog=1 and innodb_flush_log_at_trx_commit=1",
    needs=(),
    rows=_ROWS,
    run=run_mysql,
    available=_mysql_available,
)

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "write":
        raise SystemExit("usage: python -m benchmarks.mysql_binlog write '<json spec>'")
    sys.stdout.write(json.dumps(write(json.loads(sys.argv[2]))) + "\n")
