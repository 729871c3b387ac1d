"""A wake-up consumed while a large window is read in parts still gets its commit read."""

from __future__ import annotations

import sqlalchemy as sa

from sqlnotify import ChangeEvent, Notifier
from sqlnotify.testing import wait_until

BACKLOG = 17_000


def test_a_commit_during_a_catch_up_is_read_without_another_wake_up(
    pg_schema_engine: sa.Engine, table: sa.Table, notifiers: list[Notifier]
) -> None:
    def make() -> Notifier:
        # A small queue: the backlog's window (over one read's 5,000 rows) is
        # read in parts, as the receivers make room.
        notifier = Notifier(pg_schema_engine, consumer="wakes", max_queue=200)
        notifier.watch(table, "insert", durable=True)
        notifiers.append(notifier)
        return notifier

    first = make()
    first.start()
    first.stop()
    with pg_schema_engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO item SELECT g, 'backlog' FROM generate_series(0, {BACKLOG - 1}) g"
        )
    seen: list[int] = []
    writes = pg_schema_engine.connect()

    def receive(event: ChangeEvent) -> None:
        seen.append(event.id)
        if len(seen) == 1:
            # Committed (and woken) while the backlog's window is being read;
            # nothing is written after it.
            writes.execute(sa.insert(table), {"id": BACKLOG, "note": "last"})
            writes.commit()

    again = make()
    again.subscribe(table, "insert")(receive)
    again.start()
    wait_until(lambda: len(seen) == BACKLOG + 1, timeout=30, message="every row")
    writes.close()
    assert sorted(seen) == list(range(BACKLOG + 1))
