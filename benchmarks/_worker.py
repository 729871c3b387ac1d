"""Child processes of the benchmark runner: consumers and producers.

``python -m benchmarks._worker '<json spec>'``.  A worker reports on stdout,
one JSON object a line: ``{"ready": ...}`` once it listens, ``{"progress": n}``
while it consumes (memory case), ``{"result": ...}`` at the end, or
``{"error": "traceback"}``.  Consumers run in their own process so that the
producer (and the runner) never compete with them for the GIL, and so their
resident memory is theirs alone.
"""

from __future__ import annotations

import json
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks._env import pg_connect, rss_bytes


def say(**message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def bench_table(name: str, schema: str | None) -> Any:
    """The table every PostgreSQL case writes: a key and two payload columns."""
    import sqlalchemy as sa

    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("a", sa.Integer, nullable=False),
        sa.Column("b", sa.Text, nullable=False),
        schema=schema,
    )


class Tally:
    """What a consumer records: count, first and last receipt, latencies, progress."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.total = int(spec.get("warmup", 0)) + int(spec["count"])
        self.warmup = int(spec.get("warmup", 0))
        self.progress_every = int(spec.get("progress", 0))
        self.n = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.latencies: list[float] = []
        self.receipts: list[tuple[int, float]] = []
        self.commits: list[tuple[int, float]] = []
        self.done = threading.Event()
        self.warm = threading.Event()

    def result(self, measure: str) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.n, "t_first": self.t_first, "t_last": self.t_last}
        if measure == "latency":
            out["latencies"] = self.latencies[self.warmup :]
        if measure == "receipts":
            out["receipts"] = self.receipts
            out["commits"] = self.commits
        return out


def pg_bare(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """The reference: a psycopg2 connection, ``select()`` + ``poll()``, ``json.loads``."""
    conn = pg_connect(spec["url"])
    with conn.cursor() as cur:
        cur.execute(f'LISTEN "{spec["channel"]}"')
    total = tally.total
    loads = json.loads
    clock = time.monotonic
    wall = time.time
    latencies = tally.latencies
    progress = tally.progress_every

    def run() -> None:
        n = 0
        sel = select.select
        while n < total:
            if not conn.notifies:
                sel([conn], [], [], 10.0)
            conn.poll()
            notes = conn.notifies
            if not notes:
                continue
            conn.notifies = []
            if measure == "latency":
                for note in notes:
                    data = loads(note.payload)
                    latencies.append(wall() - data["ts"])
            else:
                for note in notes:
                    loads(note.payload)
            if n == 0:
                tally.t_first = clock()
            before = n
            n += len(notes)
            if progress and n // progress != before // progress:
                say(progress=n)
            if before < tally.warmup <= n:
                tally.warm.set()
        tally.n = n
        tally.t_last = clock()
        conn.close()

    return run


def _receiver(tally: Tally, measure: str) -> Callable[[Any], None]:
    """The receiver every sqlnotify mode runs: counts, and records latency or progress.

    ``latency``: from the payload's timestamp; ``receipts``: the row's ``a``
    and the time it arrived, matched later with the producer's commit times.
    """
    total = tally.total
    warmup = tally.warmup
    progress = tally.progress_every
    clock = time.monotonic
    wall = time.time
    append = tally.latencies.append
    count = 0

    if measure == "receipts":
        receipt = tally.receipts.append

        def receive_receipt(event: Any) -> None:
            nonlocal count
            receipt((event.extra_columns["a"], wall()))
            count += 1
            if count == total:
                tally.n = count
                tally.t_last = clock()
                tally.done.set()

        return receive_receipt

    if measure == "latency":

        def receive(event: Any) -> None:
            nonlocal count
            append(wall() - event.epoch)
            count += 1
            if count == total:
                tally.n = count
                tally.t_last = clock()
                tally.done.set()

        return receive

    def receive_count(event: Any) -> None:
        nonlocal count
        count += 1
        if count == 1:
            tally.t_first = clock()
        if progress and count % progress == 0:
            say(progress=count)
        if count == warmup:
            tally.warm.set()
        if count == total:
            tally.n = count
            tally.t_last = clock()
            tally.done.set()

    return receive_count


def _notifier(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    import sqlalchemy as sa

    from sqlnotify import Notifier

    engine = sa.create_engine(spec["url"], pool_size=1, max_overflow=1)
    table = bench_table(spec["table"], spec["schema"])
    notifier = Notifier(engine, **spec.get("options", {}))
    notifier.watch(table, "insert", extra_columns=["a", "b"], **spec.get("watch", {}))
    return engine, table, notifier


def pg_sqlnotify(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """sqlnotify's listener and dispatcher threads, one receiver connected with subscribe()."""
    engine, table, notifier = _notifier(spec)
    label = spec.get("watch", {}).get("channel_label")
    notifier.subscribe(table, "insert", channel_label=label)(_receiver(tally, measure))
    notifier.start()

    def run() -> None:
        tally.done.wait(spec.get("timeout", 300.0))
        notifier.stop()
        engine.dispose()

    return run


def pg_aio(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """The asyncio bridge: an ``async def`` receiver on the loop that ran ``astart()``."""
    import asyncio

    engine, table, notifier = _notifier(spec)
    receive = _receiver(tally, measure)

    async def on_event(event: Any) -> None:
        receive(event)

    notifier.subscribe(table, "insert")(on_event)
    started = threading.Event()
    failure: list[BaseException] = []
    timeout = spec.get("timeout", 300.0)

    async def main() -> None:
        try:
            await notifier.astart()
        except BaseException as exc:
            failure.append(exc)
            raise
        finally:
            started.set()
        await asyncio.to_thread(tally.done.wait, timeout)
        await notifier.astop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="bench-loop", daemon=True)
    thread.start()
    if not started.wait(60) or failure:
        raise RuntimeError(f"the notifier did not start on the loop: {failure}")

    def run() -> None:
        thread.join(timeout)
        engine.dispose()

    return run


def sqlite_table() -> Any:
    """The SQLite cases' table: a key, two payload columns, and the producer's clock."""
    import sqlalchemy as sa

    return sa.Table(
        "bench",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("a", sa.Integer, nullable=False),
        sa.Column("b", sa.Text, nullable=False),
        sa.Column("sent", sa.Float, nullable=False),
    )


SQLITE_INSERT = "INSERT INTO bench (a, b, sent) VALUES (?, 'paced', ?)"


def _local_producer(
    spec: dict[str, Any], tally: Tally, write: Callable[[int], None]
) -> threading.Thread:
    """A thread of this process committing ``count`` rows at ``rate`` a second."""
    rate = float(spec["local"]["rate"])
    count = int(spec["local"]["count"])
    committed = tally.commits.append

    def produce() -> None:
        start = time.monotonic()
        for i in range(count):
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            write(i)
            committed((i, time.time()))

    return threading.Thread(target=produce, name="bench-producer", daemon=True)


def sqlite_bare(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """The reference: a plain loop checking ``PRAGMA data_version`` every millisecond."""
    import sqlite3

    path = spec["path"]
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    last = conn.execute("SELECT coalesce(max(seq), 0) FROM sqlnotify_log").fetchone()[0]
    total = tally.total
    loads = json.loads
    wall = time.time
    receipts = tally.receipts
    producer = None
    if spec.get("local"):
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        producer = _local_producer(
            spec, tally, lambda i: writer.execute(SQLITE_INSERT, (i, time.time())) and None
        )

    def run() -> None:
        nonlocal last
        if producer is not None:
            producer.start()
        n = 0
        version = None
        interval = float(spec.get("poll", 0.001))
        fetch = "SELECT seq, payload FROM sqlnotify_log WHERE seq > ? ORDER BY seq"
        while n < total:
            now_version = conn.execute("PRAGMA data_version").fetchone()[0]
            if now_version != version:
                version = now_version
                rows = conn.execute(fetch, (last,)).fetchall()
                if rows:
                    last = rows[-1][0]
                    for _, payload in rows:
                        data = loads(payload)
                        if measure == "receipts":
                            receipts.append((data["row"]["a"], wall()))
                    if n == 0:
                        tally.t_first = time.monotonic()
                    n += len(rows)
                    continue
            time.sleep(interval)
        tally.n = n
        tally.t_last = time.monotonic()
        conn.close()

    return run


def sqlite_sqlnotify(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """sqlnotify on the SQLite file; a local producer writes through the notifier's engine."""
    import sqlalchemy as sa

    from sqlnotify import Notifier

    engine = sa.create_engine(f"sqlite:///{spec['path']}")
    table = sqlite_table()
    notifier = Notifier(engine)
    notifier.watch(table, "insert", extra_columns=["a", "b", "sent"])
    notifier.subscribe(table, "insert")(_receiver(tally, measure))
    notifier.start()
    producer = None
    if spec.get("local"):
        insert = table.insert()

        def write(i: int) -> None:
            with engine.begin() as conn:
                conn.execute(insert, {"a": i, "b": "paced", "sent": time.time()})

        producer = _local_producer(spec, tally, write)

    def run() -> None:
        if producer is not None:
            producer.start()
        tally.done.wait(spec.get("timeout", 300.0))
        notifier.stop()
        engine.dispose()

    return run


def pg_durable(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """sqlnotify with the table's durable watch (labelled ``durable``): read from the journal."""
    return pg_sqlnotify(
        {**spec, "watch": {"durable": True, "channel_label": "durable"}}, tally, measure
    )


def pg_poll(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """The durable watch in poll mode (``pg_listen=False``): no LISTEN, journal reads."""
    options = {"pg_listen": False, "pg_poll_interval": float(spec["poll_interval"])}
    return pg_sqlnotify(
        {**spec, "watch": {"durable": True, "channel_label": "durable"}, "options": options},
        tally,
        measure,
    )


CONSUMERS = {
    "bare": pg_bare,
    "sqlnotify": pg_sqlnotify,
    "durable": pg_durable,
    "poll": pg_poll,
    "aio": pg_aio,
    "sqlite_bare": sqlite_bare,
    "sqlite": sqlite_sqlnotify,
}


def consumer(
    spec: dict[str, Any], report: Callable[[Tally, str], dict[str, Any]] | None = None
) -> None:
    """Receive with ``CONSUMERS[spec["mode"]]``; say ``report(tally, measure)`` at the end."""
    measure = spec.get("measure", "throughput")
    tally = Tally(spec)
    run = CONSUMERS[spec["mode"]](spec, tally, measure)
    say(ready={"rss": rss_bytes()})
    if measure == "memory":
        thread = threading.Thread(target=run, name="bench-consume", daemon=True)
        thread.start()
        if not tally.warm.wait(spec.get("timeout", 300.0)):
            raise RuntimeError("warm-up events never arrived")
        say(warm={"rss": rss_bytes()})
        thread.join(spec.get("timeout", 300.0))
        say(result={"rss": rss_bytes(), "count": tally.n})
        return
    run()
    say(result=report(tally, measure) if report is not None else tally.result(measure))


def producer(spec: dict[str, Any]) -> None:
    """Paced writes: ``count`` single-row transactions at ``rate`` per second."""
    if spec["mode"] == "sqlite":
        sqlite_producer(spec)
        return
    conn = pg_connect(spec["url"], autocommit=spec["mode"] == "notify")
    rate = float(spec["rate"])
    count = int(spec["count"])
    table = f'"{spec["schema"]}"."{spec["table"]}"'
    channel = spec["channel"]
    cur = conn.cursor()
    say(ready={})
    start = time.monotonic()
    late = 0
    for i in range(count):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.001:
            late += 1
        if spec["mode"] == "insert":
            cur.execute(f"INSERT INTO {table} (a, b) VALUES (%s, 'paced')", (i,))
            conn.commit()
        else:
            body = json.dumps({"ts": time.time(), "row": {"id": i, "a": i, "b": "paced"}})
            cur.execute("SELECT pg_notify(%s, %s)", (channel, body))
    elapsed = time.monotonic() - start
    conn.close()
    say(result={"elapsed": elapsed, "rate": count / elapsed, "late": late})


def sqlite_producer(spec: dict[str, Any]) -> None:
    import sqlite3

    conn = sqlite3.connect(spec["path"], timeout=30, isolation_level=None)
    commits: list[tuple[int, float]] = []
    rate = float(spec["rate"])
    count = int(spec["count"])
    say(ready={})
    start = time.monotonic()
    for i in range(count):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        conn.execute(SQLITE_INSERT, (i, time.time()))
        commits.append((i, time.time()))
    elapsed = time.monotonic() - start
    conn.close()
    say(result={"elapsed": elapsed, "rate": count / elapsed, "commits": commits})


ROLES: dict[str, Callable[[dict[str, Any]], None]] = {"consumer": consumer, "producer": producer}


def main(roles: dict[str, Callable[[dict[str, Any]], None]] = ROLES) -> None:
    """Run the role the spec (the first argument, JSON) names; errors are said, not raised."""
    spec = json.loads(sys.argv[1])
    try:
        roles[spec["role"]](spec)
    except BaseException:
        say(error=traceback.format_exc())
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
