"""Durable writes through the relay into Redis Streams, read by notifiers of consumer groups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from support.faults import GapRecorder, gaps_fixture  # noqa: F401

from sqlnotify import Notifier
from sqlnotify.exceptions import SQLNotifyConfigurationError
from sqlnotify.relay import Relay
from sqlnotify.testing import EventRecorder, async_wait_until, wait_until


@pytest.fixture
def typed(pg_schema_engine: sa.Engine) -> sa.Table:
    """A table with columns whose values need typing (dates, decimals, bytes, arrays)."""
    table = sa.Table(
        "typed",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("tags", sa.ARRAY(sa.Text)),
        sa.Column("note", sa.Text),
    )
    table.create(pg_schema_engine)
    return table


TYPED = ["at", "price", "blob", "tags", "note"]


def watching(notifier: Notifier, table: Any) -> Notifier:
    """``notifier`` watching inserts and updates of ``table``, durably, with every column."""
    for operation in ("insert", "update"):
        notifier.watch(table, operation, durable=True, extra_columns=TYPED)
    return notifier


def consumer(
    engine: sa.Engine, table: Any, redis_url: str, prefix: str, group: str, name: str
) -> Notifier:
    return watching(
        Notifier.from_redis(engine, redis_url, group=group, consumer=name, stream_prefix=prefix),
        table,
    )


def test_consumer_gets_the_events_a_direct_listener_gets(
    pg_schema_engine: sa.Engine,
    typed: sa.Table,
    redis_url: str,
    prefix: str,
    notifiers: list[Notifier],
    relays: list[Relay],
) -> None:
    source = watching(Notifier(pg_schema_engine), typed)
    relay = Relay(source, redis_url, name=prefix, stream_prefix=prefix)
    relays.append(relay)
    direct = watching(Notifier(pg_schema_engine), typed)
    remote = consumer(pg_schema_engine, typed, redis_url, prefix, "g", "c1")
    notifiers += [direct, remote]
    got_direct, got_remote = EventRecorder(), EventRecorder()
    for operation in ("insert", "update"):
        direct.subscribe(typed, operation)(got_direct)
        remote.subscribe(typed, operation)(got_remote)
    direct.start()
    remote.start()
    relay.start()
    wait_until(lambda: relay.active, timeout=10, message="the relay to become active")
    with pg_schema_engine.begin() as conn:
        for i in range(1, 21):
            conn.execute(
                typed.insert().values(
                    id=i,
                    at=sa.func.now(),
                    price=f"{i}.25",
                    blob=bytes([i, 0, 255]),
                    tags=["a", str(i)],
                    note=f"n{i}",
                )
            )
    with pg_schema_engine.begin() as conn:
        conn.execute(typed.update().where(typed.c.id == 3).values(note="changed"))
    expected = got_direct.wait_for(21, timeout=20)
    received = got_remote.wait_for(21, timeout=20)

    def facts(e: Any) -> tuple[Any, ...]:
        return (e.to_dict(), dict(e.row), type(e.row["at"]), type(e.row["price"]))

    assert [facts(e) for e in received] == [facts(e) for e in expected]
    first = received[0].extra_columns
    assert first["note"] == "n1" and first["blob"] == bytes([1, 0, 255])
    assert first["tags"] == ["a", "1"] and str(first["price"]) == "1.25"
    # The relay counts an entry once Redis answered the append: a consumer may read it first.
    wait_until(lambda: relay.health()["written"] == 21, timeout=10, message="21 written")
    check = redis.Redis.from_url(redis_url)
    keys = [prefix + w.channel for w in remote.watches]
    wait_until(
        lambda: all(check.xpending(k, "g")["pending"] == 0 for k in keys),
        timeout=10,
        message="every entry acknowledged",
    )
    check.close()


def test_relay_refuses_watches_that_are_not_durable(
    pg_schema_engine: sa.Engine, typed: sa.Table, redis_url: str, prefix: str
) -> None:
    plain = Notifier(pg_schema_engine).watch(typed, "insert")
    relay = Relay(plain, redis_url, name=prefix, stream_prefix=prefix)
    with pytest.raises(SQLNotifyConfigurationError, match="durable watches only"):
        relay.start()


def test_async_receivers_are_acknowledged_once_they_finish(
    pg_schema_engine: sa.Engine,
    typed: sa.Table,
    redis_url: str,
    prefix: str,
    notifiers: list[Notifier],
    relays: list[Relay],
) -> None:
    relay = Relay(
        watching(Notifier(pg_schema_engine), typed), redis_url, name=prefix, stream_prefix=prefix
    )
    relays.append(relay)
    relay.start()
    remote = consumer(pg_schema_engine, typed, redis_url, prefix, "g", "c1")
    notifiers.append(remote)
    release = asyncio.Event()
    seen: list[int] = []

    @remote.subscribe(typed, "insert")
    async def slow(event: Any) -> None:
        seen.append(event.id)
        await release.wait()

    check = redis.Redis.from_url(redis_url)

    async def scenario() -> None:
        await remote.astart()
        key = prefix + next(w.channel for w in remote.watches if "insert" in w.channel)
        try:
            with pg_schema_engine.begin() as conn:
                conn.execute(typed.insert().values(id=1, note="x"))
            await async_wait_until(lambda: seen, 10, "the async receiver to run")
            # The callback runs and has not finished: its entry stays pending.
            assert check.xpending(key, "g")["pending"] == 1
            release.set()
            await async_wait_until(
                lambda: check.xpending(key, "g")["pending"] == 0, 10, "the entry acknowledged"
            )
        finally:
            await remote.astop()

    asyncio.run(scenario())
    check.close()
    assert seen == [1]
