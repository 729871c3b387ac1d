"""Quick start: FastAPI + SQLModel on an async engine, with ``async def`` callbacks.

Every committed INSERT or UPDATE of a user reaches the callbacks below on the
server's event loop, however the row was written (this app, another process,
psql).  Run it with::

    export DATABASE_URL=postgresql+asyncpg://user:pass@localhost/db
    uvicorn --app-dir examples fastapi_quickstart:app

then ``curl -X POST 'localhost:8000/users/?email=ada@example.com&name=Ada'``.
Without ``DATABASE_URL`` it uses ``sqlite+aiosqlite:///sqlnotify-example.db``, a file
in the working directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel

from sqlnotify import ChangeEvent, Notifier, Operation
from sqlnotify.adapters.asgi import sqlnotify_lifespan

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///sqlnotify-example.db")


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str
    name: str


engine = create_async_engine(DATABASE_URL)
sessions = async_sessionmaker(engine, expire_on_commit=False)

notifier = Notifier(db_engine=engine)
# Events carry the primary key; extra_columns adds the columns you name.
notifier.watch(User, Operation.INSERT)
notifier.watch(User, Operation.UPDATE, extra_columns=["email"])


@notifier.subscribe(User, Operation.INSERT)
async def on_user_created(event: ChangeEvent) -> None:
    print(f"user created: id={event.id}", flush=True)


@notifier.subscribe("User", Operation.UPDATE)  # the model's name works too
async def on_user_updated(event: ChangeEvent) -> None:
    print(f"user updated: id={event.id} email={event.extra_columns['email']}", flush=True)


@notifier.subscribe(User, Operation.UPDATE, filters=[{"column": "id", "value": 1}])
async def on_first_user_updated(event: ChangeEvent) -> None:
    print("the first user was updated", flush=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    async with sqlnotify_lifespan(notifier):
        yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/users/")
async def create_user(email: str, name: str) -> User:
    async with sessions() as session:
        user = User(email=email, name=name)
        session.add(user)
        await session.commit()
        await session.refresh(user)
        # No publishing here: the trigger reports the committed row.
        return user


@app.patch("/users/{user_id}")
async def change_email(user_id: int, email: str) -> User:
    async with sessions() as session:
        user = await session.get(User, user_id)
        if user is None:
            raise HTTPException(status_code=404, detail=f"no user {user_id}")
        user.email = email
        await session.commit()
        await session.refresh(user)
        return user
