"""The FastAPI examples, end to end: a real uvicorn server, real HTTP and WebSocket clients."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from support.events import EVENT_KEYS
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


class Server:
    """uvicorn serving one example in a subprocess; its output is read line by line."""

    def __init__(self, module: str, env: dict[str, str], app_dir: Path | None = None) -> None:
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(app_dir or ROOT / "examples"),
                f"{module}:app",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
            cwd=str(ROOT),
        )
        self.lines: list[str] = []
        self.ended = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="uvicorn-output", daemon=True)
        self._reader.start()
        match = self.wait_line(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Wait for an output line matching ``pattern`` (searched from the first line)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self.ended or remaining <= 0:
                    why = "the server exited" if self.ended else f"nothing after {timeout:g}s"
                    raise AssertionError(
                        f"no line matching {pattern!r} ({why}); output:\n{chr(10).join(self.lines)}"
                    )
                self._cond.wait(remaining)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


@contextlib.contextmanager
def new_database(pg_url: str) -> Iterator[sa.URL]:
    """A PostgreSQL database of its own, dropped afterwards (examples use plain table names)."""
    import psycopg2

    from sqlnotify.dialects.postgresql import listener_dsn

    name = f"sqlnotify_example_{uuid.uuid4().hex[:10]}"
    url = sa.make_url(pg_url)
    admin = psycopg2.connect(**listener_dsn(url))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture(scope="session")
def examples_database(pg_url: str) -> Iterator[sa.URL]:
    """One PostgreSQL database for the examples, which use plain table names."""
    with new_database(pg_url) as url:
        yield url


def empty_public_schema(url: sa.URL) -> None:
    """Drop what an earlier test left in ``public`` (cheaper than a database per test)."""
    import psycopg2

    from sqlnotify.dialects.postgresql import listener_dsn

    conn = psycopg2.connect(**listener_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute("DROP SCHEMA public CASCADE")
            cur.execute("CREATE SCHEMA public")
    finally:
        conn.close()


@pytest.fixture(params=["postgresql+asyncpg", "sqlite+aiosqlite"])
def example_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The examples' one setting, DATABASE_URL: an empty PostgreSQL schema, or a SQLite file."""
    if request.param.startswith("postgresql"):
        url = request.getfixturevalue("examples_database")
        empty_public_schema(url)
        url = url.set(drivername=request.param)
        return {"DATABASE_URL": url.render_as_string(hide_password=False)}
    return {"DATABASE_URL": f"{request.param}:///{tmp_path / 'app.db'}"}


@pytest.fixture
def serve(example_env: dict[str, str]) -> Iterator[Any]:
    servers: list[Server] = []

    def start(module: str) -> Server:
        server = Server(module, example_env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        code = server.stop()
        assert code == 0, f"uvicorn exited with {code}:\n{server.output()}"
        assert "Application shutdown complete." in server.output()
        assert "Traceback" not in server.output(), server.output()


def test_quickstart_callbacks_run_for_rows_written_through_the_api(serve: Any) -> None:
    server = serve("fastapi_quickstart")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        created = client.post("/users/", params={"email": "ada@example.com", "name": "Ada"})
        assert created.status_code == 200, created.text
        user_id = created.json()["id"]
        server.wait_line(rf"^user created: id={user_id}$")
        changed = client.patch(f"/users/{user_id}", params={"email": "ada@example.org"})
        assert changed.status_code == 200, changed.text
    server.wait_line(rf"^user updated: id={user_id} email=ada@example\.org$")
    if user_id == 1:
        server.wait_line(r"^the first user was updated$")


def test_websocket_clients_receive_the_broadcast_of_a_new_row(serve: Any) -> None:
    server = serve("websocket_broadcast")
    ws_url = server.url.replace("http://", "ws://") + "/ws"
    with (
        connect(ws_url, open_timeout=TIMEOUT) as first,
        connect(ws_url, open_timeout=TIMEOUT) as second,
        httpx.Client(base_url=server.url, timeout=TIMEOUT) as client,
    ):
        for ws in (first, second):
            assert json.loads(ws.recv(timeout=TIMEOUT)) == {"type": "welcome"}
        created = client.post("/users/", params={"email": "lin@example.com", "name": "Lin"})
        assert created.status_code == 200, created.text
        user_id = created.json()["id"]
        for ws in (first, second):
            message = json.loads(ws.recv(timeout=TIMEOUT))
            assert message["type"] == "user_created"
            event = message["event"]
            assert list(event) == list(EVENT_KEYS)
            assert event["table"] == "user"
            assert event["operation"] == "insert"
            assert event["id"] == user_id
            assert event["extra_columns"] == {"email": "lin@example.com", "name": "Lin"}
            assert dt.datetime.fromisoformat(event["timestamp"]).utcoffset() == dt.timedelta(0)
            assert event["status"] == "complete"
            assert event["custom"] is False
            # SQLite: no schema, a change-log position; PostgreSQL: a schema, no position.
            assert (event["schema"] is None) == isinstance(event["position"], int)
        post = client.post("/posts/", params={"title": "Hi", "content": "...", "user_id": user_id})
        assert post.status_code == 200, post.text
        renamed = client.patch(f"/users/{user_id}", params={"name": "Lin Y."})
        assert renamed.status_code == 200, renamed.text
        messages = [json.loads(first.recv(timeout=TIMEOUT)) for _ in range(2)]
    # Two subscriptions: each keeps its own order, but they do not wait for each other.
    by_type = {m["type"]: m["event"] for m in messages}
    assert sorted(by_type) == ["post_created", "user_updated"]
    assert by_type["post_created"]["table"] == "post"
    assert by_type["post_created"]["id"] == post.json()["id"]
    assert by_type["post_created"]["extra_columns"] == {"title": "Hi", "user_id": user_id}
    assert by_type["user_updated"]["operation"] == "update"
    assert by_type["user_updated"]["id"] == user_id
    assert by_type["user_updated"]["extra_columns"] == {}


# -- docs/asyncio.rst, run as written ------------------------------------------
README_URL = "postgresql+asyncpg://app:secret@localhost/shop"
PAGE = ROOT / "docs" / "asyncio.rst"


def readme_blocks() -> list[str]:
    """The Python code blocks of docs/asyncio.rst."""
    text = PAGE.read_text(encoding="utf-8")
    blocks = []
    for part in text.split(".. code-block:: python\n")[1:]:
        lines = []
        for line in part.split("\n")[1:]:
            if line and not line.startswith("    "):
                break
            lines.append(line[4:])
        blocks.append("\n".join(lines).strip() + "\n")
    return blocks


@pytest.fixture
def fresh_database(examples_database: sa.URL) -> str:
    """The examples' database, emptied (the page's snippets use plain names)."""
    empty_public_schema(examples_database)
    url = examples_database.set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


def test_readme_async_callback_and_stream_snippets(fresh_database: str, tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert len(blocks) == 3
    assert all(README_URL in b for b in (blocks[0], blocks[2]))
    script = tmp_path / "readme_async.py"
    script.write_text((blocks[0] + "\n" + blocks[1]).replace(README_URL, fresh_database))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "order 1: 12.50"
    assert "big order 3" in lines
    assert "Traceback" not in done.stderr


def test_readme_fastapi_snippet_under_uvicorn(fresh_database: str, tmp_path: Path) -> None:
    module = tmp_path / "readme_app.py"
    module.write_text(readme_blocks()[2].replace(README_URL, fresh_database))
    server = Server("readme_app", {}, app_dir=tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            response = client.post("/customers/", params={"email": "kim@example.com"})
        assert response.status_code == 200, response.text
        server.wait_line(r"^welcome mail for kim@example\.com$")
    finally:
        assert server.stop() == 0, server.output()
