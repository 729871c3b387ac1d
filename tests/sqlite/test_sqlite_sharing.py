"""One SQLite file shared by several applications: the same ownership rules as PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from support.sqlite import file_engine, trigger_names

from sqlnotify import Notifier, SQLNotifyConfigurationError
from sqlnotify.testing import EventRecorder, wait_until

TIMEOUT = 10.0


@pytest.fixture
def engine(sqlite_path: str) -> Iterator[sa.Engine]:
    engine = file_engine(
        sqlite_path,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, email TEXT DEFAULT 'a@x',"
        " total INTEGER DEFAULT 7, status TEXT DEFAULT 'new')",
    )
    yield engine
    engine.dispose()


triggers = trigger_names


def app(
    notifiers: list[Notifier], engine: sa.Engine, columns: list[str], **kw: object
) -> tuple[Notifier, EventRecorder]:
    n = Notifier(engine, **kw)  # type: ignore[arg-type]
    notifiers.append(n)
    n.watch("orders", "insert", extra_columns=columns)
    rec = EventRecorder()
    n.subscribe("orders", "insert")(rec)
    return n, rec


def insert(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO orders DEFAULT VALUES")


def test_applications_with_different_specs_keep_their_own_triggers(
    engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    specs = [["email"], ["total"], ["email", "status"]]
    apps = [app(notifiers, engine, cols, cleanup_on_start=True, cleanup_grace=0) for cols in specs]
    for n, _ in apps:
        n.start()
    for n, _ in apps:
        wait_until(lambda n=n: n._owners.cleaned, TIMEOUT, "each deferred cleanup")
    assert len(triggers(engine)) == 3
    insert(engine)
    expected = [{"email": "a@x"}, {"total": 7}, {"email": "a@x", "status": "new"}]
    for (_, rec), want in zip(apps, expected, strict=True):
        assert dict(rec.wait_for(1, TIMEOUT)[0].extra_columns) == want
    rows = apps[0][0].dialect.status()
    assert sorted(r["spec"]["columns"] for r in rows) == sorted(specs)
    assert all([u["live"] for u in r["users"]] == [True] for r in rows)
    # A stopped application's trigger: kept for the grace period, then removable.
    stopped, _ = apps[1]
    stopped.stop()
    keeper = Notifier(engine)  # default grace: one day
    keeper.watch("orders", "update")
    assert keeper.cleanup() == 0
    assert apps[0][0].cleanup() == 1
    assert stopped.watches[0].channel not in triggers(engine)
    assert len(triggers(engine)) == 2


def test_rolling_restarts_change_no_trigger(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier]
) -> None:
    def schema_version() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA schema_version").scalar_one())

    versions = {"v1": ["email"], "v2": ["email", "total"]}
    running = [app(notifiers, engine, versions["v1"], cleanup_on_start=True)]
    running[0][0].start()
    before = None
    for target in ("v2", "v1", "v2"):
        running[0][0].stop()
        running[0] = app(notifiers, engine, versions[target], cleanup_on_start=True)
        running[0][0].start()
        wait_until(lambda: running[0][0]._owners.cleaned, TIMEOUT, "the deferred cleanup")
        if before is None:
            before = schema_version()
        else:
            assert schema_version() == before, "DDL after the first round"
    assert len(triggers(engine)) == 2
    insert(engine)
    assert dict(running[0][1].wait_for(1, TIMEOUT)[0].extra_columns) == {"email": "a@x", "total": 7}


def test_uninstall_spares_a_trigger_another_notifier_uses(
    engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    live, rec = app(notifiers, engine, ["email"], cleanup_grace=0)
    live.start()
    other, _ = app(notifiers, engine, ["email"], cleanup_grace=0)
    assert [s.state for s in other.install()] == ["unchanged"]
    assert other.uninstall() == 0  # live is on it
    insert(engine)
    assert rec.wait_for(1, TIMEOUT)[0].extra_columns == {"email": "a@x"}
    live.stop(cleanup=True)  # the last user: removed
    assert triggers(engine) == []


def test_status_shows_spec_users_and_last_seen(
    engine: sa.Engine, sqlite_path: str, notifiers: list[Notifier]
) -> None:
    from click.testing import CliRunner

    from sqlnotify.cli import main

    n, _ = app(notifiers, engine, ["email"])
    n.start()
    result = CliRunner().invoke(main, ["status", f"sqlite:///{sqlite_path}"])
    assert result.exit_code == 0, result.output
    assert "spec: keys=['id'], columns=['email']" in result.output
    assert f"pid {os.getpid()}: live, last seen " in result.output
    n.stop()
    result = CliRunner().invoke(main, ["status", f"sqlite:///{sqlite_path}"])
    assert f"pid {os.getpid()}: stopped, last seen " in result.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lock_timeout", 0, "lock_timeout must be a positive number"),
        ("install_timeout", "30", "install_timeout must be a positive number"),
        ("install_timeout", 0.1, "must be at least lock_timeout"),
        ("cleanup_grace", -1, "cleanup_grace must be a non-negative number"),
    ],
)
def test_bad_bounds_are_named(engine: sa.Engine, option: str, value: object, message: str) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match=message):
        Notifier(engine, **{option: value})  # type: ignore[arg-type]
