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


def one_row_then_signal(proc: Proc, engine: sa.Engine, insert: str, line: str, signum: int) -> int:
    """Once ``proc`` listens, insert a row and wait for ``line`` (``{id}``: the row's id);
    then send ``signum`` and return the exit code.  The process is killed if still running."""
    try:
        proc.expect("listening")
        with engine.begin() as conn:
            row_id = conn.exec_driver_sql(insert).scalar_one()
        proc.expect(line.format(id=row_id))
        proc.popen.send_signal(signum)
        return proc.wait(30)
    finally:
        proc.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_forever_delivers_until_a_signal_then_exits_cleanly(
    script_url: str, schema: str, pg_engine: sa.Engine, signum: int
) -> None:
    proc = Proc.python("-c", SCRIPT, script_url, env=child_env())
    insert = f'INSERT INTO "{schema}".jobs DEFAULT VALUES RETURNING id'
    code = one_row_then_signal(proc, pg_engine, insert, "event {id}", signum)
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
    insert = f"INSERT INTO \"{schema}\".worker_jobs (kind) VALUES ('resize') RETURNING id"
    code = one_row_then_signal(proc, pg_engine, insert, "job {id}: resize", signal.SIGTERM)
    assert code == 0, proc.output
    assert proc.lines[-1] == "stopped by SIGTERM", proc.output
    assert "sqlnotify: sqlnotify stopped" in proc.lines
    assert "Traceback" not in proc.output
