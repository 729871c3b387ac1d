"""The binlog source on a private MariaDB with the binary log on.

The server (``tests/support/mariadbserver.py``, the ``binlog_server``
fixture) is private to the tests: they change its global settings (and set
them back) and purge its logs.  Every test runs again on a private MySQL
(``tests/support/mysqlserver.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from support.env import need_module
from support.faults import GapRecorder, gaps_fixture  # noqa: F401
from support.mariadbserver import ThrowawayMariaDB
from support.mysqlserver import ThrowawayMySQL

from sqlnotify import Notifier, Operation
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder, wait_until

need_module("pymysqlreplication")

TIMEOUT = 20.0
#: The server threads streaming the binary log to a replica.
DUMPS_SQL = "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"


@pytest.fixture
def server(
    each_binlog_server: ThrowawayMariaDB | ThrowawayMySQL,
) -> ThrowawayMariaDB | ThrowawayMySQL:
    """The private MariaDB, then the private MySQL: every test here runs on both."""
    return each_binlog_server


@pytest.fixture
def engine(each_binlog_engine: sa.Engine) -> sa.Engine:
    return each_binlog_engine


def orders(engine: sa.Engine) -> sa.Table:
    table = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(20)),
        sa.Column("total", sa.Numeric(12, 2)),
        sa.Column("at", sa.DateTime),
        sa.Column("blob", sa.LargeBinary(16)),
        sa.Column("doc", sa.JSON),
    )
    table.metadata.create_all(engine)
    return table


def binlog(engine: sa.Engine, **kw: Any) -> Notifier:
    return Notifier(engine, mysql_source="binlog", **kw)


def test_insert_update_delete_arrive_typed(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = orders(engine)
    extra = ["status", "total", "at", "blob", "doc"]
    n = binlog(engine)
    n.watch(table, "insert", extra_columns=extra)
    n.watch(table, "update", extra_columns=["status"], include_old=True)
    n.watch(table, "delete")
    notifiers.append(n)
    rec = EventRecorder()
    for op in ("insert", "update", "delete"):
        n.subscribe(table, op)(rec)
    n.start()
    row = {
        "id": 1,
        "status": "new",
        "total": Decimal("12.50"),
        "at": dt.datetime(2024, 2, 29, 13, 14, 15),
        "blob": b"\x00\xff'\\",
        "doc": {"a": [1, "b"]},
    }
    with engine.begin() as conn:
        conn.execute(table.insert(), [row])
    with engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == 1).values(status="paid", total=1))
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id == 1))
    ins, upd, dele = rec.wait_for(3, TIMEOUT)
    assert ins.operation is Operation.INSERT and dict(ins.row) == row
    assert upd.operation is Operation.UPDATE and dict(upd.row) == {"id": 1, "status": "paid"}
    assert set(upd.changed_columns) == {"status"}
    assert dict(upd.old or {}) == {"id": 1, "status": "new"}
    assert dele.operation is Operation.DELETE and dele.id == 1
    # The writers' database holds no sqlnotify trigger.
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
        ).scalar_one()
    assert found == 0


def test_simple_columns_are_decoded_from_the_event_bytes(
    engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    # Integers (signed and unsigned, at their limits), floats and VARCHARs (short
    # and long, multi-byte text) are decoded by the source itself, not the reader.
    from sqlalchemy.dialects import mysql

    table = sa.Table(
        "simple",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("t", mysql.TINYINT),
        sa.Column("tu", mysql.TINYINT(unsigned=True)),
        sa.Column("s", sa.SmallInteger),
        sa.Column("iu", mysql.INTEGER(unsigned=True)),
        sa.Column("b", sa.BigInteger),
        sa.Column("bu", mysql.BIGINT(unsigned=True)),
        sa.Column("f", mysql.FLOAT),
        sa.Column("d", mysql.DOUBLE(asdecimal=False)),
        sa.Column("name", sa.String(20)),
        sa.Column("note", sa.String(400)),
    )
    table.metadata.create_all(engine)
    extra = [c.name for c in table.columns if c.name != "id"]
    n = binlog(engine)
    n.watch(table, "insert", extra_columns=extra)
    n.watch(table, "update", extra_columns=["name", "note"], include_old=True)
    n.watch(table, "delete", extra_columns=["name"])
    notifiers.append(n)
    rec = EventRecorder()
    for op in ("insert", "update", "delete"):
        n.subscribe(table, op)(rec)
    n.start()
    full = {
        "id": 1,
        "t": -128,
        "tu": 255,
        "s": -32768,
        "iu": 4294967295,
        "b": -(2**63),
        "bu": 2**64 - 1,
        "f": 1.5,
        "d": -2.25e300,
        "name": "caf\u00e9 \U0001f600",
        "note": "\u00e9" * 300,
    }
    empty = {c: None for c in extra} | {"id": 2, "name": ""}
    with engine.begin() as conn:
        # The reader maps the table and decodes the event after the map; the rest are
        # the source's.
        conn.execute(table.insert(), [{"id": 3}])
    with engine.begin() as conn:
        conn.execute(table.insert(), [full, empty])  # one statement: one event of two rows
    with engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == 2).values(name="x", note="y" * 256))
    with engine.begin() as conn:
        conn.execute(table.delete())
    events = rec.wait_for(7, TIMEOUT)
    assert [dict(e.row) for e in events[1:3]] == [full, empty]
    upd = events[3]
    assert dict(upd.row) == {"id": 2, "name": "x", "note": "y" * 256}
    assert set(upd.changed_columns) == {"name", "note"}
    assert dict(upd.old or {}) == {"id": 2, "name": "", "note": None}
    assert [(e.operation, e.id, e.row["name"]) for e in events[4:]] == [
        (Operation.DELETE, 1, full["name"]),
        (Operation.DELETE, 2, "x"),
        (Operation.DELETE, 3, None),
    ]
    source = n._intake.source if n._intake is not None else None
    # Four row events (the second INSERT's two rows are one): the first is the reader's.
    assert getattr(source, "decoded", None) == {"from_bytes": 3, "by_reader": 1}


def test_notify_travels_through_the_binlog(engine: sa.Engine, notifiers: list[Notifier]) -> None:
    table = orders(engine)
    n = binlog(engine).watch(table, "insert")
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    n.notify(table, "insert", {"id": 99})
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 8}])
    assert [e.id for e in rec.wait_for(2, TIMEOUT)] == [99, 8]


def test_other_tables_are_skipped_and_a_changed_table_is_mapped_again(
    engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    table = orders(engine)
    other = sa.Table(
        "other",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("note", sa.String(20)),
    )
    other.metadata.create_all(engine)
    n = binlog(engine).watch(table, "insert", extra_columns=["status"])
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    with engine.begin() as conn:  # rows of both tables in one transaction
        conn.execute(other.insert(), [{"id": 1, "note": "a"}])
        conn.execute(table.insert(), [{"id": 1, "status": "one"}])
        conn.execute(other.insert(), [{"id": 2, "note": "b"}])
    for i in range(3, 6):  # transactions of the other table only
        with engine.begin() as conn:
            conn.execute(other.insert(), [{"id": i, "note": "c"}])
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 2, "status": "two"}])
    # The watched table changes: its rows then come in the new layout.
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE orders ADD COLUMN `extra` INT FIRST")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO orders (`extra`, `id`, `status`) VALUES (5, 3, 'three')")
    got = rec.wait_for(3, TIMEOUT)
    assert [(e.id, e.row["status"]) for e in got] == [(1, "one"), (2, "two"), (3, "three")]


def test_named_consumer_resumes_nothing_lost_nothing_twice(
    engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    table = orders(engine)
    seen: list[int] = []

    def run(ids: range, stop_after: int) -> None:
        n = binlog(engine, consumer="c1").watch(table, "insert")
        rec = EventRecorder()
        n.subscribe(table, "insert")(rec)
        n.start()
        try:
            with engine.begin() as conn:
                conn.execute(table.insert(), [{"id": i} for i in ids])
            seen.extend(e.id for e in rec.wait_for(stop_after, TIMEOUT))
        finally:
            n.stop()

    run(range(1, 11), 10)
    # Written while no consumer runs: the next run delivers them first.
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i} for i in range(11, 21)])
    run(range(21, 31), 20)
    assert seen == list(range(1, 31))


def saved_file(engine: sa.Engine, consumer: str) -> str:
    with engine.connect() as conn:
        text = conn.exec_driver_sql(
            "SELECT `position` FROM sqlnotify_binlog_consumers WHERE `name` = %s", (consumer,)
        ).scalar_one()
    return str(json.loads(text)["file"])


def test_purged_binlog_is_a_gap(
    server: ThrowawayMariaDB | ThrowawayMySQL,
    engine: sa.Engine,
    notifiers: list[Notifier],
    gaps: GapRecorder,
) -> None:
    table = orders(engine)
    first = binlog(engine, consumer="late").watch(table, "insert")
    first.start()
    first.stop()
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 1}])
    saved = saved_file(engine, "late")
    admin = server.admin()

    def purged() -> bool:
        # A log still read by a dump thread, or not yet checkpointed, is kept.
        with admin.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW BINARY LOGS")
            newest = cur.fetchall()[-1][0]
            cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
            cur.execute("SHOW BINARY LOGS")
            return saved not in [row[0] for row in cur.fetchall()]

    try:
        wait_until(purged, timeout=TIMEOUT, message="the consumer's binlog purged")
    finally:
        admin.close()
    n = binlog(engine, consumer="late").watch(table, "insert")
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    wait_until(lambda: len(gaps) >= 1, timeout=TIMEOUT, message="a gap")
    assert gaps.gaps[0]["reason"] == "retention"
    # Reading goes on from the oldest log left.
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 2}])
    assert [e.id for e in rec.wait_for(1, TIMEOUT)] == [2]


def test_missing_setting_is_named(
    server: ThrowawayMariaDB | ThrowawayMySQL, engine: sa.Engine
) -> None:
    table = orders(engine)
    admin = server.admin()
    try:
        with admin.cursor() as cur:
            cur.execute("SET GLOBAL binlog_format = 'STATEMENT'")
            cur.execute("SET GLOBAL binlog_row_image = 'MINIMAL'")
            cur.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")  # MySQL's default
        n = binlog(engine).watch(table, "insert")
        with pytest.raises(SQLNotifyConfigurationError) as info:
            n.start()
        assert "binlog_format is STATEMENT, not ROW" in str(info.value)
        assert "binlog_row_image is MINIMAL, not FULL" in str(info.value)
        assert "binlog_row_metadata is MINIMAL, not FULL" in str(info.value)
        # "auto" falls back to the trigger source.
        auto = Notifier(engine, mysql_source="auto").watch(table, "insert")
        rec = EventRecorder()
        auto.subscribe(table, "insert")(rec)
        with auto:
            with engine.begin() as conn:
                conn.execute(table.insert(), [{"id": 1}])
            assert [e.id for e in rec.wait_for(1, TIMEOUT)] == [1]
            with engine.connect() as conn:
                found = conn.exec_driver_sql("SELECT COUNT(*) FROM sqlnotify_log").scalar_one()
            assert found == 1  # the trigger wrote it
    finally:
        with admin.cursor() as cur:
            cur.execute("SET GLOBAL binlog_format = 'ROW'")
            cur.execute("SET GLOBAL binlog_row_image = 'FULL'")
            cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
        admin.close()


def test_missing_privilege_is_named(
    server: ThrowawayMariaDB | ThrowawayMySQL, engine: sa.Engine
) -> None:
    """A user with a password: on MySQL, ``caching_sha2_password`` (over TLS, PyMySQL's
    preference where the server offers it, no RSA exchange)."""
    table = orders(engine)
    db = engine.url.database
    admin = server.admin()
    try:
        with admin.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS 'plain'@'127.0.0.1' IDENTIFIED BY 'plain-pw'")
            cur.execute(f"GRANT ALL ON `{db}`.* TO 'plain'@'127.0.0.1'")
        plain = sa.create_engine(engine.url.set(username="plain", password="plain-pw"))
        n = binlog(plain).watch(table, "insert")
        with pytest.raises(SQLNotifyConfigurationError, match="REPLICATION SLAVE"):
            n.start()
        plain.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER IF EXISTS 'plain'@'127.0.0.1'")
        admin.close()


def test_compressed_transactions_are_named(
    mysql_server: ThrowawayMySQL,
    mysql_server_engine: sa.Engine,
    notifiers: list[Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MySQL's ``binlog_transaction_compression``: refused when ON for the server; a
    writer's session that turns it on has its transaction named as lost, never dropped
    unsaid, and what follows arrives."""
    engine = mysql_server_engine
    table = orders(engine)
    admin = mysql_server.admin()
    try:
        with admin.cursor() as cur:
            cur.execute("SET GLOBAL binlog_transaction_compression = ON")
        with pytest.raises(SQLNotifyConfigurationError, match="binlog_transaction_compression"):
            binlog(engine).watch(table, "insert").start()
    finally:
        with admin.cursor() as cur:
            cur.execute("SET GLOBAL binlog_transaction_compression = OFF")
        admin.close()
    n = binlog(engine).watch(table, "insert")
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    compressing = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    with compressing.connect() as conn:
        conn.exec_driver_sql("SET SESSION binlog_transaction_compression = ON")
        conn.execute(table.insert(), [{"id": 1}])
        conn.commit()
    compressing.dispose()
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 2}])
    assert [e.id for e in rec.wait_for(1, TIMEOUT)] == [2]
    wait_until(
        lambda: "a compressed transaction" in caplog.text, TIMEOUT, "the lost transaction named"
    )


def dump_threads(admin: Any) -> list[int]:
    with admin.cursor() as cur:
        cur.execute(DUMPS_SQL)
        return [int(row[0]) for row in cur.fetchall()]


def test_killed_connection_loses_nothing(
    server: ThrowawayMariaDB | ThrowawayMySQL, engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    """The listener's stream is killed 100 times during 10,000 writes (one commit each)."""
    table = orders(engine)
    n = binlog(engine, consumer="k").watch(table, "insert")
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    admin = server.admin()
    # Streams of notifiers stopped earlier may linger a moment: never ours.
    gone = set(dump_threads(admin))
    n.start()
    total, every = 10_000, 100
    killed = 0

    def listener_stream() -> list[int]:
        return [t for t in dump_threads(admin) if t not in gone]

    try:
        with engine.connect() as conn:
            for i in range(1, total + 1):
                conn.execute(table.insert(), [{"id": i}])
                conn.commit()
                if i % every == 0:
                    # The stream is back (reconnected) before it is killed again.
                    (thread_id,) = wait_until(listener_stream, TIMEOUT, "the listener's stream")
                    with admin.cursor() as cur:
                        cur.execute(f"KILL {thread_id}")
                    gone.add(thread_id)
                    killed += 1
    finally:
        admin.close()
    events = rec.wait_for(total, 120)
    assert killed == total // every
    assert [e.id for e in events] == list(range(1, total + 1))  # in order, once each


def test_a_row_event_over_16_mib_arrives_whole(
    server: ThrowawayMariaDB | ThrowawayMySQL, engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    # The protocol splits a payload of 16 MiB or more into packets: the source joins them.
    from sqlalchemy.dialects import mysql

    with server.admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_allowed_packet")
        (before,) = cur.fetchone()
        cur.execute("SET GLOBAL max_allowed_packet = 67108864")
    writer = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)  # sees the new limit
    try:
        table = sa.Table(
            "big",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("data", mysql.LONGBLOB),
        )
        table.metadata.create_all(engine)
        n = binlog(engine)
        n.watch(table, "insert", extra_columns=["data"])
        notifiers.append(n)
        rec = EventRecorder()
        n.subscribe(table, "insert")(rec)
        n.start()
        blob = bytes(range(256)) * (17 * 4096)  # 17 MiB
        with writer.begin() as conn:
            conn.execute(table.insert().values(id=1, data=blob))
            conn.execute(table.insert().values(id=2, data=b"small"))
        first, second = rec.wait_for(2, TIMEOUT)
        assert (first.id, len(first.row["data"]), second.row["data"]) == (1, len(blob), b"small")
        assert first.row["data"] == blob
    finally:
        writer.dispose()
        with server.admin() as conn, conn.cursor() as cur:
            cur.execute(f"SET GLOBAL max_allowed_packet = {int(before)}")
