"""The relay's health: lag in events and seconds measured from the journal, entries, last error."""

from __future__ import annotations

import signal
from typing import Any

import redis
import sqlalchemy as sa
from test_gaps import PrivateRedis, private_redis, setup  # noqa: F401
from test_groups import write

from sqlnotify.dialects.redis import stream_key
from sqlnotify.relay import Relay
from sqlnotify.testing import wait_until


def test_lag_grows_while_redis_blocks_the_relay_and_returns_to_zero(
    pg_schema_engine: sa.Engine,
    schema: str,
    private_redis: PrivateRedis,  # noqa: F811
    relays: list[Relay],
) -> None:
    prefix = "h:"
    table, _, relay = setup(pg_schema_engine, schema, private_redis.url, prefix, relays)
    write(pg_schema_engine, table, range(1, 4))
    wait_until(lambda: relay.health()["written"] == 3, timeout=20, message="3 entries")

    def health() -> dict[str, Any]:
        return relay.health()

    settled = wait_until(
        lambda: (h := health())["lag_measured_at"] and h["lag_events"] == 0 and h,
        timeout=20,
        message="no lag once the events are in the streams",
    )
    assert settled["lag_seconds"] == 0 and settled["last_error"] is None
    proc = private_redis.proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # Redis stops answering: the relay's XADD blocks
    try:
        write(pg_schema_engine, table, range(4, 9))
        first = wait_until(
            lambda: (h := health())["lag_events"] == 5 and h["lag_seconds"] > 0 and h,
            timeout=30,
            message="a lag of 5 events",
        )
        assert not first["lag_capped"]
        # The events keep waiting: their age grows, their count stays.
        wait_until(
            lambda: (
                (h := health())["lag_seconds"] > first["lag_seconds"] + 0.5 and h["lag_events"] == 5
            ),
            timeout=30,
            message="the lag in seconds to grow",
        )
        assert relay.health()["written"] == 3
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_until(
        lambda: (h := health())["lag_events"] == 0 and h["lag_seconds"] == 0,
        timeout=60,
        message="the lag back to 0",
    )
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    key = stream_key(prefix, next(w.channel for w in relay.notifier.watches))
    entries = client.xrange(key)
    client.close()
    # Each event once, though the append that timed out may have run when Redis woke up.
    assert sorted(int(f["j"]) for _, f in entries) == sorted({int(f["j"]) for _, f in entries})
    assert len(entries) == 8
