"""10,000 writes from another process while the listener's backend is killed 100 times."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import sqlalchemy as sa
from support.faults import GapRecorder, gaps_fixture  # noqa: F401
from support.watching import durable_and_plain

from sqlnotify import Notifier
from sqlnotify.testing import wait_until

WRITES = 10_000
KILLS = 100

WRITER = textwrap.dedent(
    """
    import sys, psycopg2
    url, schema, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conn = psycopg2.connect(url, options=f"-csearch_path={schema} -csynchronous_commit=off")
    conn.autocommit = True
    cur = conn.cursor()
    for i in range(1, count + 1):
        cur.execute("INSERT INTO item (id, note) VALUES (%s, 'w')", (i,))
    conn.close()
    """
)


def test_nothing_durable_lost_across_100_kills(
    pg_url: str,
    pg_engine: sa.Engine,
    pg_schema_engine: sa.Engine,
    table: sa.Table,
    schema: str,
    notifiers: list[Notifier],
    fast_reconnect: None,
    gaps: GapRecorder,
) -> None:
    n, durable, plain = durable_and_plain(notifiers, pg_schema_engine, table)
    n.start()
    dsn = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, dsn, schema, str(WRITES)])
    kills = 0
    try:
        last_pid = None
        count_sql = sa.text(f'SELECT count(*) FROM "{schema}".item')

        def reconnected(last: Any = None) -> Any:
            intake = n._intake
            source = intake.source if intake is not None and intake.connected else None
            pid = getattr(source, "backend_pid", None)
            return pid if pid != last else None

        def written() -> int:
            with pg_engine.connect() as conn:
                return int(conn.execute(count_sql).scalar_one())

        while kills < KILLS:
            # Spread the kills over the writes: the k-th once k% of them committed.
            target = kills * WRITES // KILLS
            wait_until(lambda t=target: written() >= t, timeout=30, message=f"{target} writes")
            pid = wait_until(
                lambda last=last_pid: reconnected(last), timeout=10, message="a reconnect"
            )
            with pg_engine.begin() as conn:
                killed = conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                assert killed.scalar_one()
            kills += 1
            last_pid = pid
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    events = durable.wait_for(WRITES, timeout=20)
    wait_until(lambda: n.health()["reconnects"] == KILLS, timeout=10, message="all reconnects")
    ids = {e.id for e in events}
    assert ids == set(range(1, WRITES + 1))
    # A duplicate is always the same journal position.
    position_of: dict[int, int] = {}
    for e in events:
        assert e.position is not None
        assert position_of.setdefault(e.id, e.position) == e.position
    disconnect_gaps = [g for g in gaps.gaps if g["reason"] == "disconnected"]
    assert len(disconnect_gaps) == KILLS
    assert all(g["channels"] == (n.watches[1].channel,) for g in disconnect_gaps)
    h = n.health()
    print(
        f"\n{WRITES} writes, {KILLS} kills: {len(events)} durable deliveries"
        f" ({len(events) - len(ids)} duplicates, {h['duplicates']} suppressed),"
        f" {len(plain)} plain deliveries, {len(disconnect_gaps)} gaps"
    )
