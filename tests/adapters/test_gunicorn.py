"""gunicorn with ``preload_app``: a real master forks real workers that each listen."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import urllib.request

import pytest
import sqlalchemy as sa
from support.procs import ROOT, Proc, child_env

from sqlnotify.testing import wait_until

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

EXAMPLES = os.path.join(ROOT, "examples")

# The harder case: the master itself starts the notifier before forking, so each
# worker inherits a running notifier and its post_fork hook must restart it.
MASTER_STARTS = """

def when_ready(server):
    from gunicorn_app import notifier

    notifier.start()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("master_starts", [False, True], ids=["post_fork", "started_in_master"])
def test_each_preloaded_worker_listens_on_its_own_connection(
    pg_url: str, schema: str, pg_engine: sa.Engine, tmp_path: os.PathLike[str], master_starts: bool
) -> None:
    with open(os.path.join(EXAMPLES, "gunicorn.conf.py")) as f:
        config = f.read() + (MASTER_STARTS if master_starts else "")
    config_path = os.path.join(os.fspath(tmp_path), "gunicorn.conf.py")
    with open(config_path, "w") as f:
        f.write(config)
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    port = free_port()
    env = child_env(DATABASE_URL=url.render_as_string(hide_password=False))
    args = ["-m", "gunicorn", "-c", config_path, "--chdir", EXAMPLES, "-b", f"127.0.0.1:{port}"]
    proc = Proc.python(*args, "gunicorn_app:application", env=env, cwd=EXAMPLES)
    try:
        proc.expect("sqlnotify listening in worker", 60, count=2)
        workers = {
            int(m.group(1))
            for line in proc.lines
            if (m := re.search(r"Booting worker with pid: (\d+)", line))
        }

        def answer() -> dict[str, object]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                return dict(json.load(response))

        served = wait_until(answer, 30, "an HTTP answer")
        assert served["pid"] in workers and served["listening"] is True

        def seen() -> set[tuple[int, int]]:
            with pg_engine.connect() as conn:
                return {
                    (int(r[0]), int(r[1]))
                    for r in conn.exec_driver_sql(f'SELECT * FROM "{schema}".gunicorn_seen')
                }

        with pg_engine.begin() as conn:
            price = conn.exec_driver_sql(
                f'INSERT INTO "{schema}".gunicorn_prices (cents) VALUES (42) RETURNING id'
            ).scalar_one()
        expected = len(workers) + (1 if master_starts else 0)
        rows = wait_until(lambda: len(seen()) >= expected and seen(), 30, "every process to see it")
        proc.popen.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        proc.kill()
    assert {price_id for price_id, _ in rows} == {price}
    pids = {pid for _, pid in rows}
    assert workers <= pids
    assert (proc.popen.pid in pids) == master_starts
    assert code == 0, proc.output
    assert "Traceback" not in proc.output
