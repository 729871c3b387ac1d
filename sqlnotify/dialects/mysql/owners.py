"""MySQL side of ownership: the ``sqlnotify_users`` registry (see :mod:`sqlnotify._ownership`).

A notifier is live while its row says so and was refreshed within
``LIVE_WINDOW``.  Installers and cleaners serialize on a named lock
(:meth:`MySQLDialect._locked`), since MySQL's DDL is not transactional.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..._ownership import LIVE_WINDOW, Policy
from . import sql
from .connection import execute

__all__ = ["drop", "ensure", "forget", "in_use", "touch", "users"]


def ensure(conn: Any, db: str) -> None:
    execute(conn, sql.registry_table_sql(db))


def touch(conn: Any, db: str, channels: Sequence[str], policy: Policy) -> None:
    host, _, rest = policy.user.partition(":")
    pid = int(rest.partition(":")[0] or 0)
    now = time.time()
    with conn.cursor() as cur:
        cur.executemany(
            sql.touch_sql(db),
            [(c, policy.user, policy.app, host, pid, int(policy.live), now, now) for c in channels],
        )


def forget(conn: Any, db: str, channels: Iterable[str], user: str) -> None:
    for c in channels:
        execute(conn, sql.forget_sql(db), (user, c))


def drop(conn: Any, db: str, channel: str) -> None:
    execute(conn, sql.drop_users_sql(db), (channel,))


def in_use(conn: Any, db: str, channel: str, policy: Policy) -> bool:
    now = time.time()
    rows = execute(
        conn, sql.in_use_sql(db), (channel, policy.user, now - LIVE_WINDOW, now - policy.grace)
    )
    return bool(rows[0][0])


def users(conn: Any, db: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for channel, user, app, host, pid, live, seen in execute(conn, sql.users_sql(db)):
        live_now = bool(live) and seen > time.time() - LIVE_WINDOW
        out.setdefault(channel, []).append(
            {
                "user": user,
                "app": app,
                "host": host,
                "pid": pid,
                "live": live_now,
                "last_seen": dt.datetime.fromtimestamp(seen, dt.timezone.utc),
            }
        )
    return out
