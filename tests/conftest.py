"""Shared fixtures: real databases, one fresh schema (or SQLite file) per test.

PostgreSQL is found through ``SQLNOTIFY_TEST_POSTGRES_URL`` (default: the
local server on 127.0.0.1:5432).  When none answers, a throwaway server is
started from the local PostgreSQL binaries with pytest-postgresql; without
binaries the PostgreSQL tests are skipped, except under ``CI=true`` where
that is an error.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sqlnotify import Notifier
from sqlnotify._pipeline.listener import Listener

DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl") or sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if isinstance(found, list):
        return found[-1] if found else None
    return found


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
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        _unavailable(f"no PostgreSQL at {url} and no local PostgreSQL binaries to start one")
    from pytest_postgresql.executors.proc import PostgreSQLExecutor

    tmp = tempfile.mkdtemp(prefix="sqlnotify-pg-")
    port = 54329
    executor = PostgreSQLExecutor(
        executable=pg_ctl,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        datadir=os.path.join(tmp, "data"),
        unixsocketdir=tmp,
        logfile=os.path.join(tmp, "log"),
        startparams="-w",
        dbname="test",
    )
    try:
        executor.start()
    except Exception as exc:  # initdb refuses to run as root, for one
        _unavailable(f"no PostgreSQL at {url}, and starting one failed: {exc}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        executor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


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
    created: list[Notifier] = []
    yield created
    for notifier in created:
        notifier.stop()
