"""Fork safety with a real ``os.fork()``: the child listens on its own connection."""

from __future__ import annotations

import json
import os
import select
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from support.env import IN_CI
from support.watching import Watch, make_table

from sqlnotify import Notifier, SQLNotifyForkError
from sqlnotify.testing import EventRecorder, listener_backend_pid

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork") and not IN_CI, reason="needs os.fork()"),
    # Python 3.12+ warns when a multi-threaded process forks; forking one is the point here.
    pytest.mark.filterwarnings("ignore:This process .* fork:DeprecationWarning"),
]


def _items(engine: sa.Engine) -> sa.Table:
    return make_table(engine, name="items", columns=("origin",), nullable=False)


def _insert(engine: sa.Engine, table: sa.Table, origin: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(table.insert().values(origin=origin)).inserted_primary_key[0])


def _in_child(work: Any) -> dict[str, Any]:
    """Run ``work()`` in a forked child; return the dict it produced (or its error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(r)
        try:
            result = work()
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    try:
        chunks = []
        while True:
            ready, _, _ = select.select([r], [], [], 30)
            assert ready, "the forked child did not report within 30s"
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(json.loads(b"".join(chunks)))


def _restart_in_child(
    engine: sa.Engine,
    items: sa.Table,
    notifier: Notifier,
    parent_events: EventRecorder,
    probe: Callable[[], dict[str, Any]] = dict,
) -> dict[str, Any]:
    """In the forked child: swap the parent's recorder for its own, restart, write one row."""
    state = {"running": notifier.is_running, "forked": notifier.forked}
    notifier.unsubscribe(parent_events, items, "insert")
    mine = EventRecorder()
    notifier.subscribe(items, "insert")(mine)
    notifier.start()
    state.update(probe())
    row = _insert(engine, items, "child")
    got = mine.wait_for(1, timeout=10)
    notifier.stop()
    return {**state, "row": row, "got": [e.id for e in got]}


def _check_both_got_theirs(
    engine: sa.Engine, items: sa.Table, parent_events: EventRecorder, result: dict[str, Any]
) -> None:
    """The child got its own row; the parent gets its rows and the child's."""
    assert "error" not in result, result["error"]
    assert result["running"] is False and result["forked"] is True
    assert result["got"] == [result["row"]]
    last = _insert(engine, items, "parent")
    events = parent_events.wait_for(3, timeout=10)
    assert [e.id for e in events] == [parent_events.events[0].id, result["row"], last]


@pytest.mark.postgresql
def test_child_restarts_its_own_listener_and_parent_keeps_receiving(
    pg_schema_engine: sa.Engine, watched: Watch
) -> None:
    items = _items(pg_schema_engine)
    notifier, parent_events = watched(pg_schema_engine, items)
    first = _insert(pg_schema_engine, items, "parent")
    assert parent_events.wait_for(1, timeout=10)[0].id == first
    parent_backend = listener_backend_pid(notifier)
    assert parent_backend is not None

    def backend() -> dict[str, Any]:
        pid = listener_backend_pid(notifier)
        assert pid is not None
        return {"backend": pid}

    result = _in_child(
        lambda: _restart_in_child(pg_schema_engine, items, notifier, parent_events, backend)
    )
    assert "error" not in result, result["error"]
    assert result["backend"] != parent_backend, "the child must listen on its own connection"
    # The parent's connection was left alone: same backend, no reconnect, still delivering.
    _check_both_got_theirs(pg_schema_engine, items, parent_events, result)
    assert listener_backend_pid(notifier) == parent_backend
    assert notifier.stats.reconnects == 0
    assert notifier.is_running and not notifier.forked
    with pg_schema_engine.connect() as conn:
        alive = conn.execute(
            sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
            {"pid": parent_backend},
        ).scalar_one()
    assert alive == 1


@pytest.mark.postgresql
def test_fork_during_start_in_another_thread_raises_a_fork_error(
    pg_schema_engine: sa.Engine, watched: Watch
) -> None:
    items = _items(pg_schema_engine)
    notifier = watched(pg_schema_engine, items, record=False).notifier
    held, release = threading.Event(), threading.Event()

    def busy() -> None:
        # Stands in for a thread caught half-way through start() or stop().
        with notifier._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=busy, name="busy-with-notifier")
    thread.start()
    try:
        assert held.wait(10)

        def child() -> dict[str, Any]:
            try:
                notifier.start()
            except SQLNotifyForkError as exc:
                return {"fork_error": str(exc), "running": notifier.is_running}
            return {"fork_error": None}

        result = _in_child(child)
    finally:
        release.set()
        thread.join(10)
    assert result["fork_error"] and "create a new Notifier in the child" in result["fork_error"]
    assert result["running"] is False
    assert notifier.is_running  # the parent is not affected


@pytest.mark.sqlite
def test_sqlite_child_listens_on_its_own_and_parent_keeps_receiving(
    sqlite_path: str, watched: Watch
) -> None:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    items = _items(engine)
    notifier, parent_events = watched(engine, items)
    first = _insert(engine, items, "parent")
    assert parent_events.wait_for(1, timeout=10)[0].id == first
    result = _in_child(lambda: _restart_in_child(engine, items, notifier, parent_events))
    _check_both_got_theirs(engine, items, parent_events, result)
    engine.dispose()


@pytest.mark.postgresql
def test_async_callbacks_run_on_the_childs_own_loop_after_a_restart(
    pg_schema_engine: sa.Engine, watched: Watch
) -> None:
    items = _items(pg_schema_engine)
    notifier = watched(pg_schema_engine, items, start=False, record=False).notifier
    seen: list[tuple[int, int, str]] = []
    arrived = threading.Event()

    @notifier.subscribe(items, "insert")
    async def remember(event: Any) -> None:
        seen.append((os.getpid(), event.id, threading.current_thread().name))
        arrived.set()

    notifier.start()
    _insert(pg_schema_engine, items, "parent")
    assert arrived.wait(10)

    def child() -> dict[str, Any]:
        seen.clear()
        arrived.clear()
        notifier.start()
        row = _insert(pg_schema_engine, items, "child")
        assert arrived.wait(10), "the async callback did not run in the child"
        notifier.stop()
        return {"row": row, "seen": seen, "pid": os.getpid()}

    result = _in_child(child)
    assert "error" not in result, result["error"]
    assert [tuple(s) for s in result["seen"]] == [
        (result["pid"], result["row"], "sqlnotify-asyncio")
    ]
