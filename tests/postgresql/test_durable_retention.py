"""Journal retention: rows go when old and unneeded; a consumer left behind gets a gap."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.faults import GapRecorder, gaps_fixture, insert  # noqa: F401
from support.watching import Watch

from sqlnotify import Notifier
from sqlnotify._pipeline.durable import Feed
from sqlnotify.testing import wait_until


def journal_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT id FROM sqlnotify_journal ORDER BY id").scalars())


def journal_ids_rows(engine: sa.Engine) -> list[int]:
    """The table ids (``row.id``) of the events still in the journal."""
    with engine.connect() as conn:
        payloads = conn.exec_driver_sql(
            "SELECT payload::json #>> '{row,id}' FROM sqlnotify_journal"
        )
        return [int(p) for p in payloads.scalars()]


@pytest.fixture
def fast_prune(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Feed, "PRUNE_INTERVAL", 0.05)


def test_known_consumer_holds_rows_then_expires_and_gets_a_gap(
    pg_schema_engine: sa.Engine,
    table: sa.Table,
    notifiers: list[Notifier],
    watched: Watch,
    fast_prune: None,
    gaps: GapRecorder,
) -> None:
    slow = Notifier(pg_schema_engine, consumer="slow").watch(table, "insert", durable=True)
    notifiers.append(slow)
    slow.start()
    insert(pg_schema_engine, table, [1])
    slow.stop()  # "slow" is now known, and behind what comes next
    insert(pg_schema_engine, table, range(2, 12))

    # Another reader prunes with zero retention: "slow" still needs the rows.
    pruner = Notifier(pg_schema_engine, journal_retention=0).watch(table, "insert", durable=True)
    notifiers.append(pruner)
    pruner.start()
    intake = pruner._intake.feed if pruner._intake is not None else None
    assert intake is not None
    passes = intake.prune_passes
    wait_until(lambda: intake.prune_passes >= passes + 2, timeout=10, message="prune passes")
    assert set(range(2, 12)) <= set(journal_ids_rows(pg_schema_engine))
    pruner.stop()

    # Once "slow" counts as gone (expiry 0), the rows go.
    pruner2 = Notifier(pg_schema_engine, journal_retention=0, consumer_expiry=0).watch(
        table, "insert", durable=True
    )
    notifiers.append(pruner2)
    pruner2.start()
    wait_until(lambda: not journal_ids(pg_schema_engine), timeout=10, message="a pruned journal")
    pruner2.stop()

    # "slow" comes back: it is told which window it lost.
    back, rec = watched(pg_schema_engine, table, options=dict(consumer="slow"), durable=True)
    wait_until(lambda: len(gaps) >= 1, timeout=10, message="a retention gap")
    gap = gaps.gaps[0]
    assert gap["reason"] == "retention"
    assert gap["channels"] == (back.watches[0].channel,)
    assert gap["start"] <= gap["end"]
    insert(pg_schema_engine, table, [12])
    assert [e.id for e in rec.wait_for(1, timeout=10)] == [12]


def test_rows_younger_than_retention_stay(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch, fast_prune: None
) -> None:
    n, rec = watched(pg_schema_engine, table, durable=True)
    insert(pg_schema_engine, table, range(1, 6))
    rec.wait_for(5, timeout=10)
    assert n._intake is not None and n._intake.feed is not None
    assert n._intake.feed.prune() == 0  # default retention: a day
    assert len(journal_ids(pg_schema_engine)) == 5
