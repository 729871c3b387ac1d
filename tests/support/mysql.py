"""The MySQL/MariaDB server of the tests, and one fresh database per test.

Found through ``SQLNOTIFY_TEST_MYSQL_URL`` (default: MariaDB on
127.0.0.1:3306, user root without password).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

DEFAULT_MYSQL_URL = "mariadb+pymysql://root@127.0.0.1:3306/test"


def mysql_url() -> str:
    return os.environ.get("SQLNOTIFY_TEST_MYSQL_URL", DEFAULT_MYSQL_URL)


def reachable(url: str) -> bool:
    try:
        import pymysql
    except ImportError:
        return False
    u = sa.make_url(url)
    try:
        pymysql.connect(
            host=u.host,
            port=u.port or 3306,
            user=u.username,
            password=u.password or "",
            connect_timeout=3,
        ).close()
    except pymysql.err.Error:
        return False
    return True


@contextlib.contextmanager
def fresh_database(url: str) -> Iterator[sa.Engine]:
    """An engine on a new database, dropped with everything in it afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    engine = sa.create_engine(sa.make_url(url).set(database=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
