"""Celery workers (real ``celery worker`` processes) with PostgreSQL as broker and database."""

from __future__ import annotations

import os
import signal
import textwrap

import pytest
import sqlalchemy as sa
from support.procs import ROOT, Proc, child_env

from sqlnotify.testing import wait_until

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]


@pytest.fixture
def schema_url(pg_url: str, schema: str) -> str:
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def worker(app: str, workdir: str, url: str, *options: str) -> Proc:
    env = child_env(DATABASE_URL=url, CELERY_BROKER_URL="sqla+" + url)
    args = ["-m", "celery", "--workdir", workdir, "-A", app, "worker", "--loglevel=INFO"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle", *options]
    return Proc.python(*args, env=env, cwd=workdir)


def stop(proc: Proc) -> int:
    proc.popen.send_signal(signal.SIGTERM)  # Celery's warm shutdown
    return proc.wait(60)


def test_inserts_become_tasks_that_a_pool_process_runs(
    schema_url: str, schema: str, pg_engine: sa.Engine
) -> None:
    proc = worker(
        "celery_app", os.path.join(ROOT, "examples"), schema_url, "--pool=prefork", "-c", "2"
    )
    try:
        proc.expect("sqlnotify started in the Celery worker (worker_ready)", 60)
        with pg_engine.begin() as conn:
            ids = [
                conn.exec_driver_sql(
                    f'INSERT INTO "{schema}".celery_orders (customer, total_cents)'
                    " VALUES (%(c)s, 100) RETURNING id",
                    {"c": name},
                ).scalar_one()
                for name in ("ada", "grace", "edsger")
            ]

        def receipts() -> list[tuple[int, str, int]]:
            with pg_engine.connect() as conn:
                return [
                    tuple(r)
                    for r in conn.exec_driver_sql(
                        f'SELECT order_id, customer, worker_pid FROM "{schema}".celery_receipts'
                        " ORDER BY order_id"
                    )
                ]

        rows = wait_until(lambda: len(receipts()) >= 3 and receipts(), 60, "three receipts")
        code = stop(proc)
    finally:
        proc.kill()
    assert [(r[0], r[1]) for r in rows] == list(zip(ids, ["ada", "grace", "edsger"], strict=True))
    assert all(r[2] != proc.popen.pid for r in rows), "tasks run in pool processes"
    assert len(receipts()) == 3, "each event was enqueued once"
    assert code == 0, proc.output
    assert "sqlnotify stopped" in proc.output


PER_PROCESS_APP = textwrap.dedent(
    """
    import os
    import sqlalchemy as sa
    from celery import Celery
    from sqlnotify import Notifier, signals
    from sqlnotify.adapters.celery import connect_celery

    url = os.environ["DATABASE_URL"]
    app = Celery("per_process", broker=os.environ["CELERY_BROKER_URL"])
    app.conf.update(broker_connection_retry_on_startup=True, worker_proc_alive_timeout=30)
    engine = sa.create_engine(url)
    prices = sa.Table("prices", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    seen = sa.Table(
        "seen", sa.MetaData(), sa.Column("price_id", sa.Integer), sa.Column("pid", sa.Integer)
    )
    notifier = Notifier(engine)
    notifier.watch(prices, "insert")

    @notifier.subscribe(prices, "insert")
    def forget_cached_price(event):
        with engine.begin() as conn:
            conn.execute(seen.insert().values(price_id=event.id, pid=os.getpid()))

    def listening(sender, **kw):
        print("listening in", os.getpid(), flush=True)

    signals.listener_connected.connect(listening)
    connect_celery(notifier, app)
    """
)


def test_every_pool_process_starts_its_own_listener_after_the_fork(
    schema_url: str, schema: str, pg_engine: sa.Engine, tmp_path: os.PathLike[str]
) -> None:
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".prices (id serial PRIMARY KEY)')
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".seen (price_id int, pid int)')
    workdir = os.fspath(tmp_path)
    with open(os.path.join(workdir, "per_process.py"), "w") as f:
        f.write(PER_PROCESS_APP)
    proc = worker("per_process", workdir, schema_url, "--pool=prefork", "-c", "2")
    try:
        proc.expect("listening in", 60, count=2)
        with pg_engine.begin() as conn:
            price = conn.exec_driver_sql(
                f'INSERT INTO "{schema}".prices DEFAULT VALUES RETURNING id'
            ).scalar_one()

        def seen() -> list[tuple[int, int]]:
            with pg_engine.connect() as conn:
                return [tuple(r) for r in conn.exec_driver_sql(f'SELECT * FROM "{schema}".seen')]

        rows = wait_until(lambda: len(seen()) >= 2 and seen(), 60, "both processes to see it")
        code = stop(proc)
    finally:
        proc.kill()
    assert {r[0] for r in rows} == {price}
    pids = {r[1] for r in rows}
    assert len(pids) == 2 and proc.popen.pid not in pids, rows
    assert code == 0, proc.output
    assert proc.output.count("sqlnotify stopped") >= 2, proc.output
