"""Behind a real PgBouncer in transaction mode: listen mode refuses, poll mode delivers."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
import sqlalchemy as sa
from support.env import unavailable
from support.faults import insert
from support.pgbouncer import Bouncer, bouncer_fixture, pgbouncer_binary, pooled_engine_fixture  # noqa: F401
from support.watching import make_table

from sqlnotify import Notifier
from sqlnotify.dialects.base import SourceDisconnected
from sqlnotify.dialects.postgresql import PostgresJournal, listener_dsn
from sqlnotify.dialects.postgresql.ownership import BlockerWatch, channel_lock
from sqlnotify.dialects.postgresql.poll import PollSource
from sqlnotify.exceptions import SQLNotifyConfigurationError, SQLNotifyListenerError
from sqlnotify.testing import EventRecorder, wait_until


def _journal_rows(engine: sa.Engine, schema: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".sqlnotify_journal').scalar_one()
        )


def _locks_held(engine: sa.Engine, channel: str) -> int:
    lock_class, key = channel_lock(channel)
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2",
                (lock_class, key),
            ).scalar_one()
        )


def _poller(engine: sa.Engine, table: sa.Table, schema: str, **options: object) -> Notifier:
    return Notifier(
        engine, journal_schema=schema, pg_listen=False, pg_poll_interval=0.05, **options
    ).watch(table, "insert", durable=True)


def _started(n: Notifier, table: sa.Table, notifiers: list[Notifier]) -> EventRecorder:
    """Start ``n`` (stopped at teardown) with a recorder of the table's inserts; return it."""
    notifiers.append(n)
    rec = EventRecorder()
    n.subscribe(table, "insert")(rec)
    n.start(timeout=30)
    return rec


@pytest.mark.parametrize(
    ("durable", "says"),
    [
        (False, "pooler in transaction mode"),  # the listener's checks find it
        (True, "the address is PgBouncer"),  # the journal's connection is refused first
    ],
)
def test_listen_mode_behind_a_transaction_pooler_fails_clearly(
    pooled_engine: sa.Engine,
    pg_engine: sa.Engine,
    schema: str,
    notifiers: list[Notifier],
    durable: bool,
    says: str,
) -> None:
    table = make_table(pg_engine, schema=schema)
    n = Notifier(pooled_engine, journal_schema=schema).watch(table, "insert", durable=durable)
    notifiers.append(n)
    started = time.monotonic()
    with pytest.raises(SQLNotifyListenerError, match=says) as info:
        n.start(timeout=60)
    assert time.monotonic() - started < 30  # found by the pooler checks, not the start bound
    message = str(info.value)
    assert "listener_connect_args" in message
    assert "pg_listen=False" in message
    assert not n.is_running
    # No session lock left behind on a server session the pooler hands to others.
    assert _locks_held(pg_engine, n.watches[0].channel) == 0


def test_listen_mode_with_a_direct_listener_works_with_writes_through_the_pooler(
    pooled_engine: sa.Engine,
    pg_engine: sa.Engine,
    schema: str,
    notifiers: list[Notifier],
) -> None:
    table = make_table(pg_engine, schema=schema)
    direct = {"host": pg_engine.url.host, "port": str(pg_engine.url.port or 5432)}
    n = Notifier(pooled_engine, journal_schema=schema, listener_connect_args=direct).watch(
        table, "insert"
    )
    rec = _started(n, table, notifiers)
    insert(pooled_engine, table, range(1, 4))
    assert [e.id for e in rec.wait_for(3, timeout=10)] == [1, 2, 3]
    assert _locks_held(pg_engine, n.watches[0].channel) == 1  # the direct session's own


def test_poll_mode_delivers_every_durable_event_through_the_pooler(
    pooled_engine: sa.Engine, pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema=schema)
    n = _poller(pooled_engine, table, schema)
    rec = _started(n, table, notifiers)
    for first in range(1, 301, 30):  # several transactions, through the pooler
        insert(pooled_engine, table, range(first, first + 30))
    with pooled_engine.begin() as conn:  # a writer that is not the notifier's engine either
        conn.execute(table.insert(), [{"id": 301, "note": "last"}])
    events = rec.wait_for(301, timeout=30)
    assert [e.id for e in events] == list(range(1, 302))
    assert len({e.position for e in events}) == 301
    assert _journal_rows(pg_engine, schema) == 301
    health = n.health()
    assert health["connected"] and health["dispatched"] == 301


def test_poll_mode_resumes_a_named_consumer(
    pooled_engine: sa.Engine, pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema=schema)
    first = _poller(pooled_engine, table, schema, consumer="billing")
    rec1 = _started(first, table, notifiers)
    insert(pooled_engine, table, range(1, 11))
    assert [e.id for e in rec1.wait_for(10, timeout=20)] == list(range(1, 11))
    first.stop()
    insert(pooled_engine, table, range(11, 21))  # while no one reads
    second = _poller(pooled_engine, table, schema, consumer="billing")
    rec2 = _started(second, table, notifiers)
    insert(pooled_engine, table, range(21, 26))
    assert [e.id for e in rec2.wait_for(15, timeout=20)] == list(range(11, 26))
    second.stop()
    assert [e.id for e in rec2.events] == list(range(11, 26))  # nothing before the saved position


def test_poll_mode_refuses_plain_watches_at_start(
    pooled_engine: sa.Engine, pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema=schema)
    n = Notifier(pooled_engine, journal_schema=schema, pg_listen=False).watch(table, "insert")
    notifiers.append(n)
    with pytest.raises(SQLNotifyConfigurationError, match="durable=True") as info:
        n.start(timeout=30)
    assert "needs LISTEN" in str(info.value)
    assert not n.is_running
    with pg_engine.connect() as conn:  # refused before any trigger was installed
        triggers = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = %s",
            (schema,),
        ).scalar_one()
    assert triggers == 0


def test_poll_mode_options_are_checked(pg_engine: sa.Engine) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="pg_listen"):
        Notifier(pg_engine, pg_listen="no")
    with pytest.raises(SQLNotifyConfigurationError, match="pg_poll_interval"):
        Notifier(pg_engine, pg_poll_interval=0)


def test_listen_mode_behind_a_session_pooler_works(
    pg_url: str, pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    if pgbouncer_binary() is None:
        unavailable("pgbouncer is not installed")
    pooler = Bouncer(sa.make_url(pg_url), pool_mode="session")
    engine = sa.create_engine(pooler.url())
    try:
        table = make_table(pg_engine, schema=schema)
        n = Notifier(engine).watch(table, "insert")  # a pooler, but sessions are kept
        rec = _started(n, table, notifiers)
        insert(engine, table, range(1, 4))
        assert [e.id for e in rec.wait_for(3, timeout=10)] == [1, 2, 3]
        n.stop()
    finally:
        engine.dispose()
        pooler.stop()


def test_poll_mode_on_a_direct_connection_reads_with_plain_statements(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_engine, schema=schema)
    n = _poller(pg_engine, table, schema)
    rec = _started(n, table, notifiers)
    journal = n.dialect.journal()
    assert isinstance(journal, PostgresJournal) and journal.pooled
    assert "options" not in journal.dsn  # a pooler refuses startup options
    insert(pg_engine, table, range(1, 51))
    assert [e.id for e in rec.wait_for(50, timeout=20)] == list(range(1, 51))
    # No LISTEN session: a listening source would hold the channel's lock.
    assert _locks_held(pg_engine, n.watches[0].channel) == 0


def test_poll_source_paces_its_reads(pg_url: str) -> None:
    dsn = listener_dsn(sa.make_url(pg_url))
    stop = threading.Event()
    source = PollSource(
        dsn, ["c1", "c2"], wake_payload="w", interval=0.4, min_interval=0.01, stop=stop
    )
    r, w = os.pipe()
    try:
        first = source.wait(1.0, r)  # due at once after connecting
        assert [(x.channel, x.payload) for x in first] == [("c1", "w"), ("c2", "w")]
        pauses = []
        for _ in range(8):
            source.checked(False)
            pauses.append(source.pacer.pause(10.0))
        assert pauses == sorted(pauses) and pauses[-1] == 0.4  # backs off up to the interval
        source.checked(True)
        assert source.pacer.pause(10.0) == 0.01  # quick again once events come
        os.write(w, b"\0")  # a commit of the notifier's own engine
        assert source.wait(1.0, r) == ()  # the listener drains the pipe first ...
        os.read(r, 16)
        assert len(source.wait(1.0, r)) == 2  # ... then the read is due at once
    finally:
        source.close()
        os.close(r)
        os.close(w)


def test_poll_mode_runs_one_consumer_name_in_one_process(
    pooled_engine: sa.Engine, pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    # No session lock survives a transaction pooler: poll mode holds a lease row.
    table = make_table(pg_engine, schema=schema)
    first = _poller(pooled_engine, table, schema, consumer="billing")
    rec = _started(first, table, notifiers)
    second = _poller(pooled_engine, table, schema, consumer="billing")
    notifiers.append(second)
    with pytest.raises(SQLNotifyListenerError, match="'billing' is already active") as info:
        second.start(timeout=30)
    assert f":{os.getpid()}:" in str(info.value)  # names the holder: host, process, token
    other = _poller(pooled_engine, table, schema, consumer="audit")  # another name is free
    rec_other = _started(other, table, notifiers)
    insert(pooled_engine, table, range(1, 4))
    assert [e.id for e in rec.wait_for(3, timeout=20)] == [1, 2, 3]
    assert [e.id for e in rec_other.wait_for(3, timeout=20)] == [1, 2, 3]
    first.stop()  # lets go of the lease at once
    third = _poller(pooled_engine, table, schema, consumer="billing")
    rec3 = _started(third, table, notifiers)
    insert(pooled_engine, table, [4])
    assert [e.id for e in rec3.wait_for(1, timeout=20)] == [4]


def test_poll_lease_of_a_silent_holder_expires_and_the_holder_finds_out(
    pg_url: str, pg_engine: sa.Engine, schema: str
) -> None:
    dsn = listener_dsn(sa.make_url(pg_url))
    PostgresJournal(dsn, schema, pooled=True).ensure()
    lease = (f'"{schema}".sqlnotify_leases', "reports")
    stop = threading.Event()

    def source() -> PollSource:
        return PollSource(
            dsn, ["c"], wake_payload="w", interval=0.1, min_interval=0.01, stop=stop, lease=lease
        )

    holder = source()
    late = None
    r, w = os.pipe()
    try:
        with pytest.raises(SQLNotifyListenerError, match="'reports' is already active"):
            source()
        # The holder stops renewing (a frozen or killed process): its lease runs out.
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE \"{schema}\".sqlnotify_leases SET expires = now() - interval '1 s'"
            )
        late = source()
        holder.ALIVE_INTERVAL = 0.0  # its next wait renews, and finds the lease taken
        with pytest.raises(SourceDisconnected, match="'reports' is already active"):
            holder.wait(1.0, r)
        assert late.wait(1.0, r)  # the new holder reads on
    finally:
        holder.close()  # releases nothing of the new holder's
        with pg_engine.connect() as conn:
            held = conn.exec_driver_sql(
                f'SELECT holder FROM "{schema}".sqlnotify_leases WHERE name = %s', ("reports",)
            ).scalar_one_or_none()
        if late is not None:
            assert held == late.holder
            late.close()
        os.close(r)
        os.close(w)
    with pg_engine.connect() as conn:
        assert (
            conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".sqlnotify_leases').scalar_one()
            == 0
        )


def test_lock_blocker_report_leaves_no_setting_on_pooled_sessions(
    bouncer: Bouncer, pg_engine: sa.Engine, schema: str
) -> None:
    # The report asks the server who blocks an install with a statement timeout
    # of its own: through a transaction pooler, a session-level SET would stay
    # on a server session that other clients get next.
    table = make_table(pg_engine, schema=schema)
    holder = pg_engine.connect()
    holder.exec_driver_sql(f'LOCK TABLE "{schema}"."{table.name}" IN ACCESS EXCLUSIVE MODE')
    holder_pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    waiter = pg_engine.connect()
    waiter_pid = waiter.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    waiter.commit()
    waiting = threading.Thread(
        target=waiter.exec_driver_sql,
        args=(f'LOCK TABLE "{schema}"."{table.name}" IN SHARE MODE',),
        name="test-waiter",
    )
    waiting.start()
    watch = BlockerWatch(listener_dsn(bouncer.url()), waiter_pid, 0.02, logging.getLogger(__name__))
    try:
        wait_until(lambda: watch.blockers, 10, "the report to name the blocker")
    finally:
        blockers = watch.stop()
        holder.rollback()
        waiting.join(10)
        waiter.rollback()
        holder.close()
        waiter.close()
    assert [b["pid"] for b in blockers] == [holder_pid]
    # Every server session of the pool (4), each held by one open transaction.
    engine = sa.create_engine(bouncer.url(), pool_size=4, max_overflow=0)
    conns = [engine.connect() for _ in range(4)]
    try:
        pids = {c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for c in conns}
        timeouts = {c.exec_driver_sql("SHOW statement_timeout").scalar_one() for c in conns}
    finally:
        for c in conns:
            c.close()
        engine.dispose()
    assert len(pids) == 4
    assert timeouts == {"0"}
