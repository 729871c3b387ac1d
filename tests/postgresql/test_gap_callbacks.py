"""``Notifier.on_gap``: sync callbacks on the dispatcher thread, async ones on the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from support.pg import TIMEOUT, execute, make_notifier
from support.watching import Watch

from sqlnotify import Gap, Notifier, SQLNotifyConfigurationError
from sqlnotify.testing import (
    async_wait_until,
    kill_listener_connection,
    wait_until,
)


def test_sync_gap_callback_runs_on_the_dispatcher_thread(
    Item: Any, pg_engine: sa.Engine, schema: str, watched: Watch, fast_reconnect: None
) -> None:
    n, rec = watched(pg_engine, Item, start=False)
    gaps: list[tuple[Gap, str]] = []

    @n.on_gap
    def resync(gap: Gap) -> None:
        gaps.append((gap, threading.current_thread().name))

    n.start()
    kill_listener_connection(n)
    wait_until(lambda: gaps, TIMEOUT, "a gap after the listener was cut off")
    gap, thread = gaps[0]
    assert isinstance(gap, Gap)
    assert gap.reason == "disconnected"
    assert gap.start <= gap.end and gap.start.tzinfo is not None
    assert n.watches[0].channel in gap.channels
    assert thread == "sqlnotify-dispatcher"
    execute(pg_engine, f'INSERT INTO "{schema}".items VALUES (1)')
    assert [e.id for e in rec.wait_for(1, TIMEOUT)] == [1]


def test_async_gap_callback_runs_on_the_loop(
    Item: Any, pg_engine: sa.Engine, notifiers: list[Notifier], fast_reconnect: None
) -> None:
    n = make_notifier(notifiers, pg_engine)
    n.watch(Item, "insert")
    seen: list[tuple[Gap, asyncio.AbstractEventLoop]] = []

    @n.on_gap
    async def resync(gap: Gap) -> None:
        seen.append((gap, asyncio.get_running_loop()))

    async def main() -> None:
        async with n:
            await asyncio.to_thread(kill_listener_connection, n)
            await async_wait_until(lambda: seen, TIMEOUT, "an async gap callback")
            assert seen[0][1] is asyncio.get_running_loop()
            assert seen[0][0].reason == "disconnected"

    asyncio.run(main())


def test_gap_callback_must_be_callable(pg_engine: sa.Engine) -> None:
    n = Notifier(pg_engine)
    with pytest.raises(SQLNotifyConfigurationError, match="callable"):
        n.on_gap(42)  # type: ignore[arg-type]
