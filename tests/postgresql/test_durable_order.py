"""Commits out of journal-id order, and a consumer killed with SIGKILL."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from support.faults import insert
from support.watching import Watch, Watched

from sqlnotify import signals
from sqlnotify.testing import kill_listener_connection, wait_until


def test_commit_out_of_id_order_loses_nothing(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch, fast_reconnect: None
) -> None:
    n, rec = watched(pg_schema_engine, table, durable=True)
    early = pg_schema_engine.connect()
    tx = early.begin()
    early.execute(table.insert(), {"id": 1, "note": "early id, late commit"})
    insert(pg_schema_engine, table, [2])  # a later journal id, committed first
    rec.wait_for(1, timeout=10)
    reader = n._intake.feed if n._intake is not None else None
    assert reader is not None
    committed = threading.Event()

    def commit_while_down(sender: Any, **kw: Any) -> None:
        # Listener thread, before it reconnects: the live notification of
        # row 1 is lost, only the journal has it.
        if not committed.is_set():
            tx.commit()
            committed.set()

    signals.listener_disconnected.connect(commit_while_down, sender=n)
    try:
        kill_listener_connection(n)
        events = rec.wait_for(2, timeout=10)
        wait_until(lambda: not reader.pending, timeout=10, message="the walk to settle")
    finally:
        signals.listener_disconnected.disconnect(commit_while_down)
        early.close()
    assert sorted(e.id for e in rec.events) == [1, 2], events
    assert len(rec.events) == 2  # the early-delivered row 2 was not repeated


def test_commit_out_of_id_order_across_consumer_restart(
    pg_schema_engine: sa.Engine, table: sa.Table, consumer: Callable[..., Watched]
) -> None:
    make = functools.partial(consumer, "ooo")

    n1, rec1 = make(start=True)
    with pg_schema_engine.connect() as early:
        tx = early.begin()
        early.execute(table.insert(), {"id": 1, "note": "x"})
        insert(pg_schema_engine, table, [2])
        rec1.wait_for(1, timeout=10)
        n1.stop()  # its saved snapshot has the open transaction in progress
        tx.commit()
    n2, rec2 = make()
    n2.start()
    events = rec2.wait_for(1, timeout=10)
    wait_until(lambda: 1 in {e.id for e in rec2.events}, timeout=10, message="row 1")
    assert {e.id for e in events} <= {1, 2}


CHILD = textwrap.dedent(
    """
    import sys, time
    import sqlalchemy as sa
    from sqlnotify import Notifier, SQLNotifyListenerError
    url, schema, out = sys.argv[1], sys.argv[2], sys.argv[3]
    engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    n = Notifier(engine, consumer="killme").watch("item", "insert", durable=True)
    f = open(out, "a", buffering=1)
    n.subscribe("item", "insert")(lambda e: f.write(f"{e.id} {e.position}\\n"))
    deadline = time.monotonic() + 20
    while True:
        try:
            n.start()
            break
        except SQLNotifyListenerError:
            # The killed process's session may not have ended yet.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    print("ready", flush=True)
    while True:
        time.sleep(1)
    """
)


def test_sigkill_and_restart_resumes(
    pg_url: str, pg_schema_engine: sa.Engine, table: sa.Table, schema: str, tmp_path: Any
) -> None:
    out = os.path.join(tmp_path, "seen.txt")

    children: list[subprocess.Popen[str]] = []

    def spawn() -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, pg_url, schema, out],
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        return child

    def seen() -> set[int]:
        with open(out) as f:
            return {int(line.split()[0]) for line in f if line.strip()}

    child = spawn()
    try:
        insert(pg_schema_engine, table, range(1, 201))
        wait_until(lambda: len(seen()) >= 50, timeout=10, message="the child receiving")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        for i in range(201, 401):  # committed while no process runs
            insert(pg_schema_engine, table, [i])
        child = spawn()
        insert(pg_schema_engine, table, range(401, 501))
        wait_until(lambda: seen() == set(range(1, 501)), timeout=20, message="all 500 ids")
    finally:
        for c in children:
            c.kill()
            c.wait(10)
            if c.stdout is not None:
                c.stdout.close()
    positions: dict[int, str] = {}
    with open(out) as f:
        for line in f:
            i, pos = line.split()
            assert positions.setdefault(int(i), pos) == pos  # a repeat has the same position
