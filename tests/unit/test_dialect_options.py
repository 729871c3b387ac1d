"""The SQLite and MySQL dialects' keyword options: checked, each error naming the fix."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sqlnotify.dialects.mysql.options import MySQLOptions
from sqlnotify.dialects.sqlite.options import SQLiteOptions
from sqlnotify.exceptions import SQLNotifyConfigurationError

PARSERS = [
    pytest.param(SQLiteOptions.parse, "sqlite", "an SQLite", id="sqlite"),
    pytest.param(MySQLOptions.parse, "mysql", "a MySQL", id="mysql"),
]


@pytest.mark.parametrize(("parse", "prefix", "database"), PARSERS)
def test_an_unknown_keyword_is_refused_with_the_valid_ones(
    parse: Any, prefix: str, database: str
) -> None:
    with pytest.raises(SQLNotifyConfigurationError) as info:
        parse({f"{prefix}_retension": 10})
    message = str(info.value)
    assert f"unknown option '{prefix}_retension' for {database} notifier" in message
    assert f"{prefix}_retention" in message and f"{prefix}_poll_interval" in message


@pytest.mark.parametrize(("parse", "prefix", "database"), PARSERS)
@pytest.mark.parametrize("bad", [-1, "10", True, None, 0.0005])
def test_a_poll_interval_must_be_seconds_of_at_least_a_millisecond(
    parse: Any, prefix: str, database: str, bad: Any
) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match=r"of at least 0\.001, not"):
        parse({f"{prefix}_poll_interval": bad})


@pytest.mark.parametrize(("parse", "prefix", "database"), PARSERS)
def test_seconds_take_numbers_and_timedeltas(parse: Any, prefix: str, database: str) -> None:
    options = parse(
        {f"{prefix}_retention": dt.timedelta(minutes=2), f"{prefix}_poll_interval": 0.25}
    )
    assert (options.retention, options.poll_interval) == (120.0, 0.25)
    assert parse({}).retention == 3600.0


def test_flags_and_sources_are_checked() -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="sqlite_wal must be True or False"):
        SQLiteOptions.parse({"sqlite_wal": "yes"})
    with pytest.raises(SQLNotifyConfigurationError, match="'triggers', 'binlog', 'auto'"):
        MySQLOptions.parse({"mysql_source": "replica"})
    assert MySQLOptions.parse({"mysql_source": "auto"}).source == "auto"
    assert SQLiteOptions.parse({"sqlite_inotify": False}).inotify is False
