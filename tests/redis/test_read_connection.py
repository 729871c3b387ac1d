"""The listener thread's own read connection: replaced when it drops, the script reloaded."""

from __future__ import annotations

from collections.abc import Callable

import redis
import sqlalchemy as sa
from test_gaps import PrivateRedis, private_redis, setup  # noqa: F401
from test_groups import write

from sqlnotify import Notifier
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
