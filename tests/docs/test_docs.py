"""The documentation says what the code does: parameters, errors, install lines, pages, commands.

The examples in the pages are run by ``tests/docs/test_readme.py``; the Sphinx build
itself (warnings as errors) is a step of ``.ci/run``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import shlex
from pathlib import Path

import pytest

import sqlnotify
from sqlnotify import Notifier
from sqlnotify.dialects.postgresql import PostgresDialect
from sqlnotify.dialects.sqlite import SQLiteOptions

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.rst"


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start) : text.index(end)]


# -- one table of every Notifier parameter --------------------------------------


def parameter_table() -> dict[str, str]:
    """``{parameter: default cell}`` from the table in docs/notifier.rst."""
    text = (DOCS / "notifier.rst").read_text(encoding="utf-8")
    table = _between(text, ".. notifier-parameters-start", ".. notifier-parameters-end")
    rows = re.findall(r"^``(\w+)``\s{2,}(\S+(?: \S+)*?)\s{2,}", table, flags=re.M)
    assert rows, "no rows in the parameter table"
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"a parameter is listed twice: {names}"
    return dict(rows)


def _cell_value(cell: str) -> object:
    token = cell.split(maxsplit=1)[0].strip("`").replace(",", "")
    return {"True": True, "False": False, "None": None}.get(token, token)


def test_parameter_table_lists_every_parameter_of_every_database() -> None:
    signature = inspect.signature(Notifier.__init__).parameters
    own = {n for n, p in signature.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
    postgresql = set(PostgresDialect.capabilities.options)
    sqlite = {f"sqlite_{f.name}" for f in dataclasses.fields(SQLiteOptions)}
    assert set(parameter_table()) == own | postgresql | sqlite


def test_parameter_table_defaults_are_the_real_ones() -> None:
    table = parameter_table()
    defaults = {
        name: p.default
        for name, p in inspect.signature(Notifier.__init__).parameters.items()
        if p.default is not p.empty
    }
    defaults |= {f"sqlite_{f.name}": f.default for f in dataclasses.fields(SQLiteOptions)}
    assert table["db_engine"] == "(required)"
    for name, default in defaults.items():
        written = _cell_value(table[name])
        if isinstance(default, bool) or default is None:
            assert written is default, f"{name}: the table says {table[name]!r}, not {default!r}"
        elif isinstance(default, str):
            assert written == f'"{default}"', f"{name}: the table says {table[name]!r}"
        else:
            assert float(written) == default, f"{name}: the table says {table[name]!r}"


# -- the exception tree ----------------------------------------------------------


def test_error_tree_is_the_class_hierarchy() -> None:
    text = (DOCS / "errors.rst").read_text(encoding="utf-8")
    tree = text[text.index("    SQLNotifyException") :].split("\n\n")[0]
    parents: dict[int, type] = {}
    drawn = set()
    for line in tree.splitlines():
        match = re.match(r"^(?P<indent>[ |+-]*)(?P<name>SQLNotify\w+)", line.strip("\n")[4:])
        if not match:
            continue
        depth = len(match["indent"])
        cls = getattr(sqlnotify, match["name"])
        if depth:
            parent = parents[max(d for d in parents if d < depth)]
            assert cls.__bases__[0] is parent, f"{cls.__name__} is drawn under {parent.__name__}"
        parents = {d: c for d, c in parents.items() if d < depth}
        parents[depth] = cls
        drawn.add(cls.__name__)
    public = {
        name
        for name in sqlnotify.__all__
        if isinstance(getattr(sqlnotify, name), type)
        and issubclass(getattr(sqlnotify, name), sqlnotify.SQLNotifyException)
    }
    assert drawn == public


# -- install lines never name the index package ----------------------------------

INDEX_NAME = "sqlnotify"  # on PyPI this name belongs to another project


def bare_index_installs(line: str) -> list[str]:
    """The requirements of a ``pip install`` line that name the index package."""
    found = []
    for command in re.findall(r"pip3? install\b([^;&|#`]*)", line):
        for word in shlex.split(command.replace("\\", " ")):
            if word.startswith("-"):
                continue
            name = re.split(r"[\[<>=!~ @;]", word, maxsplit=1)[0].lower().replace("_", "-")
            if name == INDEX_NAME:
                found.append(word)
    return found


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        ('pip install "sqlnotify[asyncio]"', ["sqlnotify[asyncio]"]),
        ("python -m pip install -U sqlnotify", ["sqlnotify"]),
        ("pip install sqlnotify==0.2.0 flask", ["sqlnotify==0.2.0"]),
        ('``pip install "SQLNotify[sqlite]"`` brings', ["SQLNotify[sqlite]"]),
        ('python -m pip install ".[asyncio]"', []),
        ('pip install -e ".[test]" && python -m pytest', []),
        ("pip install /path/to/sqlnotify", []),
        ("pip install sqlnotify-other", []),
    ],
)
def test_the_install_check_knows_a_bare_name(line: str, bad: list[str]) -> None:
    assert bare_index_installs(line) == bad


def documentation_files() -> list[Path]:
    return [
        README,
        ROOT / "benchmarks" / "README.rst",
        *sorted(DOCS.rglob("*.rst")),
        *sorted((ROOT / "examples").rglob("*.py")),
    ]


def test_no_install_line_names_the_index_package() -> None:
    install_lines = 0
    for path in documentation_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "pip install" in line or "pip3 install" in line:
                install_lines += 1
                bad = bare_index_installs(line)
                assert not bad, (
                    f"{path.relative_to(ROOT)}:{number}: {bad} installs another project from"
                    " PyPI; install from the repository ('.[extra]' or a path)"
                )
    assert install_lines >= 3


# -- the README's commands ---------------------------------------------------------


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = re.search(r"^ {4}(python -m pip install -e \"\.\[test\]\" && .+)$", readme, re.M)
    assert command is not None, "README.rst lost its second command"
    install, tests = (part.strip() for part in command.group(1).split("&&"))
    assert install.replace(" -e", " --quiet -e") in ci
    ci_pytest = [x.strip() for x in ci.splitlines() if re.search(r"-m pytest\b", x)]
    assert ci_pytest and all(x == tests for x in ci_pytest), ci_pytest


def test_readme_keeps_the_fresh_machine_order() -> None:
    readme = README.read_text(encoding="utf-8")
    order = [
        "python -m sqlnotify demo",
        "Quick start: SQLite",
        "Quick start: PostgreSQL",
        "Documentation",
    ]
    assert [readme.index(x) for x in order] == sorted(readme.index(x) for x in order)


def test_examples_read_only_database_url() -> None:
    for path in sorted((ROOT / "examples").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        names = set(re.findall(r"environ(?:\.get)?[\[(]\s*[\"'](\w+)", text))
        names -= {"DJANGO_SETTINGS_MODULE"}  # Django's own switch, set by the example itself
        assert names <= {"DATABASE_URL"}, f"{path.name} reads {sorted(names)}"
        assert not re.search(r"://[^\s\"']*/test\b", text), f"{path.name} names a 'test' database"


# -- the Sphinx tree ---------------------------------------------------------------


def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    toctree = index[index.index(".. toctree::") :]
    listed = set(re.findall(r"^ {3}([\w/-]+)$", toctree, flags=re.M))
    pages = {p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.rglob("*.rst")}
    pages -= {"index"}
    pages = {p for p in pages if not p.startswith("_build/")}
    assert listed == pages
