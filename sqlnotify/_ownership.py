"""Who uses which trigger, and the bounds on every lock taken to change one.

Several applications (or versions of one) share a database.  Each trigger is
named after its watch's spec, so two specs never share one, and the same spec
always does.  A registry table records every notifier that uses a trigger
and when it was last seen; PostgreSQL listeners also hold a shared advisory
lock per channel while they live.  A trigger is removed only when no live
notifier uses it and nobody has used it for the grace period.

Every DDL statement waits at most ``lock_timeout`` for its lock (so writers
never queue behind it for longer) and is retried with backoff and jitter
until ``install_timeout`` runs out; then :class:`SQLNotifyLockTimeoutError`
names whoever held the lock.  Removing unused triggers never delays
``start()``: the maintenance thread does it, one attempt at a time
(:class:`sqlnotify._pipeline.maintenance.Ownership`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .exceptions import SQLNotifyConfigurationError, SQLNotifyLockTimeoutError

__all__ = [
    "HEARTBEAT",
    "LIVE_WINDOW",
    "Backoff",
    "Policy",
    "lock_timeout_error",
    "new_user_id",
    "retry_locked",
]

T = TypeVar("T")

#: A running notifier refreshes its registry rows this often (seconds).
HEARTBEAT = 30.0
#: A registry row marked live counts as live while seen within this window,
#: so a process that died without a word stops counting after it.
LIVE_WINDOW = 4 * HEARTBEAT
#: Characters of a blocking session's query shown in the error.
QUERY_CHARS = 120


def new_user_id() -> str:
    """An identity for one notifier: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def default_app() -> str:
    """The program's name, as the registry shows it."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name or "python"


def _seconds(name: str, value: Any, *, positive: bool) -> float:
    import datetime as dt

    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < 0 or (positive and value == 0) or math.isnan(value):
        bound = "a positive" if positive else "a non-negative"
        raise SQLNotifyConfigurationError(
            f"{name} must be {bound} number of seconds or a timedelta, not {value!r}"
        )
    return float(value)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The bounds and identity one notifier uses for installation and cleanup.

    :ivar lock_timeout: seconds one DDL statement waits for its lock.
    :ivar install_timeout: seconds all attempts of one installation may take.
    :ivar grace: seconds a trigger stays after its last user was last seen.
    :ivar user: this notifier's identity in the registry.
    :ivar app: the program name shown next to it.
    :ivar live: whether the registry should count this user as live (a
        started notifier) rather than as having installed only.
    """

    lock_timeout: float = 0.5
    install_timeout: float = 30.0
    grace: float = 86400.0
    user: str = dataclasses.field(default_factory=new_user_id)
    app: str = dataclasses.field(default_factory=default_app)
    live: bool = False

    @classmethod
    def build(cls, lock_timeout: Any, install_timeout: Any, grace: Any) -> Policy:
        """Check the three options (numbers of seconds or timedeltas)."""
        lock = _seconds("lock_timeout", lock_timeout, positive=True)
        install = _seconds("install_timeout", install_timeout, positive=True)
        if install < lock:
            raise SQLNotifyConfigurationError(
                f"install_timeout ({install:g}s) must be at least lock_timeout ({lock:g}s):"
                " it bounds every attempt together"
            )
        return cls(lock, install, _seconds("cleanup_grace", grace, positive=False))

    def deadline(self) -> float:
        return time.monotonic() + self.install_timeout


class Backoff:
    """Delays between attempts: exponential, capped, with jitter (tests may patch these)."""

    INITIAL_DELAY = 0.05
    DELAY_BACKOFF = 2.0
    DELAY_JITTER = 0.5
    MAX_DELAY = 2.0

    def __init__(self) -> None:
        self._delay = self.INITIAL_DELAY

    def next(self) -> float:
        """The next delay, jittered by up to ``DELAY_JITTER`` of itself either way."""
        delay = self._delay
        self._delay = min(self._delay * self.DELAY_BACKOFF, self.MAX_DELAY)
        return delay * (1.0 + self.DELAY_JITTER * (2.0 * random.random() - 1.0))

    def sleep(self, deadline: float) -> bool:
        """Wait the next delay; ``False`` (without waiting) when ``deadline`` would pass."""
        delay = self.next()
        if time.monotonic() + delay >= deadline:
            return False
        time.sleep(delay)
        return True


def retry_locked(
    attempt: Callable[[], T],
    is_lock_timeout: Callable[[BaseException], bool],
    deadline: float,
    on_give_up: Callable[[], BaseException],
) -> T:
    """Run ``attempt`` until it does not time out on a lock, or ``deadline`` passes."""
    backoff = Backoff()
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not is_lock_timeout(exc):
                raise
            if not backoff.sleep(deadline):
                raise on_give_up() from exc


def lock_timeout_error(
    what: str, policy: Policy, blockers: Sequence[Mapping[str, Any]]
) -> SQLNotifyLockTimeoutError:
    """The error for a lock not obtained within ``install_timeout``, naming who held it."""
    lines = []
    for b in blockers:
        age = b.get("xact_age")
        query = " ".join(str(b.get("query") or "").split())[:QUERY_CHARS]
        lines.append(
            f"pid {b.get('pid')} (application_name {b.get('application_name')!r}, state"
            f" {b.get('state')!r}, transaction open for"
            f" {'?' if age is None else f'{float(age):.1f}s'}, query {query!r})"
        )
    who = "; ".join(lines) if lines else "no blocking session could be identified"
    return SQLNotifyLockTimeoutError(
        f"could not {what}: the lock was not granted within install_timeout="
        f"{policy.install_timeout:g}s (each attempt waits lock_timeout={policy.lock_timeout:g}s,"
        f" so writers never wait longer behind it). Blocked by: {who}. End or commit those"
        " transactions (pg_terminate_backend(pid) if they are stuck), run the installation"
        " when the table is quieter (`sqlnotify install`), or raise install_timeout",
        blockers=[dict(b) for b in blockers],
    )
