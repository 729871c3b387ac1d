"""``sqlnotify_lifespan``: the notifier runs for an ASGI app's lifespan and always stops."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from sqlnotify import ChangeEvent, Notifier, Operation
from sqlnotify.adapters.asgi import sqlnotify_lifespan
from sqlnotify.testing import EventRecorder

pytestmark = pytest.mark.postgresql


class StartupFailed(Exception):
    pass


@asynccontextmanager
async def lifespan_of(app: Any) -> AsyncIterator[None]:
    """Drive an ASGI app's lifespan protocol, as a server does around serving requests."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    message = await asyncio.wait_for(from_app.get(), 30.0)
    if message["type"] == "lifespan.startup.failed":
        await asyncio.wait_for(task, 30.0)  # the app re-raises its startup error here
        raise StartupFailed(message.get("message"))
    assert message["type"] == "lifespan.startup.complete", message
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(from_app.get(), 30.0)
        assert message["type"] == "lifespan.shutdown.complete", message
        await asyncio.wait_for(task, 30.0)


def make_notifier(engine: sa.Engine, schema: str) -> tuple[Notifier, sa.Table]:
    table = sa.Table(
        "thing",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("label", sa.Text),
        schema=schema,
    )
    table.metadata.create_all(engine)
    notifier = Notifier(engine)
    notifier.watch(table, Operation.INSERT, extra_columns=["label"])
    return notifier, table


def test_the_lifespan_runs_the_notifier_on_the_apps_loop(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    notifier, table = make_notifier(pg_engine, schema)
    notifiers.append(notifier)
    recorder = EventRecorder()
    where: list[Any] = []

    @notifier.subscribe(table, Operation.INSERT)
    async def on_insert(event: ChangeEvent) -> None:
        where.append((threading.get_ident(), asyncio.get_running_loop()))
        recorder(event)

    app = FastAPI(lifespan=sqlnotify_lifespan(notifier))

    @app.post("/things")
    async def create(label: str) -> dict[str, Any]:
        app_loop.append((threading.get_ident(), asyncio.get_running_loop()))

        def write() -> int:
            with pg_engine.begin() as conn:
                return int(conn.execute(table.insert().values(label=label)).inserted_primary_key[0])

        return {"id": await asyncio.to_thread(write)}

    app_loop: list[Any] = []

    async def main() -> None:
        async with lifespan_of(app):
            assert notifier.is_running
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                response = await client.post("/things", params={"label": "hello"})
            assert response.status_code == 200
            event = (await asyncio.to_thread(recorder.wait_for, 1, 10.0))[0]
            assert event.id == response.json()["id"]
            assert event.extra_columns["label"] == "hello"
        assert not notifier.is_running

    asyncio.run(main())
    assert where == app_loop
    assert len(where) == 1


def test_the_notifier_stops_when_startup_fails_after_it(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    notifier, _ = make_notifier(pg_engine, schema)
    notifiers.append(notifier)
    seen_running: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with sqlnotify_lifespan(notifier) as started:
            assert started is notifier
            seen_running.append(notifier.is_running)
            raise RuntimeError("the database migration failed")
            yield  # pragma: no cover

    app = FastAPI(lifespan=lifespan)

    async def main() -> None:
        async with lifespan_of(app):
            raise AssertionError("startup should have failed")  # pragma: no cover

    with pytest.raises(RuntimeError, match="migration failed"):
        asyncio.run(main())
    assert seen_running == [True]
    assert not notifier.is_running
    assert not [t for t in threading.enumerate() if t.name.startswith("sqlnotify-")]


def test_the_notifier_stops_when_the_app_is_cancelled(
    pg_engine: sa.Engine, schema: str, notifiers: list[Notifier]
) -> None:
    notifier, _ = make_notifier(pg_engine, schema)
    notifiers.append(notifier)

    async def main() -> None:
        started = asyncio.Event()

        async def serve() -> None:
            async with sqlnotify_lifespan(notifier):
                started.set()
                await asyncio.Event().wait()  # serve forever

        task = asyncio.create_task(serve())
        await asyncio.wait_for(started.wait(), 10.0)
        assert notifier.is_running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not notifier.is_running


def test_sqlnotify_lifespan_needs_a_notifier() -> None:
    with pytest.raises(TypeError, match="needs a Notifier"):
        sqlnotify_lifespan(object())  # type: ignore[arg-type]


def test_importing_the_adapter_imports_no_framework() -> None:
    code = (
        "import sys, sqlnotify.adapters.asgi\n"
        "loaded = [m for m in ('starlette', 'fastapi', 'uvicorn', 'anyio') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
