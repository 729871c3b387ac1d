"""The asyncio bridge on SQLite with an ``sqlite+aiosqlite`` engine."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from sqlnotify import ChangeEvent, Notifier, Operation
from sqlnotify.testing import async_wait_until

TIMEOUT = 10.0


def test_async_callbacks_streams_and_anotify_on_aiosqlite(
    sqlite_path: str, notifiers: list[Notifier]
) -> None:
    table = sa.Table(
        "note",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    engine = create_async_engine(f"sqlite+aiosqlite:///{sqlite_path}")
    notifier = Notifier(engine)
    notifiers.append(notifier)
    notifier.watch(table, Operation.INSERT, extra_columns=["body"])
    calls: list[tuple[str, int, Any]] = []

    @notifier.subscribe(table, Operation.INSERT)
    async def on_note(event: ChangeEvent) -> None:
        calls.append(
            (event.extra_columns["body"], threading.get_ident(), asyncio.get_running_loop())
        )

    async def main() -> tuple[list[ChangeEvent], int, Any]:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
        async with notifier:
            stream = notifier.stream(table, Operation.INSERT, filters={"body": "second"})
            async with engine.begin() as conn:
                await conn.execute(table.insert(), [{"body": "first"}, {"body": "second"}])
            await notifier.anotify(table, Operation.INSERT, payload={"id": 99, "body": "custom"})
            await async_wait_until(lambda: len(calls) == 3, TIMEOUT, "three callbacks")
        got = [e async for e in stream]  # ended by the stop, buffered events first
        await engine.dispose()
        return got, threading.get_ident(), asyncio.get_running_loop()

    streamed, thread, loop = asyncio.run(main())
    assert [c[0] for c in calls] == ["first", "second", "custom"]
    assert {(c[1], c[2]) for c in calls} == {(thread, loop)}
    assert [e.extra_columns["body"] for e in streamed] == ["second"]
    assert not notifier.is_running
