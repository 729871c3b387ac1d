"""Foreign and malformed payloads on sqlnotify's channels never stop the listener."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.faults import insert
from support.watching import Watch, durable_and_plain

from sqlnotify import Notifier, signals
from sqlnotify.testing import wait_until

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
near_misses = st.fixed_dictionaries(
    {},
    optional={
        "pos": json_values,
        "xid": json_values,
        "ts": json_values,
        "row": json_values | st.dictionaries(st.sampled_from(["id", "note", "x"]), json_values),
        "wake": json_values,
        "trunc": json_values,
        "custom": json_values,
        "lost": json_values,
    },
).map(json.dumps)
payloads = (
    st.text(max_size=300).filter(lambda t: "\x00" not in t)
    | json_values.map(json.dumps)
    | near_misses
).filter(lambda t: len(t.encode()) < 7900)


def certainly_bad(payload: str, durable: bool) -> bool:
    try:
        data = json.loads(payload)
    except ValueError:
        return True
    if not isinstance(data, dict):
        return True
    if durable and "pos" in data and "xid" in data:
        try:
            int(data["xid"]), int(data["pos"])
            return False
        except (TypeError, ValueError, OverflowError):
            pass
    row, ts = data.get("row"), data.get("ts")
    ts_ok = ts is None or (isinstance(ts, (int, float)) and not isinstance(ts, bool))
    keys_ok = bool(data.get("lost")) or (isinstance(row, dict) and "id" in row)
    return not isinstance(row, dict) or not keys_ok or not ts_ok


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, sender: Any, **kw: Any) -> None:
        self.count += 1


def test_malformed_payloads_are_counted_never_fatal(
    pg_schema_engine: sa.Engine, table: sa.Table, notifiers: list[Notifier]
) -> None:
    n, durable, rec = durable_and_plain(notifiers, pg_schema_engine, table)
    dropped = Counter()
    signals.notification_dropped.connect(dropped, sender=n)
    n.start()
    channels = [w.channel for w in n.watches]
    state = {"next_id": 1}

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(batch=st.lists(st.tuples(st.sampled_from(channels), payloads), min_size=1, max_size=5))
    def check(batch: list[tuple[str, str]]) -> None:
        before = n.stats.snapshot()
        dropped_before = dropped.count
        with pg_schema_engine.begin() as conn:
            for channel, payload in batch:
                conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
        # A real row afterwards proves the listener and dispatcher still run;
        # notifications arrive in commit order, so the junk was handled first.
        i = state["next_id"]
        state["next_id"] += 1
        insert(pg_schema_engine, table, [i])
        wait_until(lambda: any(e.id == i for e in list(rec.events)), timeout=10, message=f"row {i}")
        after = n.stats.snapshot()
        # Every payload that cannot be an event was dropped, counted and
        # signalled (one that looks like a journal wake-up may instead be
        # left to the journal, which is authoritative for durable channels).
        # (PostgreSQL folds identical notifications of one transaction into one.)
        bad = sum(1 for channel, p in set(batch) if certainly_bad(p, channel == channels[0]))
        assert after["dropped"] - before["dropped"] >= bad
        assert after["dropped"] - before["dropped"] == dropped.count - dropped_before
        assert n.health()["connected"]

    try:
        check()
    finally:
        signals.notification_dropped.disconnect(dropped)
    assert n.stats.dropped > 0
    # Durable delivery went on: every real row came through the journal path too.
    real = set(range(1, state["next_id"]))

    def durable_ids() -> set[Any]:
        return {e.id for e in list(durable.events) if type(e.id) is int}

    wait_until(lambda: real <= durable_ids(), timeout=10, message="every real durable row")


def test_forged_journal_keys_cannot_hide_real_events(
    pg_schema_engine: sa.Engine, table: sa.Table, watched: Watch
) -> None:
    n, rec = watched(pg_schema_engine, table, durable=True)
    channel = n.watches[0].channel
    with pg_schema_engine.connect() as conn:
        next_pos = conn.exec_driver_sql(
            "SELECT coalesce(max(id), 0) + 1 FROM sqlnotify_journal"
        ).scalar_one()
    forged = [
        # The next real position under a wrong transaction id, and one far ahead.
        {"pos": next_pos, "xid": 3, "ts": 1.0, "row": {"id": -1}},
        {"pos": next_pos + 1, "xid": 2**62, "ts": 1.0, "row": {"id": -2}},
    ]
    with pg_schema_engine.begin() as conn:
        for body in forged:
            conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": json.dumps(body)})
    insert(pg_schema_engine, table, [1, 2, 3])
    wait_until(
        lambda: {1, 2, 3} <= {e.id for e in list(rec.events)}, timeout=10, message="real rows"
    )
    reader = n._intake.feed if n._intake is not None else None
    assert reader is not None
    wait_until(lambda: not reader.pending, timeout=10, message="the reader to settle")
