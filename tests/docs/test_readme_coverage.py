"""Every Python example in README.rst and docs/ is executed by the suite, or quotes one that is.

Each ``.. code-block:: python`` is preceded by one marker:

* ``.. sqlnotify-example: <backend>``: run by ``tests/docs/test_readme.py``;
* ``.. sqlnotify-run-by: <test file>``: run by that test file, which reads the page;
* ``.. sqlnotify-excerpt: <file> [<file> ...]``: lines quoted from files under
  ``examples/`` that their own tests run; every code line must appear in one of them.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^\.\. sqlnotify-(example|run-by|excerpt):\s*(.+?)\s*$")


SOURCES = [ROOT / "README.rst", *sorted((ROOT / "docs").rglob("*.rst"))]


def python_blocks() -> list[tuple[str, str, str, str]]:
    """``(file:line, marker kind, marker argument, code)`` for each Python block."""
    found = []
    for path in SOURCES:
        found += _blocks(path)
    return found


def _blocks(path: Path) -> list[tuple[str, str, str, str]]:
    source = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").split("\n")
    found = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        previous = next(x for x in reversed(lines[:i]) if x.strip())
        match = MARKER.match(previous.strip())
        kind, arg = (match.group(1), match.group(2)) if match else ("", previous)
        body = []
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith("    ")):
            body.append(lines[j])
            j += 1
        found.append((f"{source}:{i + 1}", kind, arg, textwrap.dedent("\n".join(body))))
    return found


def test_every_python_block_has_a_marker() -> None:
    blocks = python_blocks()
    assert len(blocks) > 10
    unmarked = [(line, arg) for line, kind, arg, _ in blocks if not kind]
    assert unmarked == [], f"Python blocks not executed by any test: {unmarked}"


def test_run_by_files_read_the_readme() -> None:
    for line, kind, arg, _ in python_blocks():
        if kind == "run-by":
            test = ROOT / arg
            assert test.is_file(), f"{line}: no test file {arg}"
            page = line.split(":")[0]
            assert page in test.read_text(encoding="utf-8"), f"{arg} never reads {page}"


def test_excerpts_quote_the_examples() -> None:
    checked = 0
    for line, kind, arg, code in python_blocks():
        if kind != "excerpt":
            continue
        sources: set[str] = set()
        for name in arg.split():
            assert name.startswith("examples/"), f"{line}: {name} is not an example"
            text = (ROOT / name).read_text(encoding="utf-8")
            sources |= {x.strip() for x in text.splitlines()}
        missing = [
            x.strip() for x in code.splitlines() if x.strip() and not x.strip().startswith("#")
        ]
        missing = [x for x in missing if x not in sources]
        assert missing == [], f"{line}: lines not in {arg}: {missing}"
        checked += 1
    assert checked >= 4
