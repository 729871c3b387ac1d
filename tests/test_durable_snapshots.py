"""Durable watches under production conditions: a transaction held open in
another database, forged notifications, roles with few privileges, a
consumers table of the earlier format, and ``status``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from faults import insert, make_table

from sqlnotify import Notifier, SQLNotifyException
from sqlnotify.dialects.postgresql import listener_dsn
from sqlnotify.dialects.postgresql.journal import SnapshotPosition, parse_snapshot
from sqlnotify.testing import EventRecorder, wait_until


@pytest.fixture
def long_transaction(pg_url: str) -> Iterator[int]:
    """A writing transaction left open in the ``postgres`` database for the whole test."""
    dsn = listener_dsn(sa.make_url(pg_url))
    dsn["dbname"] = "postgres"
    conn = psycopg2.connect(**dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_current_xact_id()::text")
        xid = int(cur.fetchone()[0])
        yield xid
        # It was open throughout: every assertion above ran under it.
        cur.execute("SELECT pg_current_xact_id()::text")
        assert int(cur.fetchone()[0]) == xid
        conn.rollback()
    finally:
        conn.close()


@pytest.fixture
def make_role(pg_engine: sa.Engine) -> Iterator[Callable[..., str]]:
    """Creates login roles with unique names; drops them (and their grants) after."""
    made: list[str] = []

    def make(*grants: str) -> str:
        name = f"sqlnotify_r_{uuid.uuid4().hex[:10]}"
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
            for grant in grants:
                conn.exec_driver_sql(grant.format(role=f'"{name}"'))
        made.append(name)
        return name

    yield make
    with pg_engine.begin() as conn:
        for name in made:
            conn.exec_driver_sql(f'DROP OWNED BY "{name}"')
            conn.exec_driver_sql(f'DROP ROLE "{name}"')


def engine_as(pg_url: str, role: str, schema: str) -> sa.Engine:
    url = sa.make_url(pg_url).set(username=role)
    return sa.create_engine(url.update_query_dict({"options": f"-csearch_path={schema}"}))


def test_long_transaction_elsewhere_delays_nothing(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier], long_transaction: int
) -> None:
    table = make_table(pg_schema_engine)

    def make() -> tuple[Notifier, EventRecorder]:
        n = Notifier(pg_schema_engine, consumer="c").watch(table, "insert", durable=True)
        notifiers.append(n)
        rec = EventRecorder()
        n.subscribe(table, "insert")(rec)
        return n, rec

    n1, rec1 = make()
    n1.start()
    insert(pg_schema_engine, table, [1, 2, 3])
    assert [e.id for e in rec1.wait_for(3, timeout=10)] == [1, 2, 3]
    n1.stop()
    store = n1.dialect.journal()
    loaded = store.load("c")
    assert loaded is not None
    # The saved position passed rows 1 to 3 with the other transaction in progress.
    assert long_transaction in parse_snapshot(loaded[0].snapshot)[2]
    store.close()
    for i in (4, 5, 6):  # written while the consumer is down
        insert(pg_schema_engine, table, [i])
    n2, rec2 = make()
    n2.start()
    assert sorted(e.id for e in rec2.wait_for(3, timeout=10)) == [4, 5, 6]
    insert(pg_schema_engine, table, [7])
    wait_until(lambda: 7 in {e.id for e in list(rec2.events)}, timeout=10, message="row 7")
    # A clean stop: nothing handled before it comes again.
    assert [e.id for e in rec2.events] == [4, 5, 6, 7]


def test_commit_order_against_id_order_in_one_window(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier], long_transaction: int
) -> None:
    """A row written early and committed late comes once, after the rows before it."""
    table = make_table(pg_schema_engine)
    n = Notifier(pg_schema_engine, consumer="w").watch(table, "insert", durable=True)
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    with pg_schema_engine.connect() as late:
        tx = late.begin()
        late.execute(table.insert(), {"id": 1, "note": "late"})
        insert(pg_schema_engine, table, [2])
        rec.wait_for(1, timeout=10)
        tx.commit()
    insert(pg_schema_engine, table, [3])
    wait_until(lambda: len(rec.events) >= 3, timeout=10, message="three rows")
    assert [e.id for e in rec.events] == [2, 1, 3]


def test_forged_notifications_are_never_delivered_nor_hide_rows(
    pg_url: str,
    schema: str,
    pg_schema_engine: sa.Engine,
    notifiers: list[Notifier],
    make_role: Callable[..., str],
) -> None:
    table = make_table(pg_schema_engine)
    n = Notifier(pg_schema_engine).watch(table, "insert", extra_columns=["note"], durable=True)
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    channel = n.watches[0].channel
    intruder = make_role()  # CONNECT (granted to PUBLIC) and nothing else
    outsider = engine_as(pg_url, intruder, schema)
    try:
        with pg_schema_engine.connect() as real:
            tx = real.begin()
            real.execute(table.insert(), {"id": 5, "note": "real"})
            pos, xid = real.exec_driver_sql(
                "SELECT id, xid::text FROM sqlnotify_journal ORDER BY id DESC LIMIT 1"
            ).one()
            forged = [
                # The uncommitted row's own journal key, with other values.
                {"pos": pos, "xid": int(xid), "ts": 1.0, "row": {"id": 5, "note": "forged"}},
                {"pos": pos + 1, "xid": int(xid), "ts": 1.0, "row": {"id": -1, "note": "f"}},
                {"wake": True},
                {"ts": 1.0, "row": {"id": -2, "note": "f"}},
            ]
            with outsider.begin() as conn:
                for body in forged:
                    conn.execute(
                        sa.text("SELECT pg_notify(:c, :p)"),
                        {"c": channel, "p": json.dumps(body, separators=(",", ":"))},
                    )
            wait_until(lambda: n.stats.dropped >= 3, timeout=10, message="the forgeries")
            tx.commit()
        insert(pg_schema_engine, table, [6])
        wait_until(lambda: len(rec.events) >= 2, timeout=10, message="the real rows")
    finally:
        outsider.dispose()
    assert [(e.id, e.extra_columns["note"]) for e in rec.events] == [(5, "real"), (6, "x")]
    assert n.stats.dropped == 3  # every forgery but the exact wake-up is counted


def test_writer_with_only_dml_privileges_writes_a_durably_watched_table(
    pg_url: str,
    schema: str,
    pg_schema_engine: sa.Engine,
    notifiers: list[Notifier],
    make_role: Callable[..., str],
) -> None:
    table = make_table(pg_schema_engine)
    n = Notifier(pg_schema_engine)
    for op in ("insert", "update", "delete"):
        n.watch(table, op, durable=True)
    notifiers.append(n)
    rec = EventRecorder()
    for op in ("insert", "update", "delete"):
        n.subscribe(table, op)(rec)
    n.start()
    writer = make_role(
        f'GRANT USAGE ON SCHEMA "{schema}" TO {{role}}',
        f'GRANT INSERT, UPDATE, DELETE ON "{schema}".item TO {{role}}',
    )
    engine = engine_as(pg_url, writer, schema)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO item (id, note) VALUES (1, 'a')")
            conn.exec_driver_sql("UPDATE item SET note = 'b'")
            conn.exec_driver_sql("DELETE FROM item")
            denied = conn.exec_driver_sql(
                "SELECT has_table_privilege('sqlnotify_journal', 'INSERT')"
            ).scalar_one()
            assert denied is False
    finally:
        engine.dispose()
    got = rec.wait_for(3, timeout=10)
    assert [e.operation.value for e in got] == ["insert", "update", "delete"]


def test_listener_without_create_privilege_starts_on_existing_tables(
    pg_url: str,
    schema: str,
    pg_schema_engine: sa.Engine,
    notifiers: list[Notifier],
    make_role: Callable[..., str],
) -> None:
    table = make_table(pg_schema_engine)
    admin = Notifier(pg_schema_engine).watch(table, "insert", durable=True)
    admin.install()
    admin.dialect.journal().ensure()
    admin.dialect.close()
    listener = make_role(
        f'GRANT USAGE ON SCHEMA "{schema}" TO {{role}}',
        f'GRANT SELECT, DELETE ON "{schema}".sqlnotify_journal TO {{role}}',
        f'GRANT SELECT, INSERT, UPDATE ON "{schema}".sqlnotify_consumers TO {{role}}',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}".sqlnotify_users TO {{role}}',
    )
    engine = engine_as(pg_url, listener, schema)
    try:
        with engine.connect() as conn:
            assert not conn.exec_driver_sql(
                f"SELECT has_schema_privilege('{schema}', 'CREATE')"
            ).scalar_one()
        n = Notifier(engine, consumer="low").watch(table, "insert", durable=True)
        notifiers.append(n)
        rec = EventRecorder()
        n.subscribe(table, "insert")(rec)
        n.start()
        insert(pg_schema_engine, table, [1, 2])
        assert [e.id for e in rec.wait_for(2, timeout=10)] == [1, 2]
        n.stop()
        loaded = n.dialect.journal().load("low")
        n.dialect.close()
        assert loaded is not None and isinstance(loaded[0], SnapshotPosition)
    finally:
        engine.dispose()


OLD_CONSUMERS = """\
CREATE TABLE sqlnotify_consumers (
    name text PRIMARY KEY,
    xid xid8 NOT NULL,
    id bigint NOT NULL,
    updated timestamptz NOT NULL DEFAULT now()
)"""


def test_positions_of_the_earlier_format_are_migrated(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_schema_engine)
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql(OLD_CONSUMERS)
    n0 = Notifier(pg_schema_engine).watch(table, "insert", durable=True)
    n0.install()
    with pg_schema_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 1, "note": "x"}, {"id": 2, "note": "x"}])
    insert(pg_schema_engine, table, [3])
    with pg_schema_engine.begin() as conn:
        # The earlier reader had consumed the first row of the two-row transaction.
        xid, id_ = conn.exec_driver_sql(
            "SELECT xid, id FROM sqlnotify_journal ORDER BY id LIMIT 1"
        ).one()
        conn.exec_driver_sql(
            "INSERT INTO sqlnotify_consumers (name, xid, id) VALUES ('old', %s, %s)", (xid, id_)
        )
    n = Notifier(pg_schema_engine, consumer="old").watch(table, "insert", durable=True)
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start()
    insert(pg_schema_engine, table, [4])
    wait_until(lambda: 4 in {e.id for e in list(rec.events)}, timeout=10, message="row 4")
    assert [e.id for e in rec.events] == [2, 3, 4]


def test_old_format_is_refused_clearly_without_rights_to_migrate(
    pg_url: str,
    schema: str,
    pg_schema_engine: sa.Engine,
    make_role: Callable[..., str],
) -> None:
    table = make_table(pg_schema_engine)
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql(OLD_CONSUMERS)
    n0 = Notifier(pg_schema_engine).watch(table, "insert", durable=True)
    n0.install()
    n0.dialect.close()
    role = make_role(
        f'GRANT USAGE ON SCHEMA "{schema}" TO {{role}}',
        f'GRANT SELECT, DELETE ON "{schema}".sqlnotify_journal TO {{role}}',
        f'GRANT SELECT, INSERT, UPDATE ON "{schema}".sqlnotify_consumers TO {{role}}',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}".sqlnotify_users TO {{role}}',
    )
    engine = engine_as(pg_url, role, schema)
    n = Notifier(engine, consumer="old").watch(table, "insert", durable=True)
    try:
        with pytest.raises(SQLNotifyException, match="format of an earlier sqlnotify"):
            n.start()
    finally:
        n.stop()
        engine.dispose()


@pytest.mark.parametrize("options", [{}, {"pg_journal_per_statement": True}])
def test_status_reports_durable_watches_installed(
    pg_schema_engine: sa.Engine, schema: str, options: dict[str, Any]
) -> None:
    table = make_table(pg_schema_engine)
    n = Notifier(pg_schema_engine, **options).watch(table, "insert", durable=True)
    n.watch(table, "update", durable=True, use_overflow_table=True)
    n.install()
    n.dialect.close()
    fresh = Notifier(pg_schema_engine)  # what ``sqlnotify status`` builds
    try:
        rows = [r for r in fresh.dialect.status() if r["schema"] == schema]
    finally:
        fresh.dialect.close()
    assert sorted(r["state"] for r in rows) == ["installed", "installed"]


def test_snapshot_positions_order_and_visibility() -> None:
    before = SnapshotPosition("100:105:100,102")
    inside = SnapshotPosition("100:105:100,102", "100:110:100", 7)
    further = SnapshotPosition("100:105:100,102", "100:110:100", 9)
    after = SnapshotPosition("100:110:100", None, 9)
    later = SnapshotPosition("110:110:")
    assert before < inside < further < after < later
    assert sorted([later, after, further, inside, before]) == [
        before,
        inside,
        further,
        after,
        later,
    ]
    assert after.sees(99) and after.sees(101) and after.sees(109)
    assert not after.sees(100) and not after.sees(110)
    assert SnapshotPosition.parse("5:9:6,7", None, 0) == SnapshotPosition("5:9:6,7")
    with pytest.raises(ValueError, match="not a pg_snapshot"):
        SnapshotPosition.parse("5:9", None, 0)
