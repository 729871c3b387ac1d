"""Fixtures of the Redis Streams tests: a Redis to talk to, a test's own stream prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from sqlnotify.relay import Relay

redis = pytest.importorskip("redis")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis of the tests (``SQLNOTIFY_TEST_REDIS_URL``); fails under CI when it is down."""
    url = os.environ.get("SQLNOTIFY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {url} does not answer: {exc}")
        pytest.skip(f"Redis at {url} does not answer: {exc}")
    return url


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
    made: list[Relay] = []
    yield made
    for relay in made:
        relay.stop()
