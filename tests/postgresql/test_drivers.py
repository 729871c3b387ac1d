"""Which PostgreSQL driver: the base install needs psycopg2 only, and says so when one is missing.

The documented URL is ``postgresql+psycopg2://``: SQLAlchemy 2.1 opens a
bare ``postgresql://`` with psycopg 3, which the base install does not
bring.  These tests run Python with one driver's import blocked, as a base
install (or one without psycopg2) would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import sqlalchemy as sa
from support.env import need_module

from sqlnotify.dialects import missing_driver_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCK = """\
import sys

class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Blocked())
"""


def run_without(module: str, code: str, *args: str) -> str:
    """Run ``code`` in a new interpreter where importing ``module`` fails; return stdout."""
    script = BLOCK.format(module=module) + textwrap.dedent(code)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"helper failed:\n{proc.stderr}\n{proc.stdout}"
    return proc.stdout


def test_the_message_for_a_bare_url_without_psycopg3() -> None:
    err = missing_driver_error(
        "postgresql://app:secret@db.example:5432/shop",
        ModuleNotFoundError("No module named 'psycopg'", name="psycopg"),
    )
    text = str(err)
    assert "needs the 'psycopg' module, which is not installed" in text
    assert "SQLAlchemy 2.1 opens a bare postgresql:// URL with psycopg 3" in text
    assert "write 'postgresql+psycopg2://app:***@db.example:5432/shop'" in text
    assert "pip install 'psycopg[binary]'" in text
    assert "secret" not in text


def test_the_message_for_other_drivers() -> None:
    no_pg2 = str(
        missing_driver_error(
            "postgresql+psycopg2://u@h/db", ModuleNotFoundError("x", name="psycopg2")
        )
    )
    assert "always uses psycopg2" in no_pg2 and "pip install psycopg2-binary" in no_pg2
    no_aio = str(
        missing_driver_error("sqlite+aiosqlite:///a.db", ModuleNotFoundError("x", name="aiosqlite"))
    )
    assert no_aio.endswith(
        "needs the 'aiosqlite' module, which is not installed: pip install aiosqlite"
    )


def test_the_documented_url_needs_no_psycopg3(pg_url: str, schema: str) -> None:
    url = sa.make_url(pg_url).set(drivername="postgresql+psycopg2")
    out = run_without(
        "psycopg",
        """
        import sys
        import sqlalchemy as sa
        from sqlnotify import Notifier
        from sqlnotify.testing import EventRecorder
        from sqlnotify.cli.commands import engine_from_url

        try:
            import psycopg  # noqa: F401
        except ImportError:
            print("psycopg blocked")
        url, schema = sys.argv[1], sys.argv[2]
        # The bare scheme: with SQLAlchemy 2.1 this is the trap the docs avoid.
        bare = sa.make_url(url).set(drivername="postgresql")
        try:
            sa.create_engine(bare)
        except ImportError as exc:
            print("bare URL:", exc)
        else:
            print("bare URL: opened")
        # The CLI takes the bare scheme and opens it with psycopg2.
        print("cli driver:", engine_from_url(bare.render_as_string(False)).dialect.driver)

        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE TABLE "{schema}".items (id int PRIMARY KEY)')
        notifier = Notifier(engine)
        notifier.watch(f"{schema}.items", "insert")
        events = EventRecorder()
        notifier.subscribe(f"{schema}.items", "insert")(events)
        with notifier:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'INSERT INTO "{schema}".items VALUES (5)')
            print("event id:", events.wait_for(1, timeout=30)[0].id)
        engine.dispose()
        """,
        url.render_as_string(hide_password=False),
        schema,
    )
    lines = out.splitlines()
    assert lines[0] == "psycopg blocked"
    if sa.__version__.startswith("2.0"):
        assert lines[1] == "bare URL: opened"  # 2.0 maps postgresql:// to psycopg2
    else:
        assert lines[1] == "bare URL: No module named 'psycopg'"
    assert lines[2] == "cli driver: psycopg2"
    assert lines[3] == "event id: 5"


def test_a_psycopg3_engine_without_psycopg2_says_what_to_install(pg_url: str) -> None:
    need_module("psycopg")
    url = sa.make_url(pg_url).set(drivername="postgresql+psycopg")
    out = run_without(
        "psycopg2",
        """
        import sys
        import sqlalchemy as sa
        from sqlnotify import Notifier, SQLNotifyConfigurationError

        engine = sa.create_engine(sys.argv[1])
        try:
            Notifier(engine)
        except SQLNotifyConfigurationError as exc:
            print(exc)
        """,
        url.render_as_string(hide_password=False),
    )
    assert "needs the 'psycopg2' module, which is not installed" in out
    assert "sqlnotify's PostgreSQL listener always uses psycopg2" in out
    assert "pip install psycopg2-binary" in out
