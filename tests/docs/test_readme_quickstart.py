"""The README's two quick starts, pasted into a file and run twice, print what the README says.

They are run the way the README tells a new user to: saved as
``quickstart.py``, ``python quickstart.py``, and again.  (The other examples
of README.rst and docs/ are run by ``tests/docs/test_readme.py``.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n{title}\n{'=' * len(title)}\n")
    end = re.compile(r"\n[^\n]+\n=+\n").search(README, start + len(title) * 2 + 3)
    assert end is not None
    return README[start : end.start()]


def indented_after(text: str, marker: str) -> str:
    """The indented block after ``marker``, dedented."""
    lines = []
    for line in text[text.index(marker) + len(marker) :].split("\n")[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip("\n") + "\n"


SEPARATOR = "-- the script ended --"
# Both runs in one interpreter, each as ``python quickstart.py`` would run it:
# importing SQLAlchemy twice would only make the suite slower.
TWICE = f"""
import runpy
for _ in range(2):
    runpy.run_path("quickstart.py", run_name="__main__")
    print({SEPARATOR!r}, flush=True)
"""


def run_twice(script: Path) -> list[list[str]]:
    assert script.name == "quickstart.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", TWICE],
        cwd=script.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines.count(SEPARATOR) == 2 and lines[-1] == SEPARATOR, lines
    first = lines.index(SEPARATOR)
    return [lines[:first], lines[first + 1 : -1]]


@pytest.mark.sqlite
def test_sqlite_quick_start_prints_its_events_and_reruns(tmp_path: Path) -> None:
    text = section("Quick start: SQLite")
    script = tmp_path / "quickstart.py"
    script.write_text(indented_after(text, ".. code-block:: python"), encoding="utf-8")
    printed = indented_after(text, "It prints::").splitlines()
    assert len(printed) == 4
    first, second = run_twice(script)
    assert first == printed
    assert second == printed  # the same file, a second run: same ids, same events
    assert (tmp_path / "quickstart.db").is_file()


@pytest.mark.postgresql
def test_postgresql_quick_start_prints_its_events_and_reruns(pg_url: str, tmp_path: Path) -> None:
    import psycopg2

    from sqlnotify.dialects.postgresql import listener_dsn

    text = section("Quick start: PostgreSQL")
    code = indented_after(text, ".. code-block:: python")
    written = '"postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"'
    assert code.count(written) == 1
    sqlite = indented_after(section("Quick start: SQLite"), ".. code-block:: python")
    changed = set(code.splitlines()) ^ set(sqlite.splitlines())
    assert len(changed) == 2 and any(written in line for line in changed), changed
    name = f"quickstart_{uuid.uuid4().hex[:12]}"
    url = sa.make_url(pg_url).set(database=name)
    admin = psycopg2.connect(**listener_dsn(sa.make_url(pg_url)))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        script = tmp_path / "quickstart.py"
        script.write_text(code.replace(written, repr(url.render_as_string(False))), "utf-8")
        first, second = run_twice(script)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    expected = [
        "insert orders {id} {{'item': 'tea', 'status': 'new'}}",
        "update orders {id} {{'status': 'paid'}}",
        "order {id} was paid",
        "delete orders {id} {{}}",
    ]
    assert first == [line.format(id=1) for line in expected]
    assert second == [line.format(id=2) for line in expected]  # the sequence moved on
