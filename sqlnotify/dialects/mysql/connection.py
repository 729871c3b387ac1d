"""Connections of the MySQL dialect: PyMySQL, whatever driver the application's engine uses.

The listener, installation and the stores each open their own PyMySQL
connection from the engine's URL (``mysql+mysqldb``, ``mysql+aiomysql``,
``mariadb+pymysql`` ... all name the same server), with every network wait
bounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from ...exceptions import SQLNotifyConfigurationError

__all__ = ["MySQLServer", "pymysql_url"]

#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 5.0
#: Seconds one read or write on the socket may block.
IO_TIMEOUT = 30.0


def pymysql_url(url: sa.URL) -> sa.URL:
    """The same server and database through PyMySQL."""
    return url.set(drivername=f"{url.get_backend_name()}+pymysql")


class MySQLServer:
    """Opens PyMySQL connections to the engine's server."""

    def __init__(self, url: sa.URL) -> None:
        try:
            import pymysql
        except ImportError as exc:
            raise SQLNotifyConfigurationError(
                "sqlnotify's MySQL dialect needs PyMySQL (the mysql extra): pip install pymysql"
            ) from exc
        self.driver: Any = pymysql
        self.url = pymysql_url(url)
        q = dict(url.query)
        self._kwargs: dict[str, Any] = {
            "host": url.host or "localhost",
            "port": url.port or 3306,
            "user": url.username or "root",
            "password": url.password or "",
            "database": url.database or None,
            "charset": str(q.get("charset", "utf8mb4")),
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": IO_TIMEOUT,
            "write_timeout": IO_TIMEOUT,
        }
        if "unix_socket" in q:
            self._kwargs["unix_socket"] = str(q["unix_socket"])
        #: Errors that mean the connection is unusable.
        self.Error: type[Exception] = pymysql.err.Error
        self.OperationalError: type[Exception] = pymysql.err.OperationalError

    def connect(self, read_timeout: float | None = None, database: str | None = None) -> Any:
        """A new autocommit connection (used by one thread at a time).

        ``read_timeout`` also bounds the connection attempt.
        """
        kwargs = dict(self._kwargs)
        if read_timeout is not None:
            kwargs["read_timeout"] = read_timeout
            kwargs["connect_timeout"] = max(0.1, min(CONNECT_TIMEOUT, read_timeout))
        if database is not None:
            kwargs["database"] = database
        return self.driver.connect(**kwargs)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.connect()
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()


def execute(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement; its rows (empty for a statement without)."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    return list(rows) if rows else []


def rowcount(conn: Any, sql: str, params: Any = None) -> int:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return int(cur.rowcount)
