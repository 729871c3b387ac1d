"""One PostgreSQL database shared by several applications, versions and sessions.

Long readers and writers, applications with different specs on one table, a
rolling deploy: start() stays bounded, nobody's trigger is rewritten or
removed while it is in use.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from support.pg import TIMEOUT, execute, make_notifier, scalar, triggers
from support.watching import watched

from sqlnotify import Notifier, SQLNotifyLockTimeoutError
from sqlnotify.testing import EventRecorder, wait_until


@pytest.fixture
def orders(pg_engine: sa.Engine, schema: str) -> str:
    execute(
        pg_engine,
        f"CREATE TABLE \"{schema}\".orders (id serial PRIMARY KEY, email text DEFAULT 'a@x',"
        " total int DEFAULT 7, status text DEFAULT 'new')",
    )
    return f"{schema}.orders"


def insert(engine: sa.Engine, orders: str) -> None:
    schema, table = orders.split(".")
    execute(engine, f'INSERT INTO "{schema}"."{table}" DEFAULT VALUES')


def trigger_oids(engine: sa.Engine, schema: str) -> dict[str, tuple[int, int]]:
    """Trigger name -> (trigger oid, function oid): both change when DDL recreates them."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.tgname, t.oid::bigint, t.tgfoid::bigint FROM pg_trigger t"
                " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid ="
                " c.relnamespace WHERE n.nspname = :s AND NOT t.tgisinternal"
            ),
            {"s": schema},
        )
        return {name: (toid, foid) for name, toid, foid in rows}


def app(notifiers: list[Notifier], engine: sa.Engine, orders: str, columns: list[str], **kw: Any):
    """A notifier watching INSERT with ``columns``, recording its events."""
    return watched(notifiers, engine, orders, options=kw, start=False, extra_columns=columns)


def test_reader_never_blocks_start_and_stays_untouched(
    pg_engine: sa.Engine, schema: str, orders: str, notifiers: list[Notifier]
) -> None:
    old, _ = app(notifiers, pg_engine, orders, ["email"])
    old.install()  # another watch's trigger: unused once `old` is gone
    old.stop()
    reader = pg_engine.connect()
    try:
        # The ORM pattern: a read leaves its transaction open.
        assert reader.execute(sa.text(f"SELECT count(*) FROM {orders}")).scalar() == 0
        began = reader.execute(sa.text("SELECT now()")).scalar()  # its transaction's start
        fresh, rec = app(
            notifiers,
            pg_engine,
            orders,
            ["total"],
            cleanup_on_start=True,
            cleanup_grace=0,
            lock_timeout=0.1,
        )
        fresh.start()  # returns: CREATE TRIGGER does not wait for readers
        insert(pg_engine, orders)
        assert rec.wait_for(1, TIMEOUT)[0].extra_columns == {"total": 7}
        # The stale trigger waits for the reader (its DROP needs the table alone).
        assert len(triggers(pg_engine, schema, "orders")) == 2
        assert fresh._owners is not None and not fresh._owners.cleaned
        # The reader's transaction is the same one, untouched, and still reads.
        assert reader.execute(sa.text(f"SELECT count(*) FROM {orders}")).scalar() == 1
        assert reader.execute(sa.text("SELECT now()")).scalar() == began
    finally:
        reader.rollback()
        reader.close()
    wait_until(
        lambda: len(triggers(pg_engine, schema, "orders")) == 1, TIMEOUT, "the deferred cleanup"
    )
    assert triggers(pg_engine, schema, "orders") == [fresh.watches[0].channel]
    insert(pg_engine, orders)
    assert rec.wait_for(2, TIMEOUT)[1].extra_columns == {"total": 7}


def test_open_write_transaction_fails_start_in_bounds_naming_it(
    pg_engine: sa.Engine, pg_url: str, schema: str, orders: str, notifiers: list[Notifier]
) -> None:
    lock_timeout = 0.2
    writer = pg_engine.connect()
    stop = threading.Event()
    done: list[int] = []
    errors: list[BaseException] = []

    def workload() -> None:
        # Each write may wait for its lock at most a few times our lock_timeout:
        # longer (a DDL statement queued without bound) makes it fail.
        engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"SET lock_timeout = {int(lock_timeout * 5000)}")
                conn.commit()
                while not stop.is_set():
                    conn.execute(sa.text(f"INSERT INTO {orders} DEFAULT VALUES"))
                    conn.commit()
                    done.append(1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    thread = threading.Thread(target=workload, name="test-writer")
    try:
        writer.execute(sa.text(f"INSERT INTO {orders} DEFAULT VALUES"))  # left open
        pid = writer.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        thread.start()
        wait_until(lambda: len(done) > 10, TIMEOUT, "the writer workload to run")
        n, _ = app(
            notifiers, pg_engine, orders, ["email"], lock_timeout=lock_timeout, install_timeout=2
        )
        with pytest.raises(SQLNotifyLockTimeoutError) as caught:
            n.start()
        before = len(done)
        wait_until(lambda: len(done) > before + 10, TIMEOUT, "the writers to go on")
    finally:
        stop.set()
        thread.join(TIMEOUT)
        writer.rollback()
        writer.close()
    assert not errors, errors  # no write waited past its own lock_timeout
    assert f"pid {pid} " in str(caught.value)
    assert "idle in transaction" in str(caught.value)
    assert [b["pid"] for b in caught.value.blockers] == [pid]
    assert not n.is_running
    assert triggers(pg_engine, schema, "orders") == []
    # Once the transaction is gone, the same start succeeds.
    n.start()
    assert [s.state for s in n.install_states] == ["installed"]


def test_three_applications_with_different_specs_and_cleanup(
    pg_engine: sa.Engine, schema: str, orders: str, notifiers: list[Notifier]
) -> None:
    specs = [["email"], ["total"], ["email", "status"]]
    apps = [
        app(notifiers, pg_engine, orders, cols, cleanup_on_start=True, cleanup_grace=0)
        for cols in specs
    ]
    for n, _ in apps:
        n.start()
    for n, _ in apps:
        wait_until(lambda n=n: n._owners.cleaned, TIMEOUT, "each deferred cleanup")
    assert len(triggers(pg_engine, schema, "orders")) == 3
    insert(pg_engine, orders)
    expected = [{"email": "a@x"}, {"total": 7}, {"email": "a@x", "status": "new"}]
    for (_, rec), want in zip(apps, expected, strict=True):
        assert dict(rec.wait_for(1, TIMEOUT)[0].extra_columns) == want
    # status shows each trigger's spec and its one live user.
    rows = [r for r in apps[0][0].dialect.status() if r["schema"] == schema]
    assert sorted(r["spec"]["columns"] for r in rows) == sorted(specs)
    for row in rows:
        assert row["listening"] and [u["live"] for u in row["users"]] == [True]
    # One application stops: with no grace period, the next cleanup removes
    # its trigger and only its.
    stopped, _ = apps[1]
    stopped.stop()
    assert apps[0][0].cleanup() == 1
    assert stopped.watches[0].channel not in triggers(pg_engine, schema, "orders")
    insert(pg_engine, orders)
    for (_, rec), want in zip([apps[0], apps[2]], [expected[0], expected[2]], strict=True):
        assert dict(rec.wait_for(2, TIMEOUT)[1].extra_columns) == want


def test_rolling_deploy_does_no_ddl_after_the_first_round(
    pg_engine: sa.Engine, schema: str, orders: str, notifiers: list[Notifier]
) -> None:
    versions = {"v1": ["email"], "v2": ["email", "total"]}

    def start(version: str) -> tuple[Notifier, EventRecorder]:
        n, rec = app(notifiers, pg_engine, orders, versions[version], cleanup_on_start=True)
        n.start()
        return n, rec

    # Two instances of v1 run; the deploy replaces them by v2 one at a time,
    # then rolls back, then forward again.
    running = [start("v1"), start("v1")]
    oids: dict[str, tuple[int, int]] | None = None
    for target in ("v2", "v1", "v2"):
        for i in range(len(running)):
            running[i][0].stop()
            running[i] = start(target)
            for n, _ in running:
                wait_until(lambda n=n: n._owners.cleaned, TIMEOUT, "the deferred cleanup")
        if oids is None:
            oids = trigger_oids(pg_engine, schema)
            assert len(oids) == 2
        else:
            assert trigger_oids(pg_engine, schema) == oids, "DDL after the first round"
        for n, _ in running:
            assert {s.state for s in n.install_states} == {"unchanged"} or target == "v2"
    insert(pg_engine, orders)
    for _, rec in running:
        assert dict(rec.wait_for(1, TIMEOUT)[0].extra_columns) == {"email": "a@x", "total": 7}


def test_durable_trigger_stays_while_its_journal_rows_are_kept(
    pg_engine: sa.Engine, schema: str, orders: str, notifiers: list[Notifier]
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(orders, "insert", durable=True)
    n.start()
    insert(pg_engine, orders)
    n.stop()
    channel = n.watches[0].channel
    journal = n.dialect.journal_schema_name()  # type: ignore[attr-defined]
    rows = f'FROM "{journal}".sqlnotify_journal WHERE channel = :c'
    assert scalar(pg_engine, f"SELECT count(*) {rows}", {"c": channel}) == 1
    other = make_notifier(notifiers, pg_engine, cleanup_grace=0)
    other.watch(orders, "update")
    assert other.cleanup() == 0
    assert triggers(pg_engine, schema, "orders") == [channel]
    execute(pg_engine, f"DELETE {rows}", {"c": channel})
    assert other.cleanup() == 1
    assert triggers(pg_engine, schema, "orders") == []
