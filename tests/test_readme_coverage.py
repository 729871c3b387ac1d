"""Every Python example in README.rst is executed by the suite, or quotes an executed example.

Each ``.. code-block:: python`` is preceded by one marker:

* ``.. sqlnotify-example: <backend>``: run by ``tests/test_readme.py``;
* ``.. sqlnotify-run-by: <test file>``: run by that test file, which reads README.rst;
* ``.. sqlnotify-excerpt: <file> [<file> ...]``: lines quoted from files under
  ``examples/`` that their own tests run; every code line must appear in one of them.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^\.\. sqlnotify-(example|run-by|excerpt):\s*(.+?)\s*$")


def python_blocks() -> list[tuple[int, str, str, str]]:
    """``(line, marker kind, marker argument, code)`` for each Python block."""
    lines = (ROOT / "README.rst").read_text(encoding="utf-8").split("\n")
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
        found.append((i + 1, kind, arg, textwrap.dedent("\n".join(body))))
    return found


def test_every_python_block_has_a_marker() -> None:
    blocks = python_blocks()
    assert len(blocks) > 10
    unmarked = [(line, arg) for line, kind, arg, _ in blocks if not kind]
    assert unmarked == [], f"README.rst Python blocks not executed by any test: {unmarked}"


def test_run_by_files_read_the_readme() -> None:
    for line, kind, arg, _ in python_blocks():
        if kind == "run-by":
            test = ROOT / arg
            assert test.is_file(), f"README.rst:{line}: no test file {arg}"
            assert "README.rst" in test.read_text(encoding="utf-8"), f"{arg} never reads README"


def test_excerpts_quote_the_examples() -> None:
    checked = 0
    for line, kind, arg, code in python_blocks():
        if kind != "excerpt":
            continue
        sources: set[str] = set()
        for name in arg.split():
            assert name.startswith("examples/"), f"README.rst:{line}: {name} is not an example"
            text = (ROOT / name).read_text(encoding="utf-8")
            sources |= {x.strip() for x in text.splitlines()}
        missing = [
            x.strip() for x in code.splitlines() if x.strip() and not x.strip().startswith("#")
        ]
        missing = [x for x in missing if x not in sources]
        assert missing == [], f"README.rst:{line}: lines not in {arg}: {missing}"
        checked += 1
    assert checked >= 4
