"""Helpers of the Redis Streams tests: the tests' Redis, a relay of durable watches."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from sqlnotify import Notifier
from sqlnotify.testing import EventRecorder
from support.watching import make_table

from .env import need_module, unavailable

if TYPE_CHECKING:
    from sqlnotify.relay import Relay

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url_or_skip() -> str:
    """The Redis of the tests (``SQLNOTIFY_TEST_REDIS_URL``); fails under CI when it is down."""
    redis = need_module("redis")
    url = os.environ.get("SQLNOTIFY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {url} does not answer: {exc}")
        unavailable(f"Redis at {url} does not answer: {exc}")
    return url


def durable_relay(
    engine: sa.Engine, schema: str, redis_url: str, prefix: str
) -> tuple[sa.Table, str, Relay]:
    """The ``item`` table (key only) in ``schema``, its name, and a relay (not started) of
    its inserts watched durably, named and prefixed ``prefix``."""
    from sqlnotify.relay import Relay  # imports redis: only once it is needed

    table = make_table(engine, schema, columns=())
    name = f"{schema}.item"
    relay = Relay(
        Notifier(engine).watch(name, "insert", durable=True),
        redis_url,
        name=prefix,
        stream_prefix=prefix,
    )
    return table, name, relay


def group_reader(
    engine: sa.Engine,
    redis_url: str,
    prefix: str,
    group: str,
    consumer: str,
    name: str,
    notifiers: list[Notifier],
) -> EventRecorder:
    """Start ``consumer`` of ``group`` reading the inserts of ``name`` from the streams
    (stopped at teardown through ``notifiers``); return the recorder of its events."""
    reader = Notifier.from_redis(
        engine, redis_url, group=group, consumer=consumer, stream_prefix=prefix
    ).watch(name, "insert", durable=True)
    notifiers.append(reader)
    events = EventRecorder()
    reader.subscribe(name, "insert")(events)
    reader.start()
    return events
