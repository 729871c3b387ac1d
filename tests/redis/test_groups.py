"""Consumer groups across processes: each group gets every event, each event once per group."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from support.procs import ROOT, Proc, child_env
from support.streams import durable_relay

from sqlnotify import Notifier
from sqlnotify.testing import wait_until

CHILD = os.path.join(ROOT, "tests", "support", "redis_child.py")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    made: list[Proc] = []
    yield made
    for proc in made:
        if proc.popen.poll() is None:
            proc.popen.terminate()
            try:
                proc.popen.wait(15)
            except Exception:
                pass
        proc.kill()


def db_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def start_consumer(
    procs: list[Proc], engine: sa.Engine, redis_url: str, prefix: str, table: str, *args: str
) -> Proc:
    proc = Proc.python(
        CHILD, "consume", db_url(engine), redis_url, prefix, table, *args, env=child_env()
    )
    procs.append(proc)
    return proc


def write(engine: sa.Engine, table: sa.Table, ids: range, per_transaction: int = 500) -> None:
    values = list(ids)
    for i in range(0, len(values), per_transaction):
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": v} for v in values[i : i + per_transaction]])


def got(client: redis.Redis, prefix: str, group: str) -> list[tuple[str, int]]:
    out = []
    for item in client.lrange(f"{prefix}got:{group}", 0, -1):
        text = item.decode() if isinstance(item, bytes) else item
        name, _, ident = text.partition(":")
        out.append((name, int(ident)))
    return out


def test_one_group_shares_events_and_each_group_gets_all(
    pg_schema_engine: sa.Engine,
    schema: str,
    redis_url: str,
    prefix: str,
    procs: list[Proc],
    notifiers: list[Notifier],
) -> None:
    table, name, relay = durable_relay(pg_schema_engine, schema, redis_url, prefix)
    consumers = [
        start_consumer(procs, pg_schema_engine, redis_url, prefix, name, "a", f"a{i}")
        for i in range(4)
    ]
    consumers.append(start_consumer(procs, pg_schema_engine, redis_url, prefix, name, "b", "b0"))
    for proc in consumers:
        proc.expect("ready", timeout=60)
    relay.start()
    try:
        wait_until(lambda: relay.active, timeout=20, message="the relay to become active")
        total = 10_000
        write(pg_schema_engine, table, range(1, total + 1))
        client = redis.Redis.from_url(redis_url)
        key = prefix + relay.health()["streams"][0].removeprefix(prefix)
        for group in ("a", "b"):
            wait_until(
                lambda g=group: client.llen(f"{prefix}got:{g}") >= total,
                timeout=120,
                message=f"group {group} to handle {total} events",
            )
            wait_until(
                lambda g=group: client.xpending(key, g)["pending"] == 0,
                timeout=30,
                message=f"group {group} to acknowledge every entry",
            )
        a, b = got(client, prefix, "a"), got(client, prefix, "b")
        assert sorted(i for _, i in a) == list(range(1, total + 1))
        assert sorted(i for _, i in b) == list(range(1, total + 1))
        shares = collections.Counter(n for n, _ in a)
        assert set(shares) <= {f"a{i}" for i in range(4)}
        assert {n for n, _ in b} == {"b0"}
        # Counted once Redis answered the append: a consumer may read the entry first.
        wait_until(lambda: relay.health()["written"] == total, timeout=10, message="all written")
        assert client.lrange(f"{prefix}gaps", 0, -1) == []
        client.close()
    finally:
        relay.stop()
