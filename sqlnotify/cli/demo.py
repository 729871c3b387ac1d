"""``sqlnotify demo``: live events from an SQLite file changed by another process.

Needs nothing beyond the base install and Python's own ``sqlite3``.  The
demo creates a database in a temporary directory, watches a table, starts a
writer process (:func:`writer`, in a new Python process) that inserts, updates and
deletes rows, and prints each event as it arrives with the time from the
write to its receipt.  It stops after the given seconds or on Ctrl-C and
removes everything it created.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing

import sqlalchemy as sa

from ..dialects.sqlite import SQLiteDialect
from ..events import ChangeEvent, Operation
from ..notifier import Notifier

__all__ = ["run_demo", "writer"]

# The writer process's program.
_WRITER = (
    "import sys; from sqlnotify.cli.demo import writer;"
    " count = writer(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]));"
    " print(f'changes {count}', flush=True)"
)

TABLE_SQL = """\
CREATE TABLE fruit (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    qty INTEGER NOT NULL,
    sent_at REAL NOT NULL
)"""

FRUITS = ("apple", "banana", "cherry", "damson", "elderberry", "fig", "grape", "kiwi")


def writer(path: str, seconds: float, rate: float) -> int:
    """Change the ``fruit`` table ``rate`` times a second for ``seconds``; return how often.

    Each change is its own transaction; ``sent_at`` is set just before the
    commit, so the receiver can tell how long delivery took.  A delete first
    stamps ``sent_at`` in the same transaction (the update watch ignores
    that column), so the deleted row carries the time too.
    """
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    rng = random.Random(os.getpid())
    live: list[int] = []
    next_id = 1
    changes = 0
    pause = 1.0 / rate
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    try:
        while time.monotonic() < end:
            roll = rng.random()
            conn.execute("BEGIN IMMEDIATE")
            if len(live) < 3 or (roll < 0.4 and len(live) < 8):
                conn.execute(
                    "INSERT INTO fruit (id, name, qty, sent_at) VALUES (?, ?, ?, ?)",
                    (next_id, rng.choice(FRUITS), rng.randint(1, 9), time.time()),
                )
                live.append(next_id)
                next_id += 1
            elif roll < 0.8:
                conn.execute(
                    "UPDATE fruit SET qty = qty + ?, sent_at = ? WHERE id = ?",
                    (rng.randint(1, 5), time.time(), rng.choice(live)),
                )
            else:
                victim = live.pop(rng.randrange(len(live)))
                conn.execute("UPDATE fruit SET sent_at = ? WHERE id = ?", (time.time(), victim))
                conn.execute("DELETE FROM fruit WHERE id = ?", (victim,))
            conn.execute("COMMIT")
            changes += 1
            next_at += pause
            time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
    return changes


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ignore further Ctrl-C while cleaning up (on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _clean_up(
    proc: subprocess.Popen[str] | None,
    notifier: Notifier | None,
    engine: sa.Engine | None,
    tmp: str,
) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if notifier is not None:
        notifier.stop(cleanup=True)
    if engine is not None:
        engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


def _line(event: ChangeEvent, latency_ms: float) -> str:
    row = event.extra_columns
    qty = f"qty={row['qty']}" if "qty" in row else ""
    return (
        f"  {event.operation.value:<6}  id={event.id:<3}  name={row['name']:<10}  {qty:<7}"
        f"  {latency_ms:6.2f} ms"
    )


def _wake_line(notifier: Notifier) -> str:
    """How the listener learns of another process's commit, and how to make it faster."""
    listener = notifier._listener
    source = listener.source if listener is not None else None
    if source is not None and source.uses_inotify:
        return "woken by file changes (inotify): no polling delay"
    dialect = notifier.dialect
    interval = dialect.config.poll_interval if isinstance(dialect, SQLiteDialect) else None
    every = f" every {interval * 1000:g} ms" if interval else ""
    if sys.platform.startswith("linux"):
        why = "install '.[sqlite]' (inotify-simple) for file-change wake-ups, ~1 ms"
    else:
        why = "file-change wake-ups need Linux"
    return f"polling{every}: no file-change wake-ups here; {why}"


def run_demo(seconds: float = 5.0, rate: float = 20.0, echo: Callable[[str], None] = print) -> int:
    """Run the demo; return the process exit status (0: every change arrived)."""
    tmp = tempfile.mkdtemp(prefix="sqlnotify-demo-")
    path = os.path.join(tmp, "demo.db")
    arrived: queue.SimpleQueue[tuple[float, ChangeEvent]] = queue.SimpleQueue()
    latencies: list[float] = []
    expected: int | None = None
    proc: subprocess.Popen[str] | None = None
    engine: sa.Engine | None = None
    notifier: Notifier | None = None
    status = 1

    def receive(event: ChangeEvent) -> None:
        arrived.put((time.time(), event))

    try:
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(TABLE_SQL)
        engine = sa.create_engine(f"sqlite:///{path}")
        notifier = Notifier(engine)
        columns = ["name", "qty", "sent_at"]
        notifier.watch("fruit", Operation.INSERT, extra_columns=columns)
        notifier.watch("fruit", Operation.UPDATE, extra_columns=columns, trigger_columns=["qty"])
        notifier.watch("fruit", Operation.DELETE, extra_columns=["name", "sent_at"])
        for op in Operation.rows():
            notifier.subscribe("fruit", op)(receive)
        notifier.start()
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, path, str(seconds), str(rate)],
            stdout=subprocess.PIPE,
            text=True,
        )
        echo(f"sqlnotify demo: watching table 'fruit' in {path}")
        echo(_wake_line(notifier))
        echo(
            f"a writer in another process (pid {proc.pid}) changes it {rate:g} times a second"
            f" for {seconds:g} s; each event as it arrives, with the time from write to receipt:"
        )
        echo("")
        quiet_until: float | None = None
        while True:
            try:
                received_at, event = arrived.get(timeout=0.05)
            except queue.Empty:
                if expected is None and proc.poll() is not None:
                    out = proc.stdout.read() if proc.stdout else ""
                    expected = int(out.split()[-1]) if out.strip() else len(latencies)
                    quiet_until = time.monotonic() + 5.0
                if expected is not None and (
                    len(latencies) >= expected
                    or (quiet_until is not None and time.monotonic() > quiet_until)
                ):
                    break
                continue
            latency = (received_at - event.extra_columns["sent_at"]) * 1000.0
            latencies.append(latency)
            echo(_line(event, latency))
        echo("")
        status = 0 if len(latencies) == expected else 1
        echo(f"received {len(latencies)} of {expected} changes")
    except KeyboardInterrupt:
        echo("")
        echo(f"interrupted; received {len(latencies)} changes")
        status = 130
    finally:
        with _no_interrupts():
            _clean_up(proc, notifier, engine, tmp)
    if latencies:
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        echo(
            f"write to receipt: median {statistics.median(ordered):.2f} ms,"
            f" p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms"
        )
    echo(f"removed {tmp}")
    return status
