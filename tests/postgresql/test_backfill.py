"""Backfill: a table's rows as SNAPSHOT events, then its changes, no gap and no duplicate."""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import signal
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from support.procs import Proc, child_env

from sqlnotify import ChangeEvent, Notifier, Operation
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import wait_until

ROWS = 10_000
PAGE = 500


def _dsn(pg_url: str) -> str:
    return sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def items(pg_schema_engine: sa.Engine) -> str:
    """Table ``item`` (``id`` key, ``note``, ``n`` a version UPDATEs bump): 10,000 rows."""
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE item (id int PRIMARY KEY, note text, n int NOT NULL)")
        conn.exec_driver_sql(
            f"INSERT INTO item SELECT g, 'first', 0 FROM generate_series(1, {ROWS}) g"
        )
    return "item"


class Replica:
    """The table rebuilt from events (dispatcher thread), and every row state delivered."""

    def __init__(self) -> None:
        self.rows: dict[Any, tuple[Any, ...]] = {}
        #: ``(id, n)`` of each SNAPSHOT, INSERT or UPDATE event delivered.
        self.states: collections.Counter[tuple[Any, Any]] = collections.Counter()
        self.ops: collections.Counter[str] = collections.Counter()

    def __call__(self, event: ChangeEvent) -> None:
        self.ops[event.operation.value] += 1
        if event.operation is Operation.DELETE:
            self.rows.pop(event.id, None)
            return
        values = tuple(event.extra_columns.values())
        self.rows[event.id] = values
        self.states[(event.id, values[-1])] += 1

    def replay(self, lines: list[str]) -> None:
        """Apply events a child process wrote as JSON lines ``[op, id, note, n]``."""
        for line in lines:
            op, key, note, n = json.loads(line)
            self.ops[op] += 1
            if op == "delete":
                self.rows.pop(key, None)
            else:
                self.rows[key] = (note, n)
                self.states[(key, n)] += 1


def table_rows(engine: sa.Engine) -> dict[Any, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {r[0]: (r[1], r[2]) for r in conn.exec_driver_sql("SELECT id, note, n FROM item")}


def consumer(engine: sa.Engine, name: str | None, replica: Replica, **options: Any) -> Notifier:
    notifier = Notifier(engine, consumer=name, **options)
    for op in Operation.rows():
        notifier.watch("item", op, extra_columns=["note", "n"], durable=True)
        notifier.subscribe("item", op)(replica)
    return notifier


class Writer:
    """A thread writing to ``item`` in its own transactions until stopped: inserts of new
    ids, updates (each bumps ``n``) and deletes, at random."""

    def __init__(self, dsn: str, schema: str, seed: int, first_id: int = ROWS + 1) -> None:
        self.conn = psycopg2.connect(dsn, options=f"-csearch_path={schema}")
        self.conn.autocommit = True
        self.random = random.Random(seed)
        self.next_id = first_id
        self.writes = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-writer", daemon=True)

    def write(self) -> None:
        cur = self.conn.cursor()
        roll = self.random.random()
        if roll < 0.3:
            cur.execute("INSERT INTO item VALUES (%s, 'new', 0)", (self.next_id,))
            self.next_id += 1
        elif roll < 0.9:
            key = self.random.randint(1, ROWS + 1000)
            cur.execute("UPDATE item SET n = n + 1, note = 'changed' WHERE id = %s", (key,))
        else:
            cur.execute("DELETE FROM item WHERE id = %s", (self.random.randint(1, ROWS),))
        self.writes += 1

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.write()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.conn.close()
        assert not self.thread.is_alive(), "the writer did not stop"
        assert self.error is None, self.error


def assert_exactly_once(replica: Replica, engine: sa.Engine, at_least_once: int = 0) -> None:
    """The replica equals the table, and each row state came once (``at_least_once``:
    how many states may have come twice)."""
    wait_until(lambda: replica.rows == table_rows(engine), timeout=30, message="the table")
    final = table_rows(engine)
    missing = [k for k, (_, n) in final.items() if replica.states[(k, n)] == 0]
    assert not missing
    twice = [s for s, count in replica.states.items() if count > 1]
    assert len(twice) <= at_least_once, twice[:10]


def backfill_phase(notifier: Notifier) -> str:
    return str(notifier.health()["backfill"][0]["phase"])


@pytest.mark.parametrize("per_statement", [False, True], ids=["row", "statement"])
def test_concurrent_writer_gets_every_final_state_once(
    pg_url: str,
    pg_schema_engine: sa.Engine,
    schema: str,
    items: str,
    notifiers: list[Notifier],
    per_statement: bool,
) -> None:
    replica = Replica()
    # A small queue: pages are read as the receivers go, so writes land between them.
    notifier = consumer(
        pg_schema_engine,
        "bf",
        replica,
        max_queue=PAGE + 100,
        pg_journal_per_statement=per_statement,
    )
    notifiers.append(notifier)
    after_pages = Writer(_dsn(pg_url), schema, seed=2)

    def progress(done: int, total: int | None) -> None:
        # Dispatcher thread, the page's receivers ran.  Rows far enough on are
        # not read yet (the queue holds at most two more pages, deleted ids
        # aside): the pages will show these writes, and the journal must not
        # deliver them again.
        ahead = done + 6 * PAGE
        cur = after_pages.conn.cursor()
        if ahead < ROWS:
            cur.execute("UPDATE item SET n = n + 1 WHERE id IN (%s, %s)", (ahead + 1, ahead + 7))
        cur.execute("UPDATE item SET n = n + 1 WHERE id = %s", (max(done - 3, 1),))

    notifier.backfill("item", page_size=PAGE, progress=progress)
    with Writer(_dsn(pg_url), schema, seed=1) as writer:
        notifier.start()
        wait_until(lambda: backfill_phase(notifier) == "done", timeout=60, message="backfill")
        assert writer.writes > 0
    after_pages.conn.close()
    assert_exactly_once(replica, pg_schema_engine)
    assert replica.ops["snapshot"] >= ROWS - replica.ops["delete"]
    report = notifier.health()["backfill"][0]
    assert report["suppressed"] > 0 and report["pages"] > ROWS // PAGE
    assert report["rows"] == report["read"] == replica.ops["snapshot"]


CHILD = textwrap.dedent(
    """
    import json, sys, threading
    import sqlalchemy as sa
    from sqlnotify import Notifier, Operation

    url, schema, out, stall_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    engine = sa.create_engine(
        sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    )
    notifier = Notifier(engine, consumer="killed", max_queue=600)
    log = open(out, "a")

    def record(event):
        note, n = event.extra_columns.values()
        log.write(json.dumps([event.operation.value, event.id, note, n]) + "\\n")

    for op in Operation.rows():
        notifier.watch("item", op, extra_columns=["note", "n"], durable=True)
        notifier.subscribe("item", op)(record)

    def progress(done, total):
        log.flush()
        print("delivered", done, flush=True)
        if done >= stall_at:
            threading.Event().wait(120)  # the parent kills this process meanwhile

    notifier.backfill("item", page_size=500, progress=progress)
    notifier.start()
    threading.Event().wait(120)
    """
)


STREAM_CHILD = textwrap.dedent(
    """
    import json, sys, threading
    import psycopg2
    import sqlalchemy as sa
    from sqlnotify import Notifier, Operation

    url, dsn, schema, out = sys.argv[1:5]
    engine = sa.create_engine(
        sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    )
    writes = psycopg2.connect(dsn, options=f"-csearch_path={schema}")
    writes.autocommit = True
    notifier = Notifier(engine, consumer="streaming", max_queue=600)
    log = open(out, "a")

    def record(event):
        if event.operation is not Operation.SNAPSHOT:
            log.flush()
            print("streaming", flush=True)
            threading.Event().wait(120)  # the parent kills this process meanwhile
        note, n = event.extra_columns.values()
        log.write(json.dumps([event.operation.value, event.id, note, n]) + "\\n")

    for op in Operation.rows():
        notifier.watch("item", op, extra_columns=["note", "n"], durable=True)
        notifier.subscribe("item", op)(record)

    def progress(done, total):
        # Rows pages will show (so the journal must skip them), and one shown already.
        cur = writes.cursor()
        if done + 3000 < 10000:
            cur.execute("UPDATE item SET n = n + 1 WHERE id = %s", (done + 3000,))
        cur.execute("UPDATE item SET n = n + 1 WHERE id = %s", (done - 3,))

    notifier.backfill("item", page_size=500, progress=progress)
    notifier.start()
    threading.Event().wait(120)
    """
)


def saved_state(engine: sa.Engine, name: str) -> dict[str, Any]:
    with engine.connect() as conn:
        state = conn.exec_driver_sql(
            "SELECT state FROM sqlnotify_backfills WHERE consumer = %s", (name,)
        ).scalar()
    return json.loads(state) if state else {}


def test_resumes_the_journal_phase_after_sigkill(
    pg_url: str,
    pg_schema_engine: sa.Engine,
    schema: str,
    items: str,
    notifiers: list[Notifier],
    tmp_path: Any,
) -> None:
    out = os.path.join(tmp_path, "events.jsonl")
    child = Proc.python("-c", STREAM_CHILD, pg_url, _dsn(pg_url), schema, out, env=child_env())
    try:
        child.expect("streaming", timeout=60)
        saved = wait_until(
            lambda: (
                (s := saved_state(pg_schema_engine, "streaming")).get("phase") == "stream" and s
            ),
            timeout=30,
            message="the saved journal phase",
        )
        assert saved["suppress"]  # what the pages showed, kept for the journal phase
        os.kill(child.popen.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        child.kill()
    replica = Replica()
    with open(out) as f:
        replica.replay(f.read().splitlines())
    assert replica.ops == {"snapshot": ROWS}
    again = consumer(pg_schema_engine, "streaming", replica)
    notifiers.append(again)
    again.backfill("item", page_size=500)
    wait_until(lambda: _started(again), timeout=30, message="the resumed consumer")
    wait_until(lambda: backfill_phase(again) == "done", timeout=30, message="backfill")
    assert_exactly_once(replica, pg_schema_engine)
    assert again.health()["backfill"][0]["suppressed"] == len(saved["suppress"])


def saved_rows(engine: sa.Engine, name: str) -> int:
    return int(saved_state(engine, name).get("rows", 0))


def test_resumes_after_sigkill(
    pg_url: str,
    pg_schema_engine: sa.Engine,
    schema: str,
    items: str,
    notifiers: list[Notifier],
    tmp_path: Any,
) -> None:
    out = os.path.join(tmp_path, "events.jsonl")
    stall_at = 3000
    child = Proc.python("-c", CHILD, pg_url, schema, out, str(stall_at), env=child_env())
    try:
        with Writer(_dsn(pg_url), schema, seed=3):
            child.expect(f"delivered {stall_at}", timeout=60)
            wait_until(
                lambda: saved_rows(pg_schema_engine, "killed") >= stall_at,
                timeout=30,
                message="the saved progress",
            )
            os.kill(child.popen.pid, signal.SIGKILL)
            assert child.wait(30) == -signal.SIGKILL
            # More changes while nothing reads, then during the resumed backfill.
            meanwhile = Writer(_dsn(pg_url), schema, seed=4, first_id=10 * ROWS)
            for _ in range(200):
                meanwhile.write()
            meanwhile.conn.close()
            replica = Replica()
            with open(out) as f:
                replica.replay(f.read().splitlines())
            assert replica.ops["snapshot"] == stall_at
            calls: list[int] = []
            again = consumer(pg_schema_engine, "killed", replica)
            notifiers.append(again)
            again.backfill("item", page_size=500, progress=lambda done, _: calls.append(done))
            # The lock of the killed process's session goes with its connection.
            wait_until(lambda: _started(again), timeout=30, message="the resumed consumer")
            wait_until(lambda: backfill_phase(again) == "done", timeout=60, message="backfill")
    finally:
        child.kill()
    assert calls[0] == stall_at + 500  # resumed after the last page saved, not from the start
    # At least once: nothing was delivered past the saved page here, so nothing twice.
    assert_exactly_once(replica, pg_schema_engine)


def _started(notifier: Notifier) -> bool:
    try:
        notifier.start()
    except Exception:
        return False
    return True


def test_composite_key_in_table_order(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    names = ["b", "B", "a", "A", "é", "e", "z", "Z", "ab", "Ab"]
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE pair (k text, m int, v int NOT NULL, PRIMARY KEY (k, m))"
        )
        for name in names:
            for m in range(5):
                conn.exec_driver_sql("INSERT INTO pair VALUES (%s, %s, 0)", (name, m))
    got: list[ChangeEvent] = []
    notifier = Notifier(pg_schema_engine, consumer="pairs", max_queue=10)
    notifiers.append(notifier)
    for op in ("insert", "update"):
        notifier.watch("pair", op, extra_columns=["v"], durable=True)
        notifier.subscribe("pair", op)(got.append)
    order: list[tuple[str, int]] = []
    with pg_schema_engine.connect() as conn:
        order = [tuple(r) for r in conn.exec_driver_sql("SELECT k, m FROM pair ORDER BY k, m")]
    writes = pg_schema_engine.connect()

    def progress(done: int, total: int | None) -> None:
        # One row read already, one not: only the first change comes as an event.
        if done + 14 < len(order):
            first, later = order[done - 1], order[done + 14]
            for key in (first, later):
                writes.exec_driver_sql("UPDATE pair SET v = v + 1 WHERE (k, m) = (%s, %s)", key)
            writes.commit()

    notifier.backfill("pair", page_size=7, progress=progress)
    notifier.start()
    wait_until(lambda: backfill_phase(notifier) == "done", timeout=30, message="backfill")
    writes.close()
    snapshot = [e.id for e in got if e.operation is Operation.SNAPSHOT]
    assert snapshot == order  # the server's order (collation), composite keys as tuples
    with pg_schema_engine.connect() as conn:
        final = {(r[0], r[1]): r[2] for r in conn.exec_driver_sql("SELECT k, m, v FROM pair")}
    wait_until(
        lambda: {e.id: e.extra_columns["v"] for e in got} == final, timeout=10, message="table"
    )
    seen = collections.Counter((e.id, e.extra_columns["v"]) for e in got)
    assert set(seen.values()) == {1}
    assert notifier.health()["backfill"][0]["suppressed"] > 0


def test_progress_health_and_log_per_page(
    pg_schema_engine: sa.Engine,
    items: str,
    notifiers: list[Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    replica = Replica()
    notifier = consumer(pg_schema_engine, "progress", replica)
    notifiers.append(notifier)
    calls: list[tuple[int, int | None, str]] = []

    def progress(done: int, total: int | None) -> None:
        calls.append((done, total, threading.current_thread().name))

    notifier.backfill("item", page_size=3000, progress=progress)
    with caplog.at_level(logging.INFO, logger="sqlnotify"):
        notifier.start()
        wait_until(lambda: len(calls) == 4, timeout=30, message="four pages")
        wait_until(lambda: backfill_phase(notifier) == "done", timeout=30, message="done")
    assert [(d, t) for d, t, _ in calls] == [
        (3000, ROWS),
        (6000, ROWS),
        (9000, ROWS),
        (ROWS, ROWS),
    ]
    assert {name for _, _, name in calls} == {"sqlnotify-dispatcher"}
    pages = [r.getMessage() for r in caplog.records if ": page " in r.getMessage()]
    assert len(pages) == 4 and pages[-1].endswith("every page read")
    health = notifier.health()
    assert health["backfill"] == [
        {
            "table": f"{_schema_of(pg_schema_engine)}.item",
            "phase": "done",
            "rows": ROWS,
            "read": ROWS,
            "pages": 4,
            "total": ROWS,
            "suppressed": 0,
        }
    ]
    assert replica.ops == {"snapshot": ROWS}


def _schema_of(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SELECT current_schema()").scalar())


def test_a_finished_backfill_is_not_redone(
    pg_schema_engine: sa.Engine, items: str, notifiers: list[Notifier]
) -> None:
    first = Replica()
    notifier = consumer(pg_schema_engine, "once", first)
    notifiers.append(notifier)
    notifier.backfill("item").start()
    wait_until(lambda: backfill_phase(notifier) == "done", timeout=30, message="backfill")
    wait_until(lambda: first.ops["snapshot"] == ROWS, timeout=30, message="the rows")
    notifier.stop()
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("UPDATE item SET n = 1 WHERE id = 1")
    second = Replica()
    again = consumer(pg_schema_engine, "once", second)
    notifiers.append(again)
    again.backfill("item").start()
    wait_until(lambda: second.ops["update"] == 1, timeout=30, message="the update")
    assert second.ops == {"update": 1}
    assert "backfill" not in again.health()


def test_without_a_consumer_each_start_backfills(
    pg_schema_engine: sa.Engine, items: str, notifiers: list[Notifier]
) -> None:
    for _ in range(2):
        replica = Replica()
        notifier = consumer(pg_schema_engine, None, replica)
        notifiers.append(notifier)
        notifier.backfill("item", page_size=4000).start()
        wait_until(lambda r=replica: r.ops["snapshot"] == ROWS, timeout=30, message="rows")
        assert_exactly_once(replica, pg_schema_engine)
        notifier.stop()


@pytest.fixture
def plain(pg_schema_engine: sa.Engine, items: str) -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(durable: bool) -> Notifier:
        notifier = Notifier(pg_schema_engine).watch("item", "insert", durable=durable)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.stop()


def test_refusals(plain: Callable[..., Notifier]) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="durable"):
        plain(False).backfill("item")
    with pytest.raises(SQLNotifyConfigurationError, match="no watch for"):
        plain(True).backfill("item", "update")
    with pytest.raises(SQLNotifyConfigurationError, match="page_size"):
        plain(True).backfill("item", page_size=0)
    with pytest.raises(SQLNotifyConfigurationError, match="not a trigger operation"):
        plain(True).watch("item", Operation.SNAPSHOT)
    assert Operation.SNAPSHOT not in Operation.rows()


def test_a_watch_with_a_condition_is_refused_at_start(
    pg_schema_engine: sa.Engine, items: str, notifiers: list[Notifier]
) -> None:
    table = sa.Table("item", sa.MetaData(), autoload_with=pg_schema_engine)
    notifier = Notifier(pg_schema_engine)
    notifiers.append(notifier)
    notifier.watch(table, "insert", durable=True, where=table.c.n > 0).backfill(table)
    with pytest.raises(SQLNotifyConfigurationError, match="where= condition"):
        notifier.start()
    assert not notifier.is_running


def test_two_tables_one_after_the_other(
    pg_schema_engine: sa.Engine, items: str, notifiers: list[Notifier]
) -> None:
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE tag (name text PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO tag VALUES ('red'), ('green'), ('blue')")
    replica = Replica()
    tags: list[ChangeEvent] = []
    notifier = consumer(pg_schema_engine, "both", replica)
    notifiers.append(notifier)
    notifier.watch("tag", "insert", durable=True).subscribe("tag", "insert")(tags.append)
    notifier.backfill("item", page_size=3000).backfill("tag").start()
    wait_until(
        lambda: [b["phase"] for b in notifier.health()["backfill"]] == ["done", "done"],
        timeout=30,
        message="both backfills",
    )
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO tag VALUES ('amber')")
    wait_until(lambda: len(tags) == 4, timeout=10, message="the tags")
    assert [(e.operation, e.id) for e in tags] == [
        (Operation.SNAPSHOT, "blue"),
        (Operation.SNAPSHOT, "green"),
        (Operation.SNAPSHOT, "red"),
        (Operation.INSERT, "amber"),
    ]
    assert_exactly_once(replica, pg_schema_engine)


def test_poll_mode(pg_schema_engine: sa.Engine, items: str, notifiers: list[Notifier]) -> None:
    replica = Replica()
    notifier = consumer(pg_schema_engine, "polled", replica, pg_listen=False, pg_poll_interval=0.05)
    notifiers.append(notifier)
    notifier.backfill("item", page_size=2500).start()
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO item VALUES (%s, 'late', 0)", (ROWS + 1,))
        conn.exec_driver_sql("DELETE FROM item WHERE id = 5")
    assert_exactly_once(replica, pg_schema_engine)
    wait_until(lambda: backfill_phase(notifier) == "done", timeout=10, message="done")
    assert replica.ops["snapshot"] >= ROWS - 1


def test_a_truncate_between_pages(
    pg_schema_engine: sa.Engine, items: str, notifiers: list[Notifier]
) -> None:
    replica = Replica()
    # The listener reads one page ahead of the receivers, no more.
    notifier = consumer(pg_schema_engine, "truncated", replica, max_queue=PAGE)
    notifiers.append(notifier)
    truncates: list[ChangeEvent] = []

    def truncated(event: ChangeEvent) -> None:
        truncates.append(event)
        replica.rows.clear()

    notifier.watch("item", "truncate", durable=True).subscribe("item", "truncate")(truncated)
    writes = pg_schema_engine.connect()

    def progress(done: int, total: int | None) -> None:
        if done == 4 * PAGE:
            # Page 5 is read (queued), page 6 will be read after this commits.
            assert notifier._dispatcher is not None
            wait_until(lambda: notifier._dispatcher.depth >= PAGE, timeout=10, message="page 5")
            writes.exec_driver_sql("TRUNCATE item")
            writes.exec_driver_sql(
                "INSERT INTO item SELECT g, 'again', 100 FROM generate_series(1, 6000) g"
            )
            writes.commit()
        elif done > 4 * PAGE:
            writes.exec_driver_sql("UPDATE item SET n = n + 1 WHERE id IN (10, 5990)")
            writes.commit()

    notifier.backfill("item", page_size=PAGE, progress=progress)
    notifier.start()
    wait_until(lambda: backfill_phase(notifier) == "done", timeout=30, message="backfill")
    writes.close()
    assert_exactly_once(replica, pg_schema_engine)
    assert len(truncates) == 1
    # Pages 1-5 before the TRUNCATE, the others after it (it came before their
    # rows); the rows inserted after it under keys of pages 1-5 come as changes.
    assert (replica.ops["snapshot"], replica.ops["insert"]) == (6000, 2500)


def test_a_table_without_a_primary_key_is_refused_at_start(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE loose (id int NOT NULL, note text)")
    notifier = Notifier(pg_schema_engine, consumer="loose")
    notifiers.append(notifier)
    notifier.watch("loose", "insert", primary_keys=["id"], durable=True).backfill("loose")
    with pytest.raises(SQLNotifyConfigurationError, match="needs the watch's key columns"):
        notifier.start()
    assert not notifier.is_running


def test_snapshot_events_are_typed_like_the_watch_events(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    import datetime as dt
    import decimal
    import uuid

    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE typed (id int PRIMARY KEY, price numeric(10, 2), at timestamptz,"
            " tag uuid, data jsonb, raw bytea)"
        )
        conn.exec_driver_sql(
            "INSERT INTO typed VALUES (1, 12.50, '2026-01-02T03:04:05+00', "
            " 'a8098c1a-f86e-11da-bd1a-00112444be1e', '{\"a\": [1, 2]}', '\\x0102')"
        )
    table = sa.Table("typed", sa.MetaData(), autoload_with=pg_schema_engine)
    got: list[ChangeEvent] = []
    notifier = Notifier(pg_schema_engine, consumer="typed")
    notifiers.append(notifier)
    columns = ["price", "at", "tag", "data", "raw"]
    notifier.watch(table, "insert", extra_columns=columns, durable=True)
    notifier.subscribe(table, "insert")(got.append)
    notifier.backfill(table).start()
    wait_until(lambda: len(got) == 1, timeout=10, message="the snapshot")
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO typed SELECT 2, price, at, tag, data, raw FROM typed")
    wait_until(lambda: len(got) == 2, timeout=10, message="the insert")
    snapshot, insert = got
    assert (snapshot.operation, insert.operation) == (Operation.SNAPSHOT, Operation.INSERT)
    assert (
        dict(snapshot.extra_columns)
        == dict(insert.extra_columns)
        == {
            "price": decimal.Decimal("12.50"),
            "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
            "tag": uuid.UUID("a8098c1a-f86e-11da-bd1a-00112444be1e"),
            "data": {"a": [1, 2]},
            "raw": b"\x01\x02",
        }
    )
    assert snapshot.timestamp is not None and snapshot.position is not None
    assert snapshot.to_dict()["operation"] == "snapshot"


@pytest.mark.parametrize(
    ("key_type", "key_sql"),
    [
        ("bytea", "decode(lpad(to_hex(g), 4, '0'), 'hex')"),
        ("uuid", "md5(g::text)::uuid"),
        ("numeric(8, 2)", "g / 4.0"),
        ("timestamptz", "'2026-01-01T00:00:00+00'::timestamptz + g * interval '1 minute'"),
    ],
)
def test_keys_of_other_types(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier], key_type: str, key_sql: str
) -> None:
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE keyed (k {key_type} PRIMARY KEY, v int NOT NULL)")
        conn.exec_driver_sql(f"INSERT INTO keyed SELECT {key_sql}, 0 FROM generate_series(1, 60) g")
        order = [r[0] for r in conn.exec_driver_sql("SELECT k FROM keyed ORDER BY k")]
    table = sa.Table("keyed", sa.MetaData(), autoload_with=pg_schema_engine)
    got: list[ChangeEvent] = []
    notifier = Notifier(pg_schema_engine, consumer="keyed", max_queue=10)
    notifiers.append(notifier)
    for op in ("insert", "update"):
        notifier.watch(table, op, extra_columns=["v"], durable=True)
        notifier.subscribe(table, op)(got.append)
    writes = pg_schema_engine.connect()

    def progress(done: int, total: int | None) -> None:
        # A row two pages on (not read yet) and one delivered: one event only.
        if done + 14 < len(order):
            for key in (order[done + 14], order[done - 1]):
                writes.execute(sa.update(table).where(table.c.k == key).values(v=table.c.v + 1))
            writes.commit()

    notifier.backfill(table, page_size=7, progress=progress).start()
    wait_until(lambda: backfill_phase(notifier) == "done", timeout=30, message="backfill")
    writes.close()
    with pg_schema_engine.connect() as conn:
        final = {
            bytes(k) if isinstance(k, memoryview) else k: v
            for k, v in conn.execute(sa.select(table.c.k, table.c.v))
        }
    wait_until(
        lambda: {e.id: e.extra_columns["v"] for e in got} == final, timeout=10, message="table"
    )
    assert collections.Counter((e.id, e.extra_columns["v"]) for e in got).most_common(1)[0][1] == 1
    assert notifier.health()["backfill"][0]["suppressed"] > 0
