"""SQLite side of ownership: the ``sqlnotify_users`` registry in the database file.

The same rules as on PostgreSQL (see :mod:`sqlnotify._ownership`), without
advisory locks: a notifier is live while its row says so and was refreshed
within ``LIVE_WINDOW`` (the maintenance thread refreshes it).  Every function
runs in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..._ownership import LIVE_WINDOW, Policy
from .sql import (
    DROP_USERS_SQL,
    FORGET_SQL,
    IN_USE_SQL,
    REGISTRY_SQL,
    REGISTRY_TABLE,
    TABLE_EXISTS_SQL,
    TOUCH_SQL,
    USERS_SQL,
)

__all__ = ["drop", "ensure", "forget", "in_use", "touch", "users"]


def _exists(conn: Any) -> bool:
    row = conn.execute(TABLE_EXISTS_SQL, (REGISTRY_TABLE,)).fetchone()
    return row is not None


def ensure(conn: Any) -> None:
    conn.execute(REGISTRY_SQL)


def touch(conn: Any, channels: Sequence[str], policy: Policy) -> None:
    host, _, rest = policy.user.partition(":")
    pid = int(rest.partition(":")[0] or 0)
    now = time.time()
    conn.executemany(
        TOUCH_SQL,
        [(c, policy.user, policy.app, host, pid, int(policy.live), now, now) for c in channels],
    )


def forget(conn: Any, channels: Iterable[str], user: str) -> None:
    if _exists(conn):
        conn.executemany(FORGET_SQL, [(user, c) for c in channels])


def drop(conn: Any, channel: str) -> None:
    if _exists(conn):
        conn.execute(DROP_USERS_SQL, (channel,))


def in_use(conn: Any, channel: str, policy: Policy) -> bool:
    if not _exists(conn):
        return False
    now = time.time()
    row = conn.execute(IN_USE_SQL, (channel, policy.user, now - LIVE_WINDOW, now - policy.grace))
    return bool(row.fetchone()[0])


def users(conn: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if not _exists(conn):
        return out
    rows = conn.execute(USERS_SQL)
    for channel, user, app, host, pid, live, seen in rows.fetchall():
        live_now = bool(live) and seen > time.time() - LIVE_WINDOW
        when = dt.datetime.fromtimestamp(seen, dt.timezone.utc)
        out.setdefault(channel, []).append(
            {
                "user": user,
                "app": app,
                "host": host,
                "pid": pid,
                "live": live_now,
                "last_seen": when,
            }
        )
    return out
