"""Helpers shared by the SQLite tests: engines on files, helper processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence

import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def file_engine(path: str, *ddl: str, **kwargs: object) -> sa.Engine:
    """An engine on an SQLite file, after running the ``ddl`` statements in it."""
    engine = sa.create_engine(f"sqlite:///{path}", **kwargs)  # type: ignore[arg-type]
    if ddl:
        with engine.begin() as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement)
    return engine


def trigger_names(engine: sa.Engine, like: str = "%") -> list[str]:
    """The names of the triggers in the database (those ``LIKE`` the pattern), sorted."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ? ORDER BY name",
            (like,),
        )
        return [r[0] for r in rows]


def python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a new Python process that imports this checkout's sqlnotify."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Wait for a helper process; return its output, failing with its stderr on error."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"helper process timed out; stderr:\n{err}\nstdout:\n{out}") from None
    assert proc.returncode == 0, f"helper process failed ({proc.returncode}):\n{err}"
    return out


def read_line(proc: subprocess.Popen[str], expected: str) -> None:
    """Read one line from a helper and check it (the helper's readiness handshake)."""
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"expected {expected!r} from the helper, got {line!r}; stderr:\n{err}")


def ids(events: Sequence[object]) -> list[object]:
    return [e.id for e in events]  # type: ignore[attr-defined]
