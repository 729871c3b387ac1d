"""At most once: the live events of plain watches relayed as they arrive (no journal)."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa
from support.watching import make_table
from test_groups import write

from sqlnotify import Notifier
from sqlnotify.dialects.redis import stream_key
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.relay import Relay
from sqlnotify.testing import EventRecorder, wait_until


def test_plain_watches_are_relayed_at_most_once(
    pg_schema_engine: sa.Engine,
    schema: str,
    redis_url: str,
    prefix: str,
    relays: list[Relay],
    notifiers: list[Notifier],
) -> None:
    table = make_table(pg_schema_engine, schema)
    name = f"{schema}.item"

    def relay_of() -> Relay:
        watched = Notifier(pg_schema_engine).watch(name, "insert", extra_columns=["note"])
        made = Relay(watched, redis_url, name=prefix, stream_prefix=prefix, at_most_once=True)
        relays.append(made)
        return made

    relay = relay_of()
    relay.start()
    wait_until(lambda: relay.active, timeout=20, message="the relay to become active")
    reader = Notifier.from_redis(
        pg_schema_engine, redis_url, group="g", consumer="c", stream_prefix=prefix
    ).watch(name, "insert", extra_columns=["note"])
    notifiers.append(reader)
    events = EventRecorder()
    reader.subscribe(name, "insert")(events)
    reader.start()
    with pg_schema_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "note": f"n{i}"} for i in (1, 2, 3)])
    got = events.wait_for(3, timeout=20)
    assert [(e.id, e.extra_columns["note"]) for e in got] == [(1, "n1"), (2, "n2"), (3, "n3")]
    assert relay.health()["at_most_once"]
    # The relay counts its entries once XADD answered: maybe after the consumer got them.
    wait_until(lambda: relay.health()["written"] == 3, timeout=10, message="3 written")
    relay.stop()
    # No relay runs: these events are never relayed (no journal keeps them).
    write(pg_schema_engine, table, range(4, 6))
    heir = relay_of()
    heir.start()
    wait_until(lambda: heir.active, timeout=20, message="the second relay to become active")
    write(pg_schema_engine, table, range(6, 8))
    got = events.wait_for(5, timeout=20)
    assert [e.id for e in got] == [1, 2, 3, 6, 7]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = stream_key(prefix, reader.watches[0].channel)
    # Numbering goes on from the stream's last entry: consumers see no false gap.
    assert [entry for entry, _ in client.xrange(key)] == [f"{n}-0" for n in range(1, 6)]
    client.close()
    assert heir.health()["lag_events"] == 0  # nothing in a journal to lag behind


def test_at_most_once_refuses_durable_watches(
    pg_schema_engine: sa.Engine, schema: str, redis_url: str, prefix: str
) -> None:
    make_table(pg_schema_engine, schema)
    durable = Notifier(pg_schema_engine).watch(f"{schema}.item", "insert", durable=True)
    relay = Relay(durable, redis_url, name=prefix, stream_prefix=prefix, at_most_once=True)
    with pytest.raises(SQLNotifyConfigurationError, match="at_most_once relays plain watches"):
        relay.start()
