"""Gaps: a stream trimmed below a group's position, and Redis restarted with nothing persisted."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from support.env import unavailable
from support.faults import GapRecorder, gaps_fixture  # noqa: F401
from support.streams import durable_relay
from test_groups import write

from sqlnotify import Notifier
from sqlnotify.dialects.redis import stream_key
from sqlnotify.relay import Relay
from sqlnotify.testing import EventRecorder, wait_until


def setup(
    engine: sa.Engine, schema: str, redis_url: str, prefix: str, relays: list[Relay]
) -> tuple[sa.Table, str, Relay]:
    table, name, relay = durable_relay(engine, schema, redis_url, prefix)
    relays.append(relay)
    relay.start()
    wait_until(lambda: relay.active, timeout=20, message="the relay to become active")
    return table, name, relay


def reader(
    engine: sa.Engine, redis_url: str, prefix: str, name: str, notifiers: list[Notifier]
) -> tuple[Notifier, EventRecorder]:
    n = Notifier.from_redis(engine, redis_url, group="slow", consumer="s", stream_prefix=prefix)
    n.watch(name, "insert", durable=True)
    events = EventRecorder()
    n.subscribe(name, "insert")(events)
    notifiers.append(n)
    return n, events


def read_five(
    engine: sa.Engine,
    schema: str,
    redis_url: str,
    prefix: str,
    relays: list[Relay],
    notifiers: list[Notifier],
) -> tuple[sa.Table, Relay, Notifier, EventRecorder]:
    """:func:`setup`, and a :func:`reader` that reads rows 1 to 5 and is stopped again."""
    table, name, relay = setup(engine, schema, redis_url, prefix, relays)
    n, events = reader(engine, redis_url, prefix, name, notifiers)
    n.start()
    write(engine, table, range(1, 6))
    events.wait_for(5, timeout=20)
    n.stop()
    return table, relay, n, events


def test_trimmed_below_a_slow_group_signals_the_range(
    pg_schema_engine: sa.Engine,
    schema: str,
    redis_url: str,
    prefix: str,
    relays: list[Relay],
    notifiers: list[Notifier],
    gaps: GapRecorder,
) -> None:
    table, _relay, n, events = read_five(
        pg_schema_engine, schema, redis_url, prefix, relays, notifiers
    )
    write(pg_schema_engine, table, range(6, 101))
    key = stream_key(prefix, n.watches[0].channel)
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.xlen(key) == 100, timeout=20, message="100 entries")
    client.xtrim(key, maxlen=10, approximate=False)
    n.start()
    received = events.wait_for(15, timeout=20)
    assert [e.id for e in received] == [1, 2, 3, 4, 5, *range(91, 101)]
    wait_until(lambda: len(gaps) >= 1, timeout=10, message="a gap signal")
    (gap,) = gaps.gaps
    assert gap["count"] == 85  # entries 6 to 90
    assert gap["reason"] == "retention"
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class PrivateRedis:
    """A redis-server of the test's own, persisting nothing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout=20, message="the private redis-server to answer")
        client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port())
    server.start()
    yield server
    server.kill()


def test_redis_restart_reconnects_and_signals_the_lost_range(
    pg_schema_engine: sa.Engine,
    schema: str,
    private_redis: PrivateRedis,
    relays: list[Relay],
    notifiers: list[Notifier],
    gaps: GapRecorder,
) -> None:
    url = private_redis.url
    prefix = "r:"
    table, relay, n, events = read_five(pg_schema_engine, schema, url, prefix, relays, notifiers)
    write(pg_schema_engine, table, range(6, 11))
    wait_until(lambda: relay.health()["written"] == 10, timeout=20, message="10 entries")
    private_redis.kill()
    private_redis.start()
    n.start()
    write(pg_schema_engine, table, range(11, 16))
    received = events.wait_for(10, timeout=30)
    assert [e.id for e in received] == [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]
    wait_until(lambda: len(gaps) >= 1, timeout=10, message="a gap signal")
    (gap,) = gaps.gaps
    assert gap["count"] == 5  # entries of rows 6 to 10 were lost with Redis
    # The relay counts its entries once XADD answered: maybe after the consumer got them.
    wait_until(lambda: relay.health()["written"] == 15, timeout=10, message="15 written")
    assert relay.health()["skipped"] == 0  # rows 6 to 10 were not read again


def test_streams_started_over_by_a_new_relay_after_a_redis_restart_are_read(
    pg_schema_engine: sa.Engine,
    schema: str,
    private_redis: PrivateRedis,
    relays: list[Relay],
    notifiers: list[Notifier],
    gaps: GapRecorder,
) -> None:
    url = private_redis.url
    prefix = "s:"
    table, relay, n, events = read_five(pg_schema_engine, schema, url, prefix, relays, notifiers)
    relay.stop()
    private_redis.kill()
    private_redis.start()
    # A new relay process: its streams number from 1 again, below what the group got.
    again = Relay(
        Notifier(pg_schema_engine).watch(table.fullname, "insert", durable=True),
        url,
        name=prefix,
        stream_prefix=prefix,
    )
    relays.append(again)
    again.start()
    wait_until(lambda: again.active, timeout=20, message="the new relay to become active")
    n.start()
    write(pg_schema_engine, table, range(6, 9))
    received = events.wait_for(8, timeout=30)
    assert [e.id for e in received] == [1, 2, 3, 4, 5, 6, 7, 8]
    wait_until(lambda: len(gaps) >= 1, timeout=10, message="a gap signal")
    assert gaps.gaps[0]["count"] == 1  # of unknown size: what Redis lost is not known
    assert again.health()["written"] == 3
