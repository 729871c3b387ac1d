"""MySQL/MariaDB case: the trigger source's writer cost, commit->receiver latency, idle reads.

The server comes from ``SQLNOTIFY_TEST_MYSQL_URL`` (default: MariaDB on
127.0.0.1:3306, root); the case works in a database of its own, dropped
after the run.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from benchmarks._case import Case, Context, Row
from benchmarks._env import percentile

DEFAULT_URL = "mariadb+pymysql://root@127.0.0.1:3306/test"
#: Commits a second of the latency run.
RATE = 200


def _url() -> str:
    return os.environ.get("SQLNOTIFY_TEST_MYSQL_URL", DEFAULT_URL)


def _available() -> str | None:
    try:
        import pymysql  # noqa: F401
        import sqlalchemy as sa

        engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:
        return f"no MySQL/MariaDB server at {_url()} ({exc})"
    return None


def _tables(engine: Any) -> tuple[Any, Any]:
    import sqlalchemy as sa

    def table(name: str) -> sa.Table:
        return sa.Table(
            name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("a", sa.Integer),
            sa.Column("b", sa.String(40)),
            sa.Column("sent", sa.Float(precision=53)),
        )

    plain, watched = table("plain"), table("watched")
    plain.metadata.create_all(engine)
    watched.metadata.create_all(engine)
    return plain, watched


def _insert_rate(engine: Any, table: Any, n: int) -> float:
    with engine.connect() as conn:
        started = time.perf_counter()
        for i in range(n):
            conn.execute(table.insert().values(a=i, b="writer", sent=time.time()))
            conn.commit()
        return n / (time.perf_counter() - started)


def _questions(conn: Any) -> int:
    row = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Questions'").one()
    return int(row[1])


def run(ctx: Context) -> dict[str, float]:
    import sqlalchemy as sa

    from sqlnotify import ChangeEvent, Notifier

    base = sa.make_url(_url())
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    engine = sa.create_engine(base.set(database=name))
    out: dict[str, float] = {}
    try:
        plain, watched = _tables(engine)
        notifier = Notifier(engine, use_logger=False)
        notifier.watch(watched, "insert", extra_columns=["a", "b", "sent"])
        notifier.install()
        writes = ctx.count(3000, 100)
        _insert_rate(engine, plain, writes // 10)  # warm up
        out["plain_rate"] = _insert_rate(engine, plain, writes)
        out["trigger_rate"] = _insert_rate(engine, watched, writes)

        delays: list[float] = []
        done = threading.Event()
        total = ctx.count(2000, 100)

        @notifier.subscribe(watched, "insert")
        def receive(event: ChangeEvent) -> None:
            delays.append(time.time() - event.row["sent"])
            if len(delays) >= total:
                done.set()

        with notifier:
            # Idle: what the listener asks the server while nothing happens.
            time.sleep(0.5)
            idle = ctx.count(5.0, 1.0)
            with admin.connect() as conn:
                before = _questions(conn)
                time.sleep(idle)
                asked = _questions(conn) - before - 1  # the second SHOW counts itself
            out["idle_queries"] = asked / (idle / 0.1)
            # Producer: a separate engine (its commits do not wake the listener).
            producer = sa.create_engine(base.set(database=name), poolclass=sa.pool.NullPool)
            with producer.connect() as conn:
                start = time.perf_counter()
                for i in range(total):
                    due = start + i / RATE
                    pause = due - time.perf_counter()
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


MYSQL = Case(
    name="mysql_trigger",
    title="MySQL/MariaDB trigger source",
    what=(
        "single-row INSERTs (one transaction each) per second on a table without a trigger and"
        " on one with sqlnotify's trigger (one watch, three extra columns; the change log row is"
        " written in the same transaction); then, with the notifier running, the queries its"
        f" listener sends per 100 ms while idle, and the time from commit to receiver at {RATE}"
        " commits a second from a separate engine (which does not wake the listener: the poll"
        " finds each commit)"
    ),
    needs=(),
    rows=[
        Row("plain_rate", "INSERT commits/s, no trigger", "rows/s"),
        Row("trigger_rate", "INSERT commits/s, sqlnotify trigger", "rows/s", "plain_rate"),
        Row("idle_queries", "listener queries per 100 ms, idle", "queries", None, "<=1"),
        Row("rate", "producer rate", "commits/s"),
        Row("p50", "commit -> receiver p50", "ms", None, "<=5"),
        Row("p99", "commit -> receiver p99", "ms"),
        Row("received", "events received", "events"),
    ],
    run=run,
    available=_available,
)
