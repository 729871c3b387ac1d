"""The ``backend`` fixture: every conformance test runs once per dialect.

``memory`` (the in-memory dialect, no database), ``sqlite`` (a temporary
file), ``postgresql`` (a schema of its own, marked ``postgresql``),
``mariadb`` (a database of its own on the shared MariaDB, marked ``mysql``),
``mariadb-binlog`` (the binlog source, on a private MariaDB with the binary
log on), ``mysql`` and ``mysql-binlog`` (both sources on a private MySQL,
see :mod:`support.mysqlserver`; marked ``mysql``) and ``redis`` (PostgreSQL
read through relays into Redis Streams by consumer-group notifiers, marked
``redis``).
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
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    pytest.param("mysql-binlog", id="mysql-binlog", marks=pytest.mark.mysql),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


#: Contract items the Redis backend does not meet, and why.
#: Contract items that do not apply to a backend: never collected for it.
NOT_APPLICABLE = {
    ("redis", "test_the_condition_is_part_of_the_spec"): "install states are the relay's (a"
    " consumer installs nothing and reports each watch unchanged)",
    ("redis", "test_custom_notification"): "a notifier reading Redis sends nothing: notify() goes"
    " through the database (a relay's notifier), which the other items cover",
}
#: Conditions are SQL the server runs: the trigger source's, not the binlog's.
TRIGGER_ONLY_FILES = {"test_conditions.py"}
BINLOG_BACKENDS = {"mariadb-binlog", "mysql-binlog"}
#: Items a backend does not pass yet: run, and expected to fail until built.
NOT_YET: dict[tuple[str, str], str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the contract items that do not apply to a backend (deselected, not skipped)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("backend") if callspec is not None else None
        original = getattr(item, "originalname", item.name)
        if (name, original) in NOT_APPLICABLE or (
            name in BINLOG_BACKENDS and item.path.name in TRIGGER_ONLY_FILES
        ):
            dropped.append(item)
            continue
        reason = NOT_YET.get((name, original))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


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
        server = request.getfixturevalue("binlog_server")
        made = MySQLBinlogBackend(request.getfixturevalue("binlog_engine"), notifiers, server)
    elif request.param == "mysql":
        made = MySQLBackend(request.getfixturevalue("mysql_server_engine"), notifiers)
    elif request.param == "mysql-binlog":
        server = request.getfixturevalue("mysql_server")
        made = MySQLBinlogBackend(request.getfixturevalue("mysql_server_engine"), notifiers, server)
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
