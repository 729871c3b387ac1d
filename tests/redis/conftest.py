"""Fixtures of the Redis Streams tests: a Redis to talk to, a test's own stream prefix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from support.env import need_module
from support.streams import redis_url_or_skip
from support.watching import make_table, stopped_at_end

from sqlnotify.relay import Relay

redis = need_module("redis")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis of the tests: see :func:`support.streams.redis_url_or_skip`."""
    return redis_url_or_skip()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A stream prefix of the test's own; its streams are deleted afterwards."""
    value = f"t{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=value + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    """Collects relays a test creates and stops them all at the end."""
    yield from stopped_at_end()


@pytest.fixture
def item(pg_schema_engine: sa.Engine, schema: str) -> sa.Table:
    """The ``item`` table (an integer key ``id`` only), created in the test's schema."""
    return make_table(pg_schema_engine, schema, columns=())
