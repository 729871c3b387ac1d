"""A user's mistakes get one clear message: the words of each are asserted here."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from support.cli import Running, assert_one_line_error, run

from sqlnotify import Notifier, SQLNotifyConfigurationError


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    status: Mapped[str]


@pytest.fixture
def engine(sqlite_path: str) -> Any:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    yield engine
    engine.dispose()


def test_a_column_typo_gets_a_suggestion(engine: sa.Engine) -> None:
    notifier = Notifier(engine)
    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.watch(Customer, "insert", extra_columns=["nmae"])
    text = str(info.value)
    assert "extra_columns: column 'nmae' is not on model Customer (table 'customers')" in text
    assert "(did you mean 'name'?)" in text
    assert "its columns are: id, name, status" in text


def test_a_filter_typo_gets_a_suggestion(engine: sa.Engine) -> None:
    notifier = Notifier(engine)
    notifier.watch(Customer, "update", extra_columns=["status"])
    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.subscribe(Customer, "update", filters={"stauts": "paid"})
    assert "filter column 'stauts' is not in the payload" in str(info.value)
    assert "(did you mean 'status'?)" in str(info.value)


def test_an_option_typo_gets_a_suggestion_and_every_option() -> None:
    with pytest.raises(SQLNotifyConfigurationError) as info:
        Notifier(sa.create_engine("sqlite://"), drain_timout=5)
    text = str(info.value)
    assert text.startswith("unknown Notifier option 'drain_timout' (did you mean 'drain_timeout'?)")
    # The list comes from the signature: every keyword, the newest ones too.
    for name in ("start_timeout", "drain_timeout", "journal_schema", "sqlite_poll_interval"):
        assert name in text
    with pytest.raises(SQLNotifyConfigurationError, match="did you mean 'sqlite_wal'"):
        Notifier(sa.create_engine("sqlite://"), sqlite_wall=True)


def test_a_view_by_name_says_to_watch_the_table(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("CREATE VIEW active AS SELECT id, v FROM t")
    notifier = Notifier(engine)
    notifier.watch("active", "insert")
    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.start()
    text = str(info.value)
    assert "'active' is a view" in text
    assert "watch the table(s) the view reads from" in text


def test_a_model_over_a_view_says_to_watch_the_table(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("CREATE VIEW customers AS SELECT id, v AS name, v AS status FROM t")
    notifier = Notifier(engine)
    notifier.watch(Customer, "insert")
    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.start()
    assert "model Customer (insert on customers) is a view" in str(info.value)
    assert "watch the table(s) the view reads from" in str(info.value)


def test_a_view_without_a_key_mentions_views_up_front(engine: sa.Engine) -> None:
    view = sa.Table("report", sa.MetaData(), sa.Column("total", sa.Integer))
    with pytest.raises(SQLNotifyConfigurationError) as info:
        Notifier(engine).watch(view, "insert")
    assert "has no primary key" in str(info.value)
    assert "a view cannot be watched at all: watch the table it reads from" in str(info.value)


def test_a_table_never_created(engine: sa.Engine) -> None:
    notifier = Notifier(engine)
    notifier.watch(Customer, "insert")
    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.start()
    text = str(info.value)
    assert "table 'customers' of model Customer (insert on customers) does not exist" in text
    assert "create it first (metadata.create_all(engine), or your migrations)" in text


@pytest.mark.postgresql
def test_a_table_never_created_on_postgresql(pg_url: str, schema: str) -> None:
    engine = sa.create_engine(pg_url)
    table = sa.Table(
        "never", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema=schema
    )
    notifier = Notifier(engine)
    notifier.watch(table, "insert")
    with pytest.raises(SQLNotifyConfigurationError) as info:
        notifier.start()
    engine.dispose()
    assert f"table '{schema}.never'" in str(info.value)
    assert "does not exist in the database: create it first" in str(info.value)


def test_cli_app_given_as_a_file_path(tmp_path: Path) -> None:
    result = run("sql", "--app", "bad.py", cwd=tmp_path)
    assert_one_line_error(
        result,
        "--app 'bad.py' is a file path: --app takes module:attribute",
        "e.g. --app bad:notifier",
    )
    missing = run("sql", "--app", "nosuchmodule_xyz:notifier", cwd=tmp_path)
    assert_one_line_error(missing, "No module named", "--app takes module:attribute")


def test_cli_warnings_name_cli_flags(sqlite_path: str, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, item TEXT)")
    # An application's trigger built from a model whose types differ from the
    # table's: the same spec, another definition, so the command finds it outdated.
    declared = sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item", sa.Float),
    )
    app = Notifier(engine)
    app.watch(declared, "insert", extra_columns=["item"])
    app.install()
    app.dialect.close()
    proc = Running("listen", f"sqlite:///{sqlite_path}", "items:insert", "--columns", "item")
    try:
        line = proc.wait_stderr("left in place")
        proc.wait_stderr("listening")
    finally:
        code = proc.stop(signal.SIGINT)
    assert code == 0, proc.err_lines
    assert "sqlnotify listen uses installed triggers as they are" in line
    assert "sqlnotify install --app module:notifier" in line
    assert "revoke_on_model_change" not in "".join(proc.err_lines)
