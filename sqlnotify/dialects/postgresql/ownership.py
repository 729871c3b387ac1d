"""PostgreSQL side of ownership: the registry table, channel locks, bounded DDL.

The registry (``sqlnotify_users``, one per schema of watched tables) holds a
row per (channel, notifier).  While a listener lives, its session holds a
shared advisory lock per channel (``pg_locks`` shows them), keyed by
:func:`channel_lock`.  Every transaction that changes triggers runs under
``SET LOCAL lock_timeout`` and is retried by :meth:`LockedRunner.run`; while
a statement waits, a watcher thread asks ``pg_blocking_pids()`` who holds
the lock, so the error can name them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from ..._names import digest, qualified, run_sql
from ..._ownership import LIVE_WINDOW, Policy, lock_timeout_error, retry_locked
from .sql import (
    BLOCKERS_SQL,
    BLOCKERS_TIMEOUT_SQL,
    DROP_USERS_SQL,
    FORGET_SQL,
    IN_USE_SQL,
    LOCK_TIMEOUT_SQL,
    LOCKED_CHANNELS_SQL,
    REGCLASS_SQL,
    REGISTRY_SQL,
    REGISTRY_TABLE,
    TOUCH_SQL,
    USERS_SQL,
    XACT_LOCK_SQL,
)

__all__ = [
    "BlockerWatch",
    "LockedRunner",
    "Registry",
    "channel_lock",
    "execute_plain",
]

T = TypeVar("T")

#: First half of every channel lock's key (the two-integer advisory lock form).
CHANNEL_LOCK_CLASS = int(digest("sqlnotify.channel", 7), 16)
LOCK_NOT_AVAILABLE = "55P03"


def channel_lock(channel: str) -> tuple[int, int]:
    """The (class, key) of the shared advisory lock a listener holds on ``channel``."""
    return CHANNEL_LOCK_CLASS, int(digest(channel, 7), 16)


def _sql(template: str, schema: str | None) -> str:
    # Parameters follow: a '%' in the schema's name must reach the server as is.
    return template.format(table=qualified(schema, REGISTRY_TABLE).replace("%", "%%"))


def execute_plain(conn: sa.Connection, sql: str) -> None:
    """Run one statement that has no parameters, so no ``%`` in it is read as one."""
    run_sql(conn, sql)


#: Seconds a status read waits for one lock before it gives up on that object.
READ_LOCK_TIMEOUT = 0.5


@contextlib.contextmanager
def brief_read(conn: sa.Connection, lock_timeout: float = READ_LOCK_TIMEOUT) -> Iterator[None]:
    """One short transaction for a read about one object, its lock waits bounded.

    Reports that walk the whole database (``status``) read each table in its
    own transaction: locks are released as soon as one object is read, so the
    walk never holds a lock on one schema's table while it waits for another's
    (``DROP SCHEMA ... CASCADE`` or a migration would deadlock with it), and a
    wait ends after ``lock_timeout`` with :func:`is_lock_timeout` true.
    """
    with conn.begin():
        conn.exec_driver_sql(LOCK_TIMEOUT_SQL.format(millis=max(1, int(lock_timeout * 1000))))
        yield


def is_lock_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "pgcode", None) == LOCK_NOT_AVAILABLE


class BlockerWatch:
    """While one statement waits, ask the server every ``interval`` who blocks it.

    Its own connection is opened only once the first interval has passed,
    so a statement that gets its lock at once costs no connection.
    """

    def __init__(self, dsn: dict[str, Any], pid: int, interval: float, log: logging.Logger):
        self._dsn = dsn
        self._pid = pid
        self._interval = interval
        self._log = log
        self._stop = threading.Event()
        self.blockers: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, name="sqlnotify-lock-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg2

        conn = None
        try:
            while not self._stop.wait(self._interval):
                if conn is None:
                    conn = psycopg2.connect(**{**self._dsn, "connect_timeout": "5"})
                with conn.cursor() as cur:  # one transaction: the timeout is LOCAL to it
                    cur.execute(BLOCKERS_TIMEOUT_SQL)
                    cur.execute(BLOCKERS_SQL, (self._pid,))
                    rows = cur.fetchall()
                conn.rollback()
                if rows:
                    keys = ("pid", "application_name", "state", "xact_age", "query")
                    self.blockers = [dict(zip(keys, row, strict=True)) for row in rows]
        except Exception:
            self._log.debug("could not ask the server who holds a lock", exc_info=True)
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(10.0)
        return self.blockers


class LockedRunner:
    """Runs transactions that take locks on watched tables, within the policy's bounds."""

    def __init__(
        self,
        engine: sa.Engine,
        dsn: dict[str, Any],
        install_lock_key: int,
        log: logging.Logger,
    ) -> None:
        self.engine = engine
        self.dsn = dsn
        self.install_lock_key = install_lock_key
        self.log = log

    def run(
        self,
        work: Callable[[sa.Connection], T],
        policy: Policy,
        what: str,
        deadline: float | None = None,
    ) -> T:
        """Run ``work`` in one transaction holding the installation lock, retried on lock timeouts.

        :raises SQLNotifyLockTimeoutError: once ``deadline`` (default: the
            policy's ``install_timeout`` from now) passes.
        """
        seen: list[dict[str, Any]] = []
        millis = max(1, int(policy.lock_timeout * 1000))

        def attempt() -> T:
            with self.engine.connect() as conn:
                pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
                watch = BlockerWatch(self.dsn, pid, max(0.02, policy.lock_timeout * 0.4), self.log)
                try:
                    with conn.begin():
                        conn.exec_driver_sql(LOCK_TIMEOUT_SQL.format(millis=millis))
                        conn.exec_driver_sql(XACT_LOCK_SQL.format(key=self.install_lock_key))
                        return work(conn)
                finally:
                    found = watch.stop()
                    if found:
                        seen[:] = found

        return retry_locked(
            attempt,
            is_lock_timeout,
            policy.deadline() if deadline is None else deadline,
            lambda: lock_timeout_error(what, policy, seen),
        )


class Registry:
    """The ``sqlnotify_users`` tables, read and written in the caller's transaction."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._exists: dict[str | None, bool] = {}

    def exists(self, schema: str | None) -> bool:
        if schema not in self._exists:
            name = qualified(schema, REGISTRY_TABLE)
            found = self.conn.execute(sa.text(REGCLASS_SQL), {"n": name}).scalar()
            self._exists[schema] = found is not None
        return self._exists[schema]

    def ensure(self, schema: str | None) -> None:
        if not self.exists(schema):
            name = qualified(schema, REGISTRY_TABLE)
            execute_plain(self.conn, REGISTRY_SQL.format(table=name))
            self._exists[schema] = True

    def touch(self, schema: str | None, channels: Sequence[str], policy: Policy) -> None:
        host, _, rest = policy.user.partition(":")
        pid = int(rest.partition(":")[0] or 0)
        self.conn.exec_driver_sql(
            _sql(TOUCH_SQL, schema),
            (policy.user, policy.app, host, pid, policy.live, list(channels)),
        )

    def forget(self, schema: str | None, channels: Iterable[str], user: str) -> None:
        if self.exists(schema):
            self.conn.exec_driver_sql(_sql(FORGET_SQL, schema), (user, list(channels)))

    def drop(self, schema: str | None, channel: str) -> None:
        if self.exists(schema):
            self.conn.exec_driver_sql(_sql(DROP_USERS_SQL, schema), (channel,))

    def in_use(self, schema: str | None, channel: str, policy: Policy) -> bool:
        if not self.exists(schema):
            return False
        row = self.conn.exec_driver_sql(
            _sql(IN_USE_SQL, schema), (channel, policy.user, LIVE_WINDOW, policy.grace)
        ).scalar()
        return bool(row)

    def users(self, schema: str | None) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        if not self.exists(schema):
            return out
        for channel, user, app, host, pid, live, seen in self.conn.exec_driver_sql(
            _sql(USERS_SQL, schema), (LIVE_WINDOW,)
        ):
            out.setdefault(channel, []).append(
                {
                    "user": user,
                    "app": app,
                    "host": host,
                    "pid": pid,
                    "live": live,
                    "last_seen": seen,
                }
            )
        return out

    def locked_channels(self) -> set[int]:
        rows = self.conn.exec_driver_sql(LOCKED_CHANNELS_SQL, (CHANNEL_LOCK_CLASS,))
        return {int(r[0]) for r in rows}
