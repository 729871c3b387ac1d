"""The ``backend`` fixture: every conformance test runs once per dialect.

``memory`` (the in-memory dialect, no database), ``sqlite`` (a temporary
file), ``postgresql`` (a schema of its own, marked ``postgresql``) and
``mariadb`` (a database of its own, marked ``mysql``) and ``mariadb-binlog``
(the binlog source, on a private server with the binary log on).
``mariadb`` (a database of its own, marked ``mysql``) and ``redis``
(PostgreSQL read through relays into Redis Streams by consumer-group
notifiers, marked ``redis``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from backends import (
    Backend,
    MemoryBackend,
    MySQLBackend,
    MySQLBinlogBackend,
    PostgresBackend,
    RedisBackend,
    SQLiteBackend,
)
from support.streams import redis_url_or_skip

from sqlnotify import Notifier

DIALECTS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mysql),
    pytest.param("mariadb-binlog", id="mariadb-binlog", marks=pytest.mark.mysql),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


#: Contract items the Redis backend does not meet, and why.
REDIS_SKIPS = {
    "test_the_condition_is_part_of_the_spec": "install states are the relay's (a consumer"
    " installs nothing and reports each watch unchanged)",
    "test_custom_notification": "a notifier reading Redis sends nothing: notify() goes through"
    " the database (a relay's notifier), which the other items cover",
    "test_gap_after_lost_journal_rows": "the relay does not carry a gap of its journal into the"
    " streams yet: journal rows pruned before the relay read them are not signalled",
}


@pytest.fixture
def redis_url() -> str:
    """The Redis of the tests: see :func:`support.streams.redis_url_or_skip`."""
    return redis_url_or_skip()


@pytest.fixture(params=DIALECTS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    notifiers: list[Notifier] = []
    own: sa.Engine | None = None
    made: Backend
    if request.param == "memory":
        own = sa.create_engine("sqlite://")
        made = MemoryBackend(own, notifiers)
    elif request.param == "sqlite":
        own = sa.create_engine(f"sqlite:///{request.getfixturevalue('sqlite_path')}")
        made = SQLiteBackend(own, notifiers)
    elif request.param == "redis":
        reason = REDIS_SKIPS.get(request.node.originalname)
        if reason is not None:
            pytest.skip(reason)
        engine = request.getfixturevalue("pg_schema_engine")
        made = RedisBackend(
            engine,
            notifiers,
            request.getfixturevalue("schema"),
            request.getfixturevalue("redis_url"),
        )
    elif request.param == "mariadb":
        made = MySQLBackend(request.getfixturevalue("mysql_engine"), notifiers)
    elif request.param == "mariadb-binlog":
        if request.node.path.name == "test_conditions.py":
            pytest.skip("where= conditions are SQL the server runs: the trigger source's")
        server = request.getfixturevalue("binlog_server")
        made = MySQLBinlogBackend(request.getfixturevalue("binlog_engine"), notifiers, server)
    else:
        engine = request.getfixturevalue("pg_schema_engine")
        made = PostgresBackend(engine, notifiers, request.getfixturevalue("schema"))
    try:
        yield made
    finally:
        # Before the schema or file goes.
        for notifier in notifiers:
            notifier.stop()
        if isinstance(made, RedisBackend):
            made.close()
        if own is not None:
            own.dispose()
