"""``Notifier.run_forever()`` in a real script process, ended by a real signal."""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from support.procs import ROOT, Proc, child_env

SCRIPT = textwrap.dedent(
    """
    import signal, sys
    import sqlalchemy as sa
    from sqlnotify import Notifier, signals

    engine = sa.create_engine(sys.argv[1])
    jobs = sa.Table("jobs", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    notifier = Notifier(engine)
    notifier.watch(jobs, "insert")

    @notifier.subscribe(jobs, "insert")
    def on_job(event):
        print("event", event.id, flush=True)

    def on_connected(sender, **kw):
        print("listening", flush=True)

    signals.listener_connected.connect(on_connected)
    before = signal.getsignal(signal.SIGTERM)
    got = notifier.run_forever()
    print("returned", got, "running", notifier.is_running, flush=True)
    print("restored", signal.getsignal(signal.SIGTERM) is before, flush=True)
    """
)


@pytest.fixture
def script_url(pg_url: str, schema: str, pg_engine: sa.Engine) -> Iterator[str]:
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".jobs (id serial PRIMARY KEY)')
    yield str(
        sa.make_url(pg_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_forever_delivers_until_a_signal_then_exits_cleanly(
    script_url: str, schema: str, pg_engine: sa.Engine, signum: int
) -> None:
    proc = Proc.python("-c", SCRIPT, script_url, env=child_env())
    try:
        proc.expect("listening")
        with pg_engine.begin() as conn:
            new_id = conn.exec_driver_sql(
                f'INSERT INTO "{schema}".jobs DEFAULT VALUES RETURNING id'
            ).scalar_one()
        proc.expect(f"event {new_id}")
        proc.popen.send_signal(signum)
        code = proc.wait(30)
    finally:
        proc.kill()
    assert code == 0, proc.output
    assert f"returned {int(signum)} running False" in proc.lines, proc.output
    assert "restored True" in proc.lines, proc.output
    assert "Traceback" not in proc.output


def test_the_worker_example_runs_until_sigterm(
    pg_url: str, schema: str, pg_engine: sa.Engine
) -> None:
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    env = child_env(DATABASE_URL=url.render_as_string(hide_password=False))
    proc = Proc.python(os.path.join(ROOT, "examples", "worker.py"), env=env)
    try:
        proc.expect("listening")
        with pg_engine.begin() as conn:
            job = conn.exec_driver_sql(
                f"INSERT INTO \"{schema}\".worker_jobs (kind) VALUES ('resize') RETURNING id"
            ).scalar_one()
        proc.expect(f"job {job}: resize")
        proc.popen.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        proc.kill()
    assert code == 0, proc.output
    assert proc.lines[-1] == "stopped by SIGTERM", proc.output
    assert "sqlnotify: sqlnotify stopped" in proc.lines
    assert "Traceback" not in proc.output
