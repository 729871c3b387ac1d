"""Live updates over WebSockets: committed rows are broadcast to every connected client.

Clients connect to ``/ws`` and receive one JSON message per new user, new
post or changed user, whoever wrote the row.  Run it with::

    export DATABASE_URL=postgresql+asyncpg://user:pass@localhost/db
    uvicorn --app-dir examples websocket_broadcast:app

Without ``DATABASE_URL`` it uses ``sqlite+aiosqlite:///sqlnotify-example.db``, a file
in the working directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel

from sqlnotify import ChangeEvent, Notifier, Operation
from sqlnotify.adapters.asgi import sqlnotify_lifespan

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///sqlnotify-example.db")


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str
    name: str


class Post(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    title: str
    content: str
    user_id: int = Field(foreign_key="user.id")


engine = create_async_engine(DATABASE_URL)
sessions = async_sessionmaker(engine, expire_on_commit=False)


class Hub:
    """The connected WebSocket clients."""

    def __init__(self) -> None:
        self.clients: set[WebSocket] = set()

    async def join(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.clients.add(websocket)
        # Tells the client it will receive every broadcast from now on.
        await websocket.send_json({"type": "welcome"})

    def leave(self, websocket: WebSocket) -> None:
        self.clients.discard(websocket)

    async def broadcast(self, message: dict[str, Any]) -> None:
        for websocket in list(self.clients):
            try:
                await websocket.send_json(message)
            except Exception:  # the client went away mid-send
                self.leave(websocket)


hub = Hub()
notifier = Notifier(db_engine=engine)
notifier.watch(User, Operation.INSERT, extra_columns=["email", "name"])
notifier.watch(User, Operation.UPDATE)
notifier.watch(Post, Operation.INSERT, extra_columns=["title", "user_id"])


@notifier.subscribe(User, Operation.INSERT)
async def user_created(event: ChangeEvent) -> None:
    await hub.broadcast(
        {
            "type": "user_created",
            "id": event.id,
            "email": event.extra_columns["email"],
            "name": event.extra_columns["name"],
        }
    )


@notifier.subscribe(User, Operation.UPDATE)
async def user_updated(event: ChangeEvent) -> None:
    await hub.broadcast({"type": "user_updated", "id": event.id})


@notifier.subscribe(Post, Operation.INSERT)
async def post_created(event: ChangeEvent) -> None:
    await hub.broadcast(
        {
            "type": "post_created",
            "id": event.id,
            "title": event.extra_columns["title"],
            "user_id": event.extra_columns["user_id"],
        }
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    async with sqlnotify_lifespan(notifier):
        yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws")
async def updates(websocket: WebSocket) -> None:
    await hub.join(websocket)
    try:
        async for _ in websocket.iter_text():
            pass  # clients only listen
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(websocket)


@app.post("/users/")
async def create_user(email: str, name: str) -> User:
    async with sessions() as session:
        user = User(email=email, name=name)
        session.add(user)
        await session.commit()
        await session.refresh(user)
        return user


@app.patch("/users/{user_id}")
async def rename_user(user_id: int, name: str) -> User:
    async with sessions() as session:
        user = await session.get(User, user_id)
        if user is None:
            raise HTTPException(status_code=404, detail=f"no user {user_id}")
        user.name = name
        await session.commit()
        await session.refresh(user)
        return user


@app.post("/posts/")
async def create_post(title: str, content: str, user_id: int) -> Post:
    async with sessions() as session:
        post = Post(title=title, content=content, user_id=user_id)
        session.add(post)
        await session.commit()
        await session.refresh(post)
        return post
