"""A tiny WSGI app served by gunicorn with ``preload_app``, each worker listening.

The app module is imported once, in gunicorn's master, before the workers
are forked.  A listener is per process, so each worker starts its own in the
``post_fork`` hook (see ``examples/gunicorn.conf.py``)::

    DATABASE_URL=postgresql+psycopg2://user@localhost/dbname \\
        gunicorn -c examples/gunicorn.conf.py --chdir examples gunicorn_app:application
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from sqlnotify import ChangeEvent, Notifier

engine = sa.create_engine(
    os.environ.get("DATABASE_URL")
    or sys.exit(
        "set DATABASE_URL to a PostgreSQL database,"
        " e.g. postgresql+psycopg2://user:password@localhost/dbname"
    )
)
metadata = sa.MetaData()
prices = sa.Table(
    "gunicorn_prices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("cents", sa.Integer, nullable=False),
)
seen = sa.Table(
    "gunicorn_seen",
    metadata,
    sa.Column("price_id", sa.Integer, nullable=False),
    sa.Column("worker_pid", sa.Integer, nullable=False),
)
metadata.create_all(engine)

notifier = Notifier(engine)
notifier.watch(prices, "insert", extra_columns=["cents"])
cache: dict[int, int] = {}


@notifier.subscribe(prices, "insert")
def refresh_cache(event: ChangeEvent) -> None:
    # Each worker keeps its own cache, so each worker receives every event.
    cache[event.id] = event.extra_columns["cents"]
    with engine.begin() as conn:
        conn.execute(seen.insert().values(price_id=event.id, worker_pid=os.getpid()))


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(
        {"pid": os.getpid(), "listening": notifier.is_running, "cache": cache}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
