"""A relay or a consumer killed mid-stream: the standby takes over, pending entries are claimed."""

from __future__ import annotations

import json
import signal

import redis
import sqlalchemy as sa
from support.procs import Proc, child_env
from support.streams import group_reader
from test_groups import CHILD, db_url, got, procs, start_consumer, write  # noqa: F401

from sqlnotify import Notifier
from sqlnotify.dialects.redis import stream_key
from sqlnotify.relay import Relay
from sqlnotify.testing import wait_until


def channel_of(engine: sa.Engine, name: str) -> str:
    n = Notifier(engine).watch(name, "insert", durable=True)
    return n.prepare()[0].channel


def row_id(client: redis.Redis, key: str, entry: str) -> int:
    """The row id in the payload of one stream entry."""
    ((_, fields),) = client.xrange(key, entry, entry)
    return int(json.loads(fields["p"])["row"]["id"])


def test_standby_relay_takes_over_without_loss_or_duplicate(
    pg_schema_engine: sa.Engine,
    item: sa.Table,
    redis_url: str,
    prefix: str,
    procs: list[Proc],  # noqa: F811
    notifiers: list[Notifier],
) -> None:
    table, name = item, item.fullname
    key = stream_key(prefix, channel_of(pg_schema_engine, name))
    args = (CHILD, "relay", db_url(pg_schema_engine), redis_url, prefix, name)
    first = Proc.python(*args, env=child_env())
    procs.append(first)
    first.expect("active", timeout=60)
    second = Proc.python(*args, env=child_env())
    procs.append(second)
    events = group_reader(pg_schema_engine, redis_url, prefix, "a", "r", name, notifiers)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    write(pg_schema_engine, table, range(1, 5001), per_transaction=100)
    wait_until(lambda: client.xlen(key) > 0, timeout=30, message="the first entries")
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(10)
    second.expect("active", timeout=30)
    write(pg_schema_engine, table, range(5001, 10001), per_transaction=100)
    received = events.wait_for(10_000, timeout=120)
    entries = client.xrange(key)
    assert len(entries) == 10_000
    positions = [int(fields["j"]) for _, fields in entries]
    assert len(set(positions)) == 10_000
    assert sorted(e.id for e in received) == list(range(1, 10_001))
    wait_until(
        lambda: client.xpending(key, "a")["pending"] == 0,
        timeout=30,
        message="every entry acknowledged",
    )
    assert len(events) == 10_000
    client.close()


def test_takeover_skips_the_entries_appended_after_the_saved_position(
    pg_schema_engine: sa.Engine,
    item: sa.Table,
    redis_url: str,
    prefix: str,
    procs: list[Proc],  # noqa: F811
    relays: list[Relay],
) -> None:
    table, name = item, item.fullname
    key = stream_key(prefix, channel_of(pg_schema_engine, name))
    # A relay that never saves its position after its first (an hour apart):
    # killed, it leaves 50 entries in the stream past its saved position.
    first = Proc.python(
        CHILD, "relay", db_url(pg_schema_engine), redis_url, prefix, name, "3600", env=child_env()
    )
    procs.append(first)
    first.expect("active", timeout=60)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    write(pg_schema_engine, table, range(1, 51), per_transaction=10)
    wait_until(lambda: client.xlen(key) == 50, timeout=30, message="50 entries")
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(10)

    heir = Relay(
        Notifier(pg_schema_engine).watch(name, "insert", durable=True),
        redis_url,
        name=prefix,
        stream_prefix=prefix,
    )
    relays.append(heir)
    heir.start()
    wait_until(lambda: heir.active, timeout=30, message="the heir to take over")
    write(pg_schema_engine, table, range(51, 61), per_transaction=10)
    wait_until(lambda: client.xlen(key) >= 60, timeout=30, message="60 entries")
    # It read the 50 events again from the saved position and appended none of them.
    assert heir.health()["skipped"] == 50
    entries = client.xrange(key)
    assert len(entries) == 60
    assert [row_id(client, key, e) for e, _ in entries] == list(range(1, 61))
    assert [e for e, _ in entries] == [f"{n}-0" for n in range(1, 61)]
    client.close()


def test_pending_entries_of_a_killed_consumer_are_claimed(
    pg_schema_engine: sa.Engine,
    item: sa.Table,
    redis_url: str,
    prefix: str,
    procs: list[Proc],  # noqa: F811
) -> None:
    table, name = item, item.fullname
    key = stream_key(prefix, channel_of(pg_schema_engine, name))
    relay = Proc.python(
        CHILD, "relay", db_url(pg_schema_engine), redis_url, prefix, name, env=child_env()
    )
    procs.append(relay)
    relay.expect("active", timeout=60)
    doomed = start_consumer(
        procs, pg_schema_engine, redis_url, prefix, name, "a", "doomed", "30", "5"
    )
    doomed.expect("ready", timeout=60)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    write(pg_schema_engine, table, range(1, 201), per_transaction=50)
    doomed.expect("hanging", timeout=60)
    wait_until(
        lambda: client.xpending(key, "a")["pending"] > 0,
        timeout=30,
        message="entries pending for the hanging consumer",
    )
    pending = client.xpending_range(key, "a", "-", "+", 1000, consumername="doomed")
    held = {row_id(client, key, p["message_id"]) for p in pending}
    assert held
    doomed.popen.send_signal(signal.SIGKILL)
    doomed.popen.wait(10)
    heir = start_consumer(procs, pg_schema_engine, redis_url, prefix, name, "a", "heir", "1")
    heir.expect("ready", timeout=60)
    wait_until(
        lambda: client.xpending(key, "a")["pending"] == 0,
        timeout=60,
        message="the killed consumer's entries claimed and acknowledged",
    )
    handled = got(client, prefix, "a")
    assert {i for _, i in handled} == set(range(1, 201))
    by_heir = {i for n, i in handled if n == "heir"}
    assert held <= by_heir  # the killed consumer's pending entries were handled by the heir
    assert client.xlen(key) == 200
    client.close()
