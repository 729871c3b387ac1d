"""The ``sqlnotify`` command line on an SQLite file, run as a real process."""

from __future__ import annotations

import json
import select
import signal
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.cli import APP, Running, assert_one_line_error, cli, cli_env, run
from support.sqlite import file_engine

from sqlnotify.testing import wait_until

pytestmark = pytest.mark.sqlite


@pytest.fixture
def items_db(sqlite_path: str) -> sa.Engine:
    return file_engine(
        sqlite_path, "CREATE TABLE items (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)"
    )


def test_listen_on_sqlite_stops_on_ctrl_c(sqlite_path: str, items_db: sa.Engine) -> None:
    proc = Running("listen", f"sqlite:///{sqlite_path}", "items", "--columns", "item,qty")
    try:
        proc.wait_stderr("listening")
        with items_db.begin() as conn:
            conn.exec_driver_sql("INSERT INTO items (item, qty) VALUES ('tea', 2), ('café', 1)")
        with items_db.begin() as conn:
            conn.exec_driver_sql("UPDATE items SET qty = 3 WHERE id = 1")
            conn.exec_driver_sql("DELETE FROM items WHERE id = 2")
        lines = proc.json_lines(4)
    finally:
        code = proc.stop(signal.SIGINT)
        items_db.dispose()
    assert code == 0, proc.err_lines
    assert [(x["operation"], x["id"], x["extra_columns"]) for x in lines] == [
        ("insert", 1, {"item": "tea", "qty": 2}),
        ("insert", 2, {"item": "café", "qty": 1}),
        ("update", 1, {"item": "tea", "qty": 3}),
        ("delete", 2, {"item": "café", "qty": 1}),
    ]
    assert all(x["schema"] is None and x["table"] == "items" for x in lines)


def test_status_install_sql_on_sqlite(
    sqlite_path: str, items_db: sa.Engine, tmp_path: Path
) -> None:
    items_db.dispose()
    url = f"sqlite:///{sqlite_path}"
    module = "sqlnotify_sqlite_app"
    (tmp_path / f"{module}.py").write_text(APP)
    env = {"APP_URL": url, "APP_TABLE": "items"}
    ddl = run("sql", "--app", f"{module}:notifier", cwd=tmp_path, **env)
    assert ddl.returncode == 0, ddl.stderr
    assert "CREATE TRIGGER" in ddl.stdout
    assert json.loads(run("status", url, "--json").stdout)["objects"] == []

    installed = run("install", "--app", f"{module}:notifier", cwd=tmp_path, **env)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.startswith("installed: insert on items")
    report = json.loads(run("status", url, "--json").stdout)
    assert [(o["table"], o["operation"], o["state"]) for o in report["objects"]] == [
        ("items", "insert", "installed")
    ]
    removed = run("uninstall", "--app", f"{module}:notifier", "--grace", "0", cwd=tmp_path, **env)
    assert removed.stdout.strip() == "removed 1 trigger(s)", removed.stderr


def test_unknown_sqlite_table(sqlite_path: str, items_db: sa.Engine) -> None:
    items_db.dispose()
    result = run("listen", f"sqlite:///{sqlite_path}", "nope")
    assert_one_line_error(result, "cannot watch table 'nope'")


def test_listen_stops_when_its_reader_goes_away(
    sqlite_path: str, items_db: sa.Engine, tmp_path: Path
) -> None:
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [*cli(), "listen", f"sqlite:///{sqlite_path}", "items:insert"],
            stdout=subprocess.PIPE,
            stderr=err,
            env=cli_env(),
        )
    assert proc.stdout is not None
    try:
        wait_until(lambda: "listening" in errors.read_text(), 30, "the readiness line")
        with items_db.begin() as conn:
            conn.exec_driver_sql("INSERT INTO items (item) VALUES ('a')")
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no event line"
        assert json.loads(proc.stdout.readline())["id"] == 1
        proc.stdout.close()  # as `| head -1` does once it has its line
        with items_db.begin() as conn:
            conn.exec_driver_sql("INSERT INTO items (item) VALUES ('b')")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        items_db.dispose()
    text = errors.read_text()
    assert "stopped" in text and "Traceback" not in text and "Exception" not in text, text


def test_status_reports_a_trigger_its_table_no_longer_fits(
    sqlite_path: str, items_db: sa.Engine
) -> None:
    from sqlnotify import Notifier

    notifier = Notifier(items_db)
    notifier.watch("items", "update", extra_columns=["qty"])
    notifier.install()
    states = [o["state"] for o in notifier.dialect.status()]
    assert states == ["installed"]
    with items_db.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items RENAME COLUMN qty TO quantity")
    report = json.loads(run("status", f"sqlite:///{sqlite_path}", "--json").stdout)
    assert [(o["table"], o["state"]) for o in report["objects"]] == [("items", "outdated")]
    notifier.dialect.close()
    items_db.dispose()
