"""The bounded queue: durable watches wait in the journal, others drop with a gap."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from support.faults import GapRecorder, gaps_fixture, insert  # noqa: F401

from sqlnotify import Notifier
from sqlnotify.testing import EventRecorder, wait_until


class Gate:
    """A receiver that blocks until opened, recording what it got."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.rec = EventRecorder()

    def __call__(self, event: Any) -> None:
        self.open.wait(20)
        self.rec(event)


def test_full_queue_drops_plain_events_with_a_gap(
    pg_schema_engine: sa.Engine, table: sa.Table, notifiers: list[Notifier], gaps: GapRecorder
) -> None:
    n = Notifier(pg_schema_engine, max_queue=5, queue_timeout=0.1).watch(table, "insert")
    notifiers.append(n)
    gate = Gate()
    n.subscribe(table, "insert")(gate)
    n.start()
    for i in range(1, 61):  # one transaction each: many small batches
        insert(pg_schema_engine, table, [i])
    wait_until(lambda: n.health()["overflowed"] > 0, timeout=10, message="an overflow")
    gate.open.set()
    wait_until(
        lambda: n.stats.dispatched + n.stats.overflowed == 60,
        timeout=10,
        message="every notification dispatched or counted as dropped",
    )
    wait_until(lambda: len(gaps) >= 1, timeout=10, message="the overflow gap")
    overflow = [g for g in gaps.gaps if g["reason"] == "overflow"]
    assert overflow and sum(g["count"] for g in overflow) == n.stats.overflowed
    assert overflow[0]["channels"] == (n.watches[0].channel,)
    assert overflow[0]["start"] <= overflow[0]["end"]
    assert len(gate.rec) == n.stats.dispatched


def test_full_queue_leaves_durable_events_in_the_journal(
    pg_schema_engine: sa.Engine, table: sa.Table, notifiers: list[Notifier], gaps: GapRecorder
) -> None:
    n = Notifier(pg_schema_engine, max_queue=5, queue_timeout=0.1).watch(
        table, "insert", durable=True
    )
    notifiers.append(n)
    gate = Gate()
    n.subscribe(table, "insert")(gate)
    n.start()
    for i in range(1, 61):
        insert(pg_schema_engine, table, [i])
    wait_until(lambda: n.health()["queue_depth"] >= 5, timeout=10, message="a full queue")
    gate.open.set()
    events = gate.rec.wait_for(60, timeout=20)
    assert sorted({e.id for e in events}) == list(range(1, 61))
    assert n.stats.overflowed == 0 and len(gaps) == 0
