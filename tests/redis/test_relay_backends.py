"""The active relay holds one PostgreSQL backend: its listening session also reads the journal."""

from __future__ import annotations

import uuid

import redis
import sqlalchemy as sa
from support.streams import durable_relay
from test_groups import write

from sqlnotify.dialects.redis import stream_key
from sqlnotify.relay import Relay
from sqlnotify.testing import wait_until

SESSIONS_SQL = sa.text(
    "SELECT a.pid, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
    " AND l.locktype = 'advisory' AND l.granted)"
    " FROM pg_stat_activity a WHERE a.application_name LIKE :app"
)


def test_the_active_relay_reads_the_journal_on_its_one_locked_listening_session(
    pg_schema_engine: sa.Engine, schema: str, redis_url: str, prefix: str, relays: list[Relay]
) -> None:
    app = f"relay-{uuid.uuid4().hex[:10]}"
    url = pg_schema_engine.url.update_query_dict({"application_name": app})
    engine = sa.create_engine(url)
    try:
        table, _, relay = durable_relay(engine, schema, redis_url, prefix)
        relays.append(relay)
        relay.start()
        wait_until(lambda: relay.active, timeout=20, message="the relay to become active")
        write(pg_schema_engine, table, range(1, 21), per_transaction=5)
        wait_until(lambda: relay.health()["written"] == 20, timeout=20, message="20 entries")
        engine.dispose()  # what installing the triggers used

        def sessions() -> list[tuple[int, bool]]:
            with pg_schema_engine.connect() as conn:
                return [(r[0], r[1]) for r in conn.execute(SESSIONS_SQL, {"app": f"{app}%"})]

        # The health thread lets its own connection go once the relay keeps up.
        (only,) = wait_until(
            lambda: len(found := sessions()) == 1 and found,
            timeout=20,
            message="one backend",
        )
        assert only[1]  # the relay's consumer lock: the listening session
        write(pg_schema_engine, table, range(21, 31), per_transaction=5)
        wait_until(lambda: relay.health()["written"] == 30, timeout=20, message="30 entries")
        assert len(sessions()) == 1
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        key = stream_key(prefix, relay.notifier.watches[0].channel)
        assert client.xlen(key) == 30
        client.close()
    finally:
        engine.dispose()
