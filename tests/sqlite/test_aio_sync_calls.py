"""Sync calls from async code: start() in a running loop warns; acleanup() is cleanup()'s twin."""

from __future__ import annotations

import asyncio
import warnings

import pytest
import sqlalchemy as sa
from support.sqlite import file_engine, trigger_names

from sqlnotify import Notifier


@pytest.fixture
def engine(sqlite_path: str) -> sa.Engine:
    engine = file_engine(sqlite_path, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    yield engine
    engine.dispose()


def sqlnotify_triggers(engine: sa.Engine) -> list[str]:
    return trigger_names(engine, "sqlnotify%")


def test_acleanup_removes_the_triggers_off_the_loop(engine: sa.Engine) -> None:
    notifier = Notifier(engine)
    notifier.watch("notes", "insert").watch("notes", "delete")
    notifier.install()
    assert len(sqlnotify_triggers(engine)) == 2

    async def main() -> int:
        return await notifier.acleanup()

    dropped = asyncio.run(main())
    assert dropped >= 2
    assert sqlnotify_triggers(engine) == []
    notifier.dialect.close()


def test_sync_start_inside_a_running_loop_warns(engine: sa.Engine) -> None:
    notifier = Notifier(engine)
    notifier.watch("notes", "insert")

    async def main() -> None:
        with pytest.warns(RuntimeWarning, match="start\\(\\) was called from a running event loop"):
            notifier.start()
        try:
            assert notifier.is_running
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                notifier.start()  # already running: nothing to warn about
        finally:
            notifier.stop()
        with pytest.warns(RuntimeWarning, match="use 'await notifier.astart\\(\\)'"), notifier:
            pass

    asyncio.run(main())


def test_sync_start_outside_a_loop_does_not_warn(engine: sa.Engine) -> None:
    notifier = Notifier(engine)
    notifier.watch("notes", "insert")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with notifier:
            assert notifier.is_running
