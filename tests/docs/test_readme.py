"""Run the code examples of README.rst and docs/, so the documentation cannot drift from the code.

The convention (for every section of README.rst and of each ``docs/**/*.rst`` page):

* A Python example is run when the line ``.. sqlnotify-example: <backend>`` comes
  right before its ``.. code-block:: python`` (blank lines between them are fine).
  Blocks without the marker are shown, not run.
* ``<backend>`` picks the environment (see ``BACKENDS`` below):

  - ``postgresql``: every string literal in the code that starts with
    ``postgresql://`` or ``postgresql+<driver>://`` is replaced with the URL of
    a fresh database on the test server, created for the chain and dropped
    after it (the driver written in the example is kept, so ``+asyncpg``
    works too).  So write natural URLs such as
    ``"postgresql+psycopg2://app:secret@localhost/app"``.
  - ``sqlite``: the example runs in a fresh temporary working directory, so
    relative paths such as ``sqlite:///app.db`` land there.
  - ``mysql``: like ``postgresql``, for literals starting with ``mysql://``,
    ``mariadb://`` or ``mysql+<driver>://`` (a fresh database on the test
    MySQL/MariaDB server; the dialect and driver written are kept).

* ``.. sqlnotify-example: <backend> continued`` runs the block in the same
  namespace (and database) as the example before it in the same file, so a
  section can build on the models and engine of an earlier one.  A chain of
  examples is one test, named after the file and the line where it starts.
* After a chain, every :class:`~sqlnotify.Notifier` left in its namespace is
  stopped, and every engine disposed.  An example asserts what it shows: a
  block that raises fails the test.

Another backend is added by writing its context manager and adding it to
``BACKENDS``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.rst"
#: Every file whose marked examples run: the README, then the documentation pages.
SOURCES = [README, *sorted((ROOT / "docs").rglob("*.rst"))]
MARKER = re.compile(r"^\.\. sqlnotify-example:\s*(?P<backend>[\w-]+)(?P<cont>\s+continued)?\s*$")
CODE = re.compile(r"^\.\. code-block::\s*python\s*$")


@dataclass
class Example:
    backend: str
    line: int
    blocks: list[tuple[int, str]] = field(default_factory=list)
    source: str = "README.rst"

    @property
    def name(self) -> str:
        return f"{self.source}:{self.line}"


def _code_after(lines: list[str], start: int, source: str = "README.rst") -> tuple[int, str]:
    """The indented body of the ``code-block`` directive at or after ``start``."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or not CODE.match(lines[i]):
        raise AssertionError(
            f"{source}:{start}: a sqlnotify-example marker must precede '.. code-block:: python'"
        )
    i += 1
    body: list[str] = []
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
        body.append(lines[i])
        i += 1
    text = "\n".join(body).strip("\n")
    indent = min(len(x) - len(x.lstrip()) for x in text.splitlines() if x.strip())
    return i, "\n".join(x[indent:] for x in text.splitlines()) + "\n"


def collect(text: str, source: str = "README.rst") -> list[Example]:
    lines = text.splitlines()
    examples: list[Example] = []
    for number, line in enumerate(lines, start=1):
        match = MARKER.match(line)
        if not match:
            continue
        _, code = _code_after(lines, number, source)
        backend = match["backend"]
        if match["cont"]:
            if not examples or examples[-1].backend != backend:
                raise AssertionError(
                    f"{source}:{number}: 'continued' needs an earlier {backend} example"
                )
            examples[-1].blocks.append((number, code))
        else:
            examples.append(Example(backend, number, [(number, code)], source))
    return examples


EXAMPLES = [
    example
    for path in SOURCES
    for example in collect(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
]


@contextlib.contextmanager
def postgresql_backend(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    import psycopg2

    from sqlnotify.dialects.postgresql import listener_dsn

    base = sa.make_url(request.getfixturevalue("pg_url"))
    database = f"readme_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(**listener_dsn(base))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')

    def rewrite(code: str) -> str:
        def url(match: re.Match[str]) -> str:
            written = sa.make_url(match["url"])
            target = base.set(drivername=written.drivername, database=database)
            return repr(target.render_as_string(hide_password=False))

        return re.sub(r"""(?P<q>["'])(?P<url>postgresql(\+\w+)?://[^"']*)(?P=q)""", url, code)

    try:
        yield rewrite
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def sqlite_backend(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    tmp = request.getfixturevalue("tmp_path")
    old = os.getcwd()
    os.chdir(tmp)
    try:
        yield lambda code: code
    finally:
        os.chdir(old)


@contextlib.contextmanager
def mysql_backend(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    from support.mysql import fresh_database

    with fresh_database(request.getfixturevalue("mysql_url")) as engine:
        base = engine.url
        engine.dispose()

        def rewrite(code: str) -> str:
            def url(match: re.Match[str]) -> str:
                written = sa.make_url(match["url"])
                target = base.set(drivername=written.drivername)
                return repr(target.render_as_string(hide_password=False))

            pattern = r"""(?P<q>["'])(?P<url>(mysql|mariadb)(\+\w+)?://[^"']*)(?P=q)"""
            return re.sub(pattern, url, code)

        yield rewrite


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], contextlib.AbstractContextManager[Any]]] = {
    "postgresql": postgresql_backend,
    "sqlite": sqlite_backend,
    "mysql": mysql_backend,
}


def _close_everything(namespace: dict[str, Any]) -> None:
    from sqlnotify import Notifier

    for value in list(namespace.values()):
        if isinstance(value, Notifier):
            value.stop()
    for value in list(namespace.values()):
        if isinstance(value, sa.Engine):
            value.dispose()


def test_readme_has_runnable_examples() -> None:
    # The README's quick starts are run as scripts by tests/docs/test_readme_quickstart.py.
    assert {e.backend for e in EXAMPLES} == {"postgresql", "sqlite", "mysql"}
    assert len({e.source for e in EXAMPLES}) > 5, "docs/ pages without run examples"
    unknown = {e.backend for e in EXAMPLES} - set(BACKENDS)
    assert not unknown, f"examples name unknown backends: {sorted(unknown)}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.backend}-{e.name}" for e in EXAMPLES])
def test_readme_example(example: Example, request: pytest.FixtureRequest) -> None:
    # A real module: SQLAlchemy resolves Mapped[...] annotations through sys.modules.
    module = types.ModuleType("readme_" + re.sub(r"\W", "_", example.name))
    namespace = module.__dict__
    sys.modules[module.__name__] = module
    with BACKENDS[example.backend](request) as rewrite:
        try:
            for line, code in example.blocks:
                compiled = compile(rewrite(code), f"{example.source}:{line}", "exec")
                exec(compiled, namespace)  # the documentation's own examples
        finally:
            _close_everything(namespace)
            del sys.modules[module.__name__]
