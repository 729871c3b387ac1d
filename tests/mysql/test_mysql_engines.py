"""The application's engine may use any MySQL driver: sqlnotify's own connections use PyMySQL.

Asynchronous engines (``mysql+aiomysql``, ``mysql+asyncmy``) write; the
notifier, given the ``AsyncEngine``, reads the same database through PyMySQL.
A ``mysql+mysqldb`` engine (mysqlclient, which builds against Debian's
``libmariadb-dev``: ``.ci/run`` installs it) writes the same way, given to the
notifier as it is.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from support.env import need_module

from sqlnotify import Notifier
from sqlnotify.dialects.mysql.connection import pymysql_url
from sqlnotify.testing import EventRecorder

TIMEOUT = 20.0


@pytest.fixture
def mysql_engine(each_mysql_engine: sa.Engine) -> sa.Engine:
    """This module's tests run on the shared MariaDB and on the private MySQL."""
    return each_mysql_engine


def orders(engine: sa.Engine) -> sa.Table:
    table = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer", sa.String(40)),
    )
    table.metadata.create_all(engine)
    return table


@pytest.mark.parametrize("driver", ["aiomysql", "asyncmy"])
def test_an_async_engine_of_another_driver_writes_and_the_notifier_reads(
    mysql_engine: sa.Engine, driver: str
) -> None:
    need_module(driver)
    from sqlalchemy.ext.asyncio import create_async_engine

    table = orders(mysql_engine)
    url = mysql_engine.url.set(drivername=f"{mysql_engine.url.get_backend_name()}+{driver}")
    engine = create_async_engine(url)
    notifier = Notifier(engine)
    notifier.watch(table, "insert", extra_columns=["customer"])
    recorder = EventRecorder()
    notifier.subscribe(table, "insert")(recorder)

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(table.insert().values(id=1, customer="ada"))
        await engine.dispose()

    with notifier:
        asyncio.run(write())
        (event,) = recorder.wait_for(1, TIMEOUT)
    assert (event.id, event.row["customer"]) == (1, "ada")


@pytest.mark.parametrize("source", ["triggers", "binlog"])
def test_a_mysqldb_engine_writes_and_the_notifier_reads(
    each_binlog_engine: sa.Engine, notifiers: list[Notifier], source: str
) -> None:
    need_module("MySQLdb")
    table = orders(each_binlog_engine)
    url = each_binlog_engine.url
    engine = sa.create_engine(url.set(drivername=f"{url.get_backend_name()}+mysqldb"))
    assert engine.dialect.driver == "mysqldb"
    notifier = Notifier(engine, mysql_source=source)
    notifiers.append(notifier)
    notifier.watch(table, "insert", extra_columns=["customer"])
    recorder = EventRecorder()
    notifier.subscribe(table, "insert")(recorder)
    notifier.start()
    try:
        with engine.begin() as conn:
            conn.execute(table.insert().values(id=1, customer="grace"))
        (event,) = recorder.wait_for(1, TIMEOUT)
    finally:
        engine.dispose()
    assert (event.id, event.row["customer"]) == (1, "grace")


@pytest.mark.parametrize("driver", ["mysqldb", "aiomysql", "asyncmy", "mariadbconnector"])
def test_every_driver_url_names_the_same_server_through_pymysql(driver: str) -> None:
    url = sa.make_url(f"mariadb+{driver}://app:pw@db.internal:3307/shop?charset=utf8mb4")
    same = pymysql_url(url)
    assert same.drivername == "mariadb+pymysql"
    assert (same.username, same.password, same.host, same.port, same.database) == (
        "app",
        "pw",
        "db.internal",
        3307,
        "shop",
    )
    assert dict(same.query) == {"charset": "utf8mb4"}
