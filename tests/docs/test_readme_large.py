"""docs/overflow.rst's large-payload example runs as printed; docs/cli.rst names real commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import sqlalchemy as sa

from sqlnotify.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECTION = (DOCS / "overflow.rst").read_text(encoding="utf-8")
CLI_SECTION = (DOCS / "cli.rst").read_text(encoding="utf-8")


def block_after(text: str, marker: str) -> str:
    """The indented block that follows ``marker``, dedented."""
    rest = text[text.index(marker) + len(marker) :].split("\n")
    lines = []
    for line in rest[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip("\n") + "\n"


@pytest.mark.postgresql
def test_large_payload_example(
    pg_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = block_after(SECTION, ".. code-block:: python")
    expected = block_after(SECTION, "It prints::")
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    placeholder = '"postgresql+psycopg2://app@localhost/app"'
    assert placeholder in code
    code = code.replace(placeholder, repr(url.render_as_string(hide_password=False)))
    namespace: dict[str, object] = {"__name__": "readme_example"}
    try:
        exec(compile(code, "docs/overflow.rst", "exec"), namespace)
    finally:
        engine = namespace.get("engine")
        if isinstance(engine, sa.Engine):
            engine.dispose()
    assert capsys.readouterr().out == expected


def test_shell_sessions_use_existing_commands() -> None:
    commands = re.findall(r"^\s*\$ sqlnotify (\S+)", CLI_SECTION, flags=re.M)
    assert {"listen", "status", "sql", "install"} <= set(commands)
    for name in commands:
        assert name in main.commands, name
    for line in re.findall(r"^``sqlnotify ([^`]+)``", CLI_SECTION, flags=re.M):
        assert shlex.split(line)[0] in main.commands, line
