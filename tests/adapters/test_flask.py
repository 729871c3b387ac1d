"""The Flask extension with a real Flask app, Flask-SQLAlchemy and PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from support.procs import ROOT, Proc, child_env
from support.watching import make_table

from sqlnotify import Notifier, SQLNotifyConfigurationError
from sqlnotify.adapters.flask import SQLNotify, is_reloader_parent
from sqlnotify.testing import EventRecorder, wait_until

pytestmark = pytest.mark.postgresql


def load_example(name: str) -> ModuleType:
    path = os.path.join(ROOT, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"sqlnotify_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def schema_url(pg_url: str, schema: str) -> str:
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def example() -> ModuleType:
    return load_example("flask_app")


def test_a_request_writes_a_row_and_the_receiver_sees_it(
    example: ModuleType, schema_url: str, notifiers: list[Notifier]
) -> None:
    app = example.create_app(
        {"SQLALCHEMY_DATABASE_URI": schema_url, "SQLNOTIFY_STOP_AT_EXIT": False}
    )
    notifier = example.sqlnotify.get_notifier(app)
    notifiers.append(notifier)
    assert not notifier.is_running, "nothing starts before the first request"
    client = app.test_client()

    response = client.post("/users", json={"name": "ada"})
    assert response.status_code == 201
    assert notifier.is_running
    listener = notifier.listener_thread_name, notifier._listener
    wait_until(lambda: client.get("/welcomed").json == ["ada"], 10, "the receiver to welcome ada")

    client.post("/users", json={"name": "grace"})
    wait_until(lambda: client.get("/welcomed").json == ["ada", "grace"], 10, "grace's welcome")
    assert (notifier.listener_thread_name, notifier._listener) == listener, "started once"
    assert notifier.stats.receiver_errors == 0


def test_given_engine_blinker_receivers_and_explicit_start(
    pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    table = make_table(pg_schema_engine, name="notes", columns=("text",))
    app = Flask("explicit")
    app.config.update(SQLNOTIFY_AUTOSTART=False, SQLNOTIFY_STOP_AT_EXIT=False)
    ext = SQLNotify(app, engine=pg_schema_engine)
    notifiers.append(ext.notifier)
    ext.notifier.watch(table, "insert", extra_columns=["text"])
    recorder = EventRecorder()
    ext.notifier.signal(table, "insert").connect(recorder, sender=table)

    @app.post("/notes")
    def add() -> Any:
        with pg_schema_engine.begin() as conn:
            conn.execute(table.insert().values(text="hello"))
        return "", 204

    client = app.test_client()
    client.post("/notes")
    assert not ext.notifier.is_running, "SQLNOTIFY_AUTOSTART=False: requests start nothing"
    with app.app_context():
        assert ext.start() is True
    client.post("/notes")
    (event,) = recorder.wait_for(1, timeout=10)
    assert event.extra_columns["text"] == "hello"
    assert recorder.senders == [table]
    ext.stop()
    assert not ext.notifier.is_running


def test_no_start_in_the_reloader_parent(
    monkeypatch: pytest.MonkeyPatch, pg_schema_engine: sa.Engine, notifiers: list[Notifier]
) -> None:
    app = Flask("reloading")
    app.debug = True
    app.config["SQLNOTIFY_STOP_AT_EXIT"] = False
    ext = SQLNotify(app, engine=pg_schema_engine)
    notifiers.append(ext.notifier)
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    assert is_reloader_parent(app)
    assert ext.start() is False
    assert not ext.notifier.is_running
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    assert not is_reloader_parent(app)
    assert ext.start() is True


def test_configuration_errors_name_what_is_missing(pg_schema_engine: sa.Engine) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match="Flask-SQLAlchemy"):
        SQLNotify(Flask("bare"))
    app = Flask("twice")
    SQLNotify(app, engine=pg_schema_engine)
    with pytest.raises(SQLNotifyConfigurationError, match="already initialised"):
        SQLNotify(app, engine=pg_schema_engine)
    shared = SQLNotify(Flask("first"), notifier=Notifier(pg_schema_engine))
    with pytest.raises(SQLNotifyConfigurationError, match="a notifier belongs to one app"):
        shared.init_app(Flask("second"))


def test_the_notifier_stops_at_interpreter_exit(schema_url: str) -> None:
    script = textwrap.dedent(
        """
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        sys.path.insert(0, "examples")
        import flask_app
        app = flask_app.create_app({"SQLALCHEMY_DATABASE_URI": sys.argv[1]})
        app.test_client().post("/users", json={"name": "ada"})
        print("running", flask_app.sqlnotify.get_notifier(app).is_running, flush=True)
        """
    )
    proc, code = Proc.run("-c", script, schema_url, env=child_env(), cwd=ROOT)
    assert code == 0, proc.output
    assert "running True" in proc.lines, proc.output
    assert proc.lines.index("sqlnotify stopped") > proc.lines.index("running True")
    assert "Traceback" not in proc.output
