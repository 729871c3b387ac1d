"""``sqlnotify relay --to redis://...`` and the relays in ``sqlnotify status --redis``."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import sqlalchemy as sa
from support.procs import Proc, child_env
from support.streams import group_reader
from test_groups import db_url, procs, write  # noqa: F401

from sqlnotify import Notifier
from sqlnotify.testing import wait_until

APP = """
import sqlalchemy as sa
from sqlnotify import Notifier

notifier = Notifier(sa.create_engine({url!r})).watch({name!r}, "insert", durable=True)
"""


def test_relay_command_relays_and_status_shows_it(
    pg_schema_engine: sa.Engine,
    item: sa.Table,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    procs: list[Proc],  # noqa: F811
    notifiers: list[Notifier],
) -> None:
    table, name = item, item.fullname
    (tmp_path / "relayapp.py").write_text(
        textwrap.dedent(APP.format(url=db_url(pg_schema_engine), name=name))
    )
    args = ("--app", "relayapp:notifier", "--to", redis_url, "--stream-prefix", prefix)
    proc = Proc.python("-m", "sqlnotify", "relay", *args, env=child_env(), cwd=str(tmp_path))
    procs.append(proc)
    proc.expect("active", timeout=60)
    events = group_reader(pg_schema_engine, redis_url, prefix, "g", "c", name, notifiers)
    write(pg_schema_engine, table, range(1, 4))
    assert [e.id for e in events.wait_for(3, timeout=30)] == [1, 2, 3]

    def status_line() -> str | None:
        shown, code = Proc.run(
            "-m",
            "sqlnotify",
            "status",
            db_url(pg_schema_engine),
            "--redis",
            redis_url,
            "--stream-prefix",
            prefix,
            env=child_env(),
        )
        assert code == 0, shown.output
        return next((x for x in shown.lines if x.startswith("relay default")), None)

    line = wait_until(
        lambda: (
            (found := status_line())
            and "3 entries written, lag 0 event(s) / 0.000 s" in found
            and found
        ),
        timeout=30,
        message="the relay in sqlnotify status",
    )
    assert "active" in line and "last error: none" in line
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "relay stopped: 3 entries written" in proc.output
