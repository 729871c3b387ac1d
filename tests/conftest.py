"""Shared fixtures: real databases, one fresh schema (or SQLite file) per test.

PostgreSQL is found through ``SQLNOTIFY_TEST_POSTGRES_URL`` (default: the
local server on 127.0.0.1:5432).  When none answers, a throwaway server is
started from the local PostgreSQL binaries (:mod:`support.pgserver`); without
binaries the PostgreSQL tests are skipped, except under ``CI=true`` where
that is an error.

Markers come from the folder a test lives in (``postgresql/``, ``sqlite/``,
``unit/``, ``adapters/``, ``docs/``, ``conformance/``) and from the fixtures it uses: a test
that uses a PostgreSQL fixture is marked ``postgresql`` wherever it lives,
one that uses an SQLite file ``sqlite``.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from support import mysql as mysql_support
from support.env import need_module, unavailable
from support.mariadbserver import ThrowawayMariaDB, have_mariadb
from support.mysqlserver import ThrowawayMySQL, mysql_missing
from support.pgserver import IN_CI, ThrowawayPostgres
from support.watching import Watched, stopped_at_end
from support.watching import watched as watched_by

from sqlnotify import Notifier
from sqlnotify._pipeline.listener import Listener

DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"

#: The marker each test folder gives its tests.
FOLDER_MARKERS = {
    "unit": "unit",
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "adapters": "adapters",
    "docs": "docs",
    "conformance": "conformance",
    "redis": "redis",
    "mysql": "mysql",
}
#: The marker a fixture gives the tests that use it, wherever they live.
FIXTURE_MARKERS = {
    "pg_url": "postgresql",
    "sqlite_path": "sqlite",
    "mysql_url": "mysql",
    "binlog_server": "mysql",
    "mysql_server": "mysql",
    "each_mysql_engine": "mysql",
    "each_binlog_server": "mysql",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        names = {FOLDER_MARKERS[folder]} if folder in FOLDER_MARKERS else set()
        fixtures = getattr(item, "fixturenames", ())
        names |= {marker for name, marker in FIXTURE_MARKERS.items() if name in fixtures}
        for name in sorted(names - {m.name for m in item.iter_markers()}):
            item.add_marker(name)


def _reachable(url: str) -> bool:
    import psycopg2

    from sqlnotify.dialects.postgresql import listener_dsn

    dsn = listener_dsn(sa.make_url(url))
    dsn["connect_timeout"] = "3"
    try:
        psycopg2.connect(**dsn).close()
    except psycopg2.Error:
        return False
    return True


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("SQLNOTIFY_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    if _reachable(url):
        yield url
        return
    if not ThrowawayPostgres.available():
        _unavailable(f"no PostgreSQL at {url} and no local PostgreSQL binaries to start one")
    server = ThrowawayPostgres()
    try:
        yield server.url
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url, pool_size=5, max_overflow=20)
    yield engine
    engine.dispose()


@pytest.fixture
def schema(pg_engine: sa.Engine) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped with everything in it after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    yield name
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def pg_schema_engine(pg_url: str, schema: str) -> Iterator[sa.Engine]:
    """An engine whose search_path is the test's own schema, so unqualified names land there."""
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> str:
    url = mysql_support.mysql_url()
    if not mysql_support.reachable(url):
        unavailable(f"no MySQL/MariaDB server at {url}")
    return url


@pytest.fixture
def mysql_engine(mysql_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh MySQL database, dropped after the test."""
    with mysql_support.fresh_database(mysql_url) as engine:
        yield engine


@pytest.fixture(scope="session")
def binlog_server() -> Iterator[ThrowawayMariaDB]:
    """A private MariaDB with the binary log on (the binlog source's tests change its settings)."""
    need_module("pymysqlreplication")
    if not have_mariadb():
        if IN_CI:
            pytest.fail("the binlog tests cannot run in CI: no mariadbd", pytrace=False)
        unavailable("mariadb-install-db/mariadbd are not installed")
    server = ThrowawayMariaDB()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def binlog_engine(binlog_server: ThrowawayMariaDB) -> Iterator[sa.Engine]:
    """An engine on a fresh database of the binlog server, dropped after the test."""
    with mysql_support.fresh_database(binlog_server.url) as engine:
        yield engine


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[ThrowawayMySQL]:
    """A private MySQL (not MariaDB; binary log and GTIDs on), from the Debian root of
    ``SQLNOTIFY_TEST_MYSQL_ROOT``: both sources run on it."""
    need_module("pymysqlreplication")
    missing = mysql_missing()
    if missing is not None:
        unavailable(missing)
    server = ThrowawayMySQL()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def mysql_server_engine(mysql_server: ThrowawayMySQL) -> Iterator[sa.Engine]:
    """An engine on a fresh database of the private MySQL, dropped after the test."""
    with mysql_support.fresh_database(mysql_server.url) as engine:
        yield engine


#: The two servers a test of ``each_...`` runs on: MariaDB and MySQL.
EACH_MYSQL = [pytest.param("mariadb", id="mariadb"), pytest.param("mysql", id="mysql")]


@pytest.fixture(params=EACH_MYSQL)
def each_mysql_engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """A fresh database on the shared MariaDB, then on the private MySQL (a module may
    override ``mysql_engine`` with it: its trigger source tests then run on both)."""
    if request.param == "mariadb":
        url: str = request.getfixturevalue("mysql_url")
    else:
        url = request.getfixturevalue("mysql_server").url
    with mysql_support.fresh_database(url) as engine:
        yield engine


@pytest.fixture(params=EACH_MYSQL)
def each_binlog_server(request: pytest.FixtureRequest) -> ThrowawayMariaDB | ThrowawayMySQL:
    """The private MariaDB, then the private MySQL (binlog source; settings may change)."""
    name = "binlog_server" if request.param == "mariadb" else "mysql_server"
    server: ThrowawayMariaDB | ThrowawayMySQL = request.getfixturevalue(name)
    return server


@pytest.fixture
def each_binlog_engine(
    each_binlog_server: ThrowawayMariaDB | ThrowawayMySQL,
) -> Iterator[sa.Engine]:
    """An engine on a fresh database of :func:`each_binlog_server`, dropped after the test."""
    with mysql_support.fresh_database(each_binlog_server.url) as engine:
        yield engine


@pytest.fixture
def sqlite_path(tmp_path: os.PathLike[str]) -> str:
    return os.path.join(os.fspath(tmp_path), "test.db")


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten the listener's reconnect backoff for tests that break connections."""
    monkeypatch.setattr(Listener, "INITIAL_DELAY", 0.05)
    monkeypatch.setattr(Listener, "MAX_DELAY", 0.5)


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    """Collects notifiers a test creates and stops them all at the end."""
    yield from stopped_at_end()


@pytest.fixture
def watched(notifiers: list[Notifier]) -> Callable[..., Watched]:
    """``watched(engine, table, *operations, options=..., start=True, **watch)``: see
    :func:`support.watching.watched`; the notifiers it makes are stopped at teardown."""
    return functools.partial(watched_by, notifiers)
