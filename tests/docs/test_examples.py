"""The scripts in examples/ run as users would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def plain_script(env: dict[str, str], cwd: Path | None = None) -> None:
    """Run examples/plain_script.py with ``env``; it prints what the README says."""
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "plain_script.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == PLAIN_SCRIPT_OUTPUT


@pytest.mark.postgresql
def test_plain_script(pg_url: str, schema: str) -> None:
    # The script's table lands in the test's own schema, through search_path.
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    plain_script({**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)})


PLAIN_SCRIPT_OUTPUT = [
    "insert id=1 {'email': 'ada@example.com', 'name': 'Ada'}",
    "insert id=2 {'email': 'alan@example.com', 'name': 'Alan'}",
    "update id=1 {'email': 'ada@lovelace.example'}",
    "delete id=2 {}",
    "stopped cleanly",
]


@pytest.mark.sqlite
def test_plain_script_defaults_to_sqlite(tmp_path: Path) -> None:
    # No DATABASE_URL: an SQLite file in the working directory.
    plain_script({k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, cwd=tmp_path)
    assert (tmp_path / "sqlnotify-example.db").is_file()
