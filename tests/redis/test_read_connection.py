"""The listener thread's own read connection: replaced when it drops, the script reloaded."""

from __future__ import annotations

from collections.abc import Callable

import redis
import sqlalchemy as sa
from test_gaps import PrivateRedis, private_redis, setup  # noqa: F401
from test_groups import write

from sqlnotify import Notifier
from sqlnotify.dialects.redis.source import RedisSource
from sqlnotify.relay import Relay
from sqlnotify.testing import EventRecorder


def _reads_on_after(
    engine: sa.Engine,
    schema: str,
    server: PrivateRedis,
    relays: list[Relay],
    notifiers: list[Notifier],
    fault: Callable[[redis.Redis], object],
) -> list[int]:
    """Rows 1 to 5 read, ``fault`` done to the server, rows 6 to 10 written: the ids got."""
    prefix = "c:"
    table, name, _ = setup(engine, schema, server.url, prefix, relays)
    n = Notifier.from_redis(engine, server.url, group="g", consumer="c", stream_prefix=prefix)
    n.watch(name, "insert", durable=True)
    events = EventRecorder()
    n.subscribe(name, "insert")(events)
    notifiers.append(n)
    n.start()
    write(engine, table, range(1, 6))
    events.wait_for(5, timeout=20)
    admin = redis.Redis.from_url(server.url)
    try:
        fault(admin)
    finally:
        admin.close()
    write(engine, table, range(6, 11))
    return [e.id for e in events.wait_for(10, timeout=30)]


def test_a_killed_read_connection_is_replaced_and_nothing_is_lost(
    pg_schema_engine: sa.Engine,
    schema: str,
    private_redis: PrivateRedis,  # noqa: F811
    relays: list[Relay],
    notifiers: list[Notifier],
) -> None:
    def kill_the_others(admin: redis.Redis) -> object:
        # The server is the test's own: every other client is the relay's or the notifier's.
        return admin.client_kill_filter(_type="normal", skipme=True)

    got = _reads_on_after(
        pg_schema_engine, schema, private_redis, relays, notifiers, kill_the_others
    )
    assert got == list(range(1, 11))


def test_a_flushed_read_script_is_loaded_again(
    pg_schema_engine: sa.Engine,
    schema: str,
    private_redis: PrivateRedis,  # noqa: F811
    relays: list[Relay],
    notifiers: list[Notifier],
) -> None:
    got = _reads_on_after(
        pg_schema_engine, schema, private_redis, relays, notifiers, lambda a: a.script_flush()
    )
    assert got == list(range(1, 11))


def test_an_entry_wakes_one_consumer_of_a_group_not_all(
    pg_schema_engine: sa.Engine,
    schema: str,
    private_redis: PrivateRedis,  # noqa: F811
    relays: list[Relay],
    notifiers: list[Notifier],
) -> None:
    # The relay rings each group's bell after appending; a bell's element wakes
    # one consumer waiting in BLPOP.  A group-blind XREAD would wake all four
    # for every entry, and three of them would read nothing (60 empty reads).
    prefix = "w:"
    table, name, _ = setup(pg_schema_engine, schema, private_redis.url, prefix, relays)
    events = EventRecorder()
    fleet = []
    for consumer in ("a", "b", "c", "d"):
        n = Notifier.from_redis(
            pg_schema_engine, private_redis.url, group="g", consumer=consumer, stream_prefix=prefix
        )
        n.watch(name, "insert", durable=True)
        n.subscribe(name, "insert")(events)
        notifiers.append(n)
        n.start()
        fleet.append(n)
    for i in range(1, 21):  # one entry at a time, each received before the next
        write(pg_schema_engine, table, range(i, i + 1))
        events.wait_for(i, timeout=20)
    assert sorted(e.id for e in events.events) == list(range(1, 21))
    sources = [n._listener.source for n in fleet if n._listener is not None]
    assert len(sources) == 4 and all(isinstance(s, RedisSource) for s in sources)
    empty = sum(s.empty_reads for s in sources if isinstance(s, RedisSource))
    assert empty <= 3, f"{empty} wake-ups of the group read nothing"
