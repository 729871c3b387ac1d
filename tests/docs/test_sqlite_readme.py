"""The SQLite page (docs/sqlite.rst) is run by the examples' tests; the README is valid reST."""

from __future__ import annotations

import os

import pytest
from support.sqlite import ROOT

pytestmark = pytest.mark.sqlite


def sqlite_section() -> str:
    with open(os.path.join(ROOT, "docs", "sqlite.rst"), encoding="utf-8") as page:
        return page.read()


def test_sqlite_example_is_run_by_the_readme_tests() -> None:
    # tests/docs/test_readme.py runs every block marked like this one.
    section = sqlite_section()
    assert ".. sqlnotify-example: sqlite\n\n.. code-block:: python" in section


def test_demo_command_is_documented() -> None:
    section = sqlite_section()
    assert "python -m sqlnotify demo" in section
    assert "LATENCY_TABLE" not in section


def test_readme_is_valid_restructuredtext() -> None:
    import docutils.core as core  # in the test extra: the README must always be checked

    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as readme:
        source = readme.read()
    core.publish_doctree(
        source,
        settings_overrides={"report_level": 5, "halt_level": 2},  # raise on a warning
    )
