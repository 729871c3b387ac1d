"""One process at a time reads as a consumer name of a group: a Redis lease with a TTL."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

from sqlnotify import Notifier
from sqlnotify.dialects.redis import RedisStreams
from sqlnotify.dialects.redis.commands import lease_key
from sqlnotify.exceptions import SQLNotifyException
from sqlnotify.testing import wait_until


def reader(engine: sa.Engine, redis_url: str, prefix: str, group: str, name: str) -> Notifier:
    return Notifier.from_redis(
        engine, redis_url, group=group, consumer=name, stream_prefix=prefix, lease_ttl=2.0
    ).watch("item", "insert", durable=True)


@pytest.mark.usefixtures("item")
def test_a_second_process_with_the_same_consumer_name_is_refused(
    pg_schema_engine: sa.Engine,
    redis_url: str,
    prefix: str,
    notifiers: list[Notifier],
) -> None:
    first = reader(pg_schema_engine, redis_url, prefix, "g", "c1")
    second = reader(pg_schema_engine, redis_url, prefix, "g", "c1")
    other_group = reader(pg_schema_engine, redis_url, prefix, "h", "c1")
    other_name = reader(pg_schema_engine, redis_url, prefix, "g", "c2")
    notifiers += [first, second, other_group, other_name]
    first.start()
    with pytest.raises(SQLNotifyException, match="'c1' is already active in another process"):
        second.start()
    # The name is the group's: another group, or another name, is free.
    other_group.start()
    other_name.start()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = lease_key(prefix, "g", "c1")
    token = client.get(key)
    assert token is not None and 0 < client.pttl(key) <= 2000
    # The listener refreshes it: it outlives its first TTL.
    wait_until(lambda: client.pttl(key) > 1500 and client.get(key) == token, timeout=10)
    first.stop()
    assert client.get(key) is None  # released on stop
    second.start()  # the name is free again
    assert second.health()["running"]
    second.stop()
    client.close()


@pytest.mark.usefixtures("item")
def test_a_dead_holder_frees_the_name_after_the_ttl(
    pg_schema_engine: sa.Engine,
    redis_url: str,
    prefix: str,
    notifiers: list[Notifier],
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = lease_key(prefix, "g", "c1")
    # A process that died holding the name: its lease is never refreshed.
    client.set(key, "elsewhere:1:dead", px=1500)
    blocked = reader(pg_schema_engine, redis_url, prefix, "g", "c1")
    notifiers.append(blocked)
    with pytest.raises(SQLNotifyException, match=r"already active in another process \(elsewhere"):
        blocked.start()
    wait_until(lambda: client.get(key) is None, timeout=10, message="the dead lease to expire")
    heir = reader(pg_schema_engine, redis_url, prefix, "g", "c1")
    notifiers.append(heir)
    heir.start()
    assert isinstance(heir.dialect, RedisStreams)
    assert client.get(key) == heir.dialect.lease.token
    client.close()
