"""The Python examples of the README's SQLite section run as written."""

from __future__ import annotations

import os
import re
import sys
import textwrap
import types

import pytest
from sqlite_support import ROOT

pytestmark = pytest.mark.sqlite


def sqlite_section() -> str:
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as readme:
        text = readme.read()
    start = text.index("\nSQLite\n======\n")
    end = re.compile(r"\n[^\n]+\n=+\n").search(text, start + 10)
    return text[start : end.start() if end else len(text)]


def python_blocks(section: str) -> list[str]:
    blocks = []
    for match in re.finditer(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section):
        blocks.append(textwrap.dedent(match.group(1)))
    return blocks


def test_sqlite_section_examples_run(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = python_blocks(sqlite_section())
    assert blocks, "the SQLite section has no Python example"
    monkeypatch.chdir(tmp_path)
    for n, block in enumerate(blocks):
        # A real module: SQLAlchemy resolves the models' annotations through it.
        module = types.ModuleType(f"sqlnotify_readme_example_{n}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        exec(compile(block, "README.rst", "exec"), module.__dict__)
        engine = module.__dict__.get("engine")
        if engine is not None:
            engine.dispose()
    assert "order 1 was paid" in capsys.readouterr().out


def test_demo_command_is_documented() -> None:
    section = sqlite_section()
    assert "python -m sqlnotify demo" in section
    assert "LATENCY_TABLE" not in section


def test_readme_is_valid_restructuredtext() -> None:
    core = pytest.importorskip("docutils.core")
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as readme:
        source = readme.read()
    core.publish_string(
        source,
        writer="null",
        settings_overrides={"report_level": 5, "halt_level": 2},  # raise on a warning
    )
