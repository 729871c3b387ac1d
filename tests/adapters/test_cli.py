"""The ``sqlnotify`` command line, run as a real process against the real databases."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from support.cli import APP, TIMEOUT, Running, assert_one_line_error, cli_env, run
from support.pg import triggers
from support.pgbouncer import Bouncer, bouncer_fixture  # noqa: F401

from sqlnotify import Notifier
from sqlnotify.cli import main


@pytest.fixture
def orders(pg_engine: sa.Engine, schema: str) -> str:
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE "{schema}".orders (id serial PRIMARY KEY, item text, qty integer)'
        )
    return f"{schema}.orders"


def triggers_on(engine: sa.Engine, schema: str) -> set[str]:
    return set(triggers(engine, schema))


def as_pasted(pg_url: str, scheme: str) -> str:
    """The test server's URL with the scheme users paste (``postgres://``...)."""
    return scheme + "://" + pg_url.split("://", 1)[1]


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: sqlnotify")
    for command in ("listen", "status", "install", "uninstall", "sql"):
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize("command", sorted(main.commands))
def test_help_on_every_command(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"], prog_name="sqlnotify")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: sqlnotify {command} [OPTIONS]")
    assert len(result.output.splitlines()) > 5


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sqlnotify", "status", "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=cli_env(),
        check=False,
    )
    assert result.returncode == 0 and "--json" in result.stdout


@pytest.mark.postgresql
def test_listen_prints_each_event_as_a_json_line(
    pg_url: str, pg_engine: sa.Engine, schema: str, orders: str
) -> None:
    # The application already installed the DELETE trigger: listen uses it and leaves it.
    app = Notifier(pg_engine)
    app.watch(orders, "delete", extra_columns=["item", "qty"], use_overflow_table=True)
    app.install()
    before = triggers_on(pg_engine, schema)
    proc = Running(
        "listen",
        as_pasted(pg_url, "postgres"),
        orders,
        "--columns",
        "item,qty",
        "--overflow-table",
    )
    try:
        proc.wait_stderr("listening")
        big = "€" * 4000
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(
                f"INSERT INTO {orders} (item, qty) VALUES ('tea', 2), (%(big)s, 1)", {"big": big}
            )
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {orders} SET qty = 3 WHERE item = 'tea'")
            conn.exec_driver_sql(f"DELETE FROM {orders} WHERE qty = 1")
        lines = proc.json_lines(4)
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.err_lines
    assert [(x["operation"], x["id"]) for x in lines] == [
        ("insert", 1),
        ("insert", 2),
        ("update", 1),
        ("delete", 2),
    ]
    assert lines[0]["extra_columns"] == {"item": "tea", "qty": 2}
    assert lines[1]["extra_columns"] == {"item": big, "qty": 1}
    assert lines[3]["extra_columns"] == {"item": big, "qty": 1}
    assert {x["schema"] for x in lines} == {schema}
    assert {x["table"] for x in lines} == {"orders"}
    assert all(x["status"] == "complete" and x["timestamp"] for x in lines)
    # Its own INSERT and UPDATE triggers are gone; the application's stays.
    assert triggers_on(pg_engine, schema) == before


@pytest.mark.postgresql
def test_listen_exit_leaves_the_trigger_a_running_app_uses(
    pg_url: str, pg_engine: sa.Engine, schema: str, orders: str
) -> None:
    from sqlnotify.testing import EventRecorder

    proc = Running("listen", as_pasted(pg_url, "postgres"), f"{orders}:insert")
    app = Notifier(pg_engine, cleanup_grace=0)
    app.watch(orders, "insert", extra_columns=["item"])
    rec = EventRecorder()
    app.subscribe(orders, "insert")(rec)
    try:
        proc.wait_stderr("listening")
        listen_channels = triggers_on(pg_engine, schema)
        # The same spec as listen's: the application starts using its trigger.
        same = Notifier(pg_engine, cleanup_grace=0)
        same.watch(orders, "insert")
        same.start()
        assert [s.state for s in same.install_states] == ["unchanged"]
        app.start()
        assert [s.state for s in app.install_states] == ["installed"]
    finally:
        code = proc.stop(signal.SIGTERM)
    try:
        assert code == 0, proc.err_lines
        # listen installed its trigger, but a live notifier uses it: it stays.
        assert listen_channels <= triggers_on(pg_engine, schema)
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {orders} (item, qty) VALUES ('tea', 1)")
        assert rec.wait_for(1, TIMEOUT)[0].extra_columns == {"item": "tea"}
    finally:
        app.stop()
        same.stop()


@pytest.mark.postgresql
def test_several_processes_each_get_every_overflowed_row(
    pg_url: str, pg_engine: sa.Engine, schema: str, orders: str
) -> None:
    url = as_pasted(pg_url, "postgresql")
    procs = [
        Running("listen", url, f"{orders}:insert", "--columns", "item", "--overflow-table")
        for _ in range(2)
    ]
    items = {1: "😀" * 2500, 2: "small", 3: "ß" * 6000}
    try:
        for proc in procs:
            proc.wait_stderr("listening")
        with pg_engine.begin() as conn:
            for item in items.values():
                conn.exec_driver_sql(f"INSERT INTO {orders} (item) VALUES (%(i)s)", {"i": item})
        results = [proc.json_lines(len(items)) for proc in procs]
    finally:
        codes = [proc.stop() for proc in procs]
    assert codes == [0, 0]
    for lines in results:
        assert {x["id"]: x["extra_columns"]["item"] for x in lines} == items
    with pg_engine.connect() as conn:
        stored = conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".sqlnotify_overflow')
        assert stored.scalar_one() == 2, "each large row is stored once, read by both"


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["not a url", "orders"], ["invalid database URL 'not a url'", "postgresql://"]),
        (["oracle://u@h/db", "orders"], ["unsupported database URL", "sqlite:///"]),
        (["sqlite:///no/such/dir/x.db", "orders"], ["no SQLite database at 'no/such/dir/x.db'"]),
        (
            ["postgresql://postgres@127.0.0.1:1/test", "orders"],
            ["cannot connect to the database", "127.0.0.1:1"],
        ),
        (["{url}", "{schema}.nope"], ["cannot watch table", "nope", "no such table"]),
        (["{url}", "{orders}", "--columns", "item,colour"], ["'colour' is not on", "item, qty"]),
        (["{url}", "{orders}:upsert"], ["unknown operation 'upsert'", "'insert'"]),
    ],
)
def test_listen_errors_are_one_readable_line(
    pg_url: str, schema: str, orders: str, args: list[str], fragments: list[str]
) -> None:
    url = as_pasted(pg_url, "postgresql")
    values = {"url": url, "schema": schema, "orders": orders}
    result = run("listen", *(a.format(**values) for a in args))
    assert_one_line_error(result, *fragments)


@pytest.mark.parametrize(
    ("command", "url", "fragments"),
    [
        (
            "listen",
            "postgres ql://ann:s3cr3t@db.example/app",
            ["invalid database URL 'postgres ql://ann:***@db.example/app'", "postgresql://"],
        ),
        (
            "status",
            "postgresql://ann:s3cr3t@db.example:54x2/app",
            ["invalid database URL 'postgresql://ann:***@db.example:54x2/app'", "'54x2'"],
        ),
        (
            "listen",
            "postgresql://ann:s3c@r:3t/x@db.example:port/app",
            ["'postgresql://ann:***@db.example:port/app'", "the port 'port' is not a number"],
        ),
    ],
)
def test_bad_url_errors_hide_the_password(command: str, url: str, fragments: list[str]) -> None:
    result = run(command, url, *(["orders"] if command == "listen" else []))
    assert_one_line_error(result, *fragments)
    assert "s3c" not in result.stderr + result.stdout


@pytest.mark.postgresql
def test_status_reports_installed_outdated_and_orphaned(
    pg_url: str, pg_engine: sa.Engine, schema: str, orders: str
) -> None:
    app = Notifier(pg_engine)
    for op in ("insert", "update", "delete"):
        app.watch(orders, op, extra_columns=["qty"])
    app.install()
    with pg_engine.begin() as conn:
        # A column type change makes the installed triggers differ from a fresh build.
        conn.exec_driver_sql(f"ALTER TABLE {orders} ALTER COLUMN qty TYPE numeric")
        # Keep UPDATE's function but lose its trigger.
        channel = next(w.channel for w in app.watches if w.operation.value == "update")
        conn.exec_driver_sql(f'DROP TRIGGER "{channel}" ON {orders}')
    url = as_pasted(pg_url, "postgresql")
    result = run("status", url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    mine = {o["operation"]: o for o in report["objects"] if o["schema"] == schema}
    assert {op: o["state"] for op, o in mine.items()} == {
        "insert": "outdated",
        "update": "orphaned",
        "delete": "outdated",
    }
    assert mine["insert"]["table"] == "orders"
    assert mine["update"]["channel"] == channel
    assert 0.0 <= report["notification_queue_usage"] < 1.0

    Notifier(pg_engine).watch(orders, "insert", extra_columns=["qty"]).install()  # up to date
    text = run("status", pg_url)  # postgresql+psycopg2://, as SQLAlchemy writes it
    assert text.returncode == 0, text.stderr
    rows = [line.split() for line in text.stdout.splitlines() if schema in line]
    assert sorted((r[0], r[2]) for r in rows) == [
        ("installed", "insert"),
        ("orphaned", "update"),
        ("outdated", "delete"),
    ]
    assert "notification queue usage:" in text.stdout


@pytest.mark.postgresql
def test_sql_install_uninstall_with_app(
    pg_url: str, pg_engine: sa.Engine, schema: str, orders: str, tmp_path: Path
) -> None:
    module = f"sqlnotify_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(APP)
    env = {"APP_URL": pg_url, "APP_TABLE": orders}

    ddl = run("sql", "--app", f"{module}:notifier", cwd=tmp_path, **env)
    assert ddl.returncode == 0, ddl.stderr
    assert "CREATE OR REPLACE FUNCTION" in ddl.stdout and "CREATE TRIGGER" in ddl.stdout
    assert triggers_on(pg_engine, schema) == set(), "sql changes nothing"
    # What a DBA or a migration would do with it:
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(ddl.stdout)
    installed = run("install", "--app", f"{module}:make_notifier", cwd=tmp_path, **env)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.startswith("unchanged: insert on"), installed.stdout
    assert len(triggers_on(pg_engine, schema)) == 1

    kept = run("uninstall", "--app", module, cwd=tmp_path, **env)
    assert kept.stdout.strip() == "removed 0 trigger(s)", "install just used it: grace period"
    removed = run("uninstall", "--app", module, "--grace", "0", cwd=tmp_path, **env)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "removed 1 trigger(s)"
    assert triggers_on(pg_engine, schema) == set()

    again = run("install", cwd=tmp_path, SQLNOTIFY_APP=f"{module}:notifier", **env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("installed: insert on")
    assert len(triggers_on(pg_engine, schema)) == 1


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("command", "app", "fragments"),
    [
        ("install", "sqlnotify_no_such_module:x", ["cannot import 'sqlnotify_no_such_module'"]),
        ("uninstall", "{module}:missing", ["has no attribute 'missing'"]),
        ("sql", "{module}:not_a_notifier", ["is a int, not a sqlnotify Notifier"]),
    ],
)
def test_app_errors(
    pg_url: str, orders: str, tmp_path: Path, command: str, app: str, fragments: list[str]
) -> None:
    module = f"sqlnotify_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(APP)
    result = run(
        command,
        "--app",
        app.format(module=module),
        cwd=tmp_path,
        APP_URL=pg_url,
        APP_TABLE=orders,
    )
    assert_one_line_error(result, *fragments)


def test_app_is_required() -> None:
    result = run("install")
    assert result.returncode == 2
    assert "--app" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.postgresql
def test_listen_polls_through_a_transaction_pooler_and_resumes_its_consumer(
    bouncer: Bouncer, pg_engine: sa.Engine, schema: str, orders: str
) -> None:
    pooled = bouncer.url().render_as_string(hide_password=False)
    args = ["listen", pooled, f"{orders}:insert", "--consumer", "cli", "--poll", "0.05"]
    args += ["--journal-schema", schema]
    # LISTEN cannot work through it: without --poll the command says so.
    refused = run(*args[:3], "--durable", "--journal-schema", schema)
    assert refused.returncode != 0
    assert "pooler" in refused.stderr and "poll mode" in refused.stderr

    def insert(*items: str) -> None:
        with pg_engine.begin() as conn:
            for item in items:
                conn.exec_driver_sql(f"INSERT INTO {orders} (item) VALUES (%s)", (item,))

    proc = Running(*args)
    try:
        proc.wait_stderr("listening")
        insert("tea", "jam")
        first = proc.json_lines(2)
    finally:
        assert proc.stop(signal.SIGTERM) == 0, proc.err_lines
    insert("bread")  # while no one reads: the consumer resumes from its position
    proc = Running(*args)
    try:
        proc.wait_stderr("listening")
        insert("milk")
        second = proc.json_lines(2)
    finally:
        assert proc.stop(signal.SIGTERM) == 0, proc.err_lines
    assert [x["id"] for x in first] == [1, 2]
    assert [x["id"] for x in second] == [3, 4]
