"""The triggers' life: installing them, the registry's upkeep, pruning the overflow tables.

:func:`install_triggers` runs on the thread that starts (or installs); the
rest on the ``sqlnotify-maintenance`` thread of a running notifier.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.exc import DBAPIError

from .._ownership import HEARTBEAT, Backoff, Policy
from .._watch import Watch, why_not_installable
from ..dialects.base import Dialect, InstallState
from ..exceptions import (
    SQLNotifyConfigurationError,
    SQLNotifyException,
    SQLNotifyLockTimeoutError,
)
from .worker import Worker

__all__ = ["Maintenance", "Ownership", "Periodic", "install_triggers", "prune_overflow"]


def install_triggers(
    dialect: Dialect,
    prepare: Callable[[], list[Watch]],
    resolved: Callable[[], list[Watch]],
    *,
    revoke: bool,
    policy: Policy,
    log: logging.Logger,
    advice: Mapping[str, str],
) -> list[InstallState]:
    """Install (or update) the triggers of the watches ``prepare()`` resolves.

    A database error that a view, or a table never created, explains is
    raised as :class:`SQLNotifyConfigurationError` saying so (``resolved()``:
    the watches resolved so far); another as :class:`SQLNotifyException`.
    """
    try:
        states = dialect.install(prepare(), revoke=revoke, policy=policy)
    except Exception as exc:
        # A database error, raw or as the dialect wrapped it: a view, or a
        # table never created, is said plainly.
        driver_error = dialect.engine.dialect.loaded_dbapi.Error
        database_error = (
            isinstance(exc, (DBAPIError, driver_error)) or type(exc) is SQLNotifyException
        )
        why = why_not_installable(dialect.engine, resolved()) if database_error else None
        if why is not None:
            raise SQLNotifyConfigurationError(why) from exc
        if not isinstance(exc, DBAPIError):
            raise
        raise SQLNotifyException(
            f"could not install sqlnotify triggers: {exc.orig or exc}"
        ) from exc
    for state in states:
        if state.state == "outdated":
            log.warning(
                "the installed trigger for %s differs from its watch and was left in place (%s)",
                state.watch.describe(),
                advice["keep_outdated"],
            )
        elif state.state in ("installed", "replaced"):
            log.info("%s trigger for %s", state.state, state.watch.describe())
    return states


class Periodic(Worker):
    """A named daemon thread that calls ``task()`` every ``interval`` seconds until stopped.

    The first call happens one interval after :meth:`start`.  An exception
    from ``task`` is logged and the loop goes on.
    """

    def __init__(
        self,
        task: Callable[[], object],
        interval: float,
        *,
        log: logging.Logger,
        name: str = "sqlnotify-maintenance",
    ) -> None:
        super().__init__(name=name, log=log, what="the maintenance thread")
        self._task = task
        self._interval = interval

    def start(self) -> None:
        self.start_thread()

    def stop(self, timeout: float) -> bool:
        """Stop and join the thread; ``False`` if it did not end within ``timeout``."""
        self.stopping.set()
        return self.join(timeout)

    def run(self) -> None:
        while not self.stopping.wait(self._interval):
            try:
                self._task()
            except Exception:
                self._log.warning("sqlnotify maintenance failed; retrying later", exc_info=True)


class Ownership:
    """The maintenance side of ownership for one running notifier.

    :meth:`tick` runs on the ``sqlnotify-maintenance`` thread: it refreshes
    this notifier's registry rows every :data:`HEARTBEAT` seconds and, when
    ``cleanup_on_start`` asked for it, removes the unused triggers of the
    watched tables, one bounded attempt per due time, backing off while a
    lock is busy; then again every :attr:`CLEANUP_REPEAT` seconds, so a
    trigger whose grace period ends while this notifier runs goes too.
    """

    #: Seconds between two tries of the deferred cleanup after a busy lock (at most).
    MAX_CLEANUP_DELAY = 60.0
    #: Seconds between two passes of the deferred cleanup once one succeeded.
    CLEANUP_REPEAT = 3600.0

    def __init__(
        self,
        dialect: Dialect,
        watches: Sequence[Watch],
        policy: Policy,
        log: logging.Logger,
        *,
        cleanup: bool,
    ) -> None:
        self._dialect = dialect
        self._watches = list(watches)
        self._policy = policy
        self._log = log
        now = time.monotonic()
        self._next_touch = now + HEARTBEAT
        self._cleanup_due: float | None = now if cleanup else None
        self._cleanup_delay = Backoff.INITIAL_DELAY
        #: Triggers removed by the deferred cleanup so far.
        self.removed = 0
        #: ``True`` once the deferred cleanup ran to the end (or was not asked for).
        self.cleaned = not cleanup

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_touch:
            self._next_touch = now + HEARTBEAT
            self._dialect.touch(self._watches, self._policy)
        due = self._cleanup_due
        if due is not None and now >= due:
            self._cleanup_once()

    def _cleanup_once(self) -> None:
        # One attempt: the next comes at a later tick, not in a loop here.
        policy = dataclasses.replace(self._policy, install_timeout=self._policy.lock_timeout)
        try:
            removed = self._dialect.cleanup(self._watches, policy=policy, keep_own=True)
        except SQLNotifyLockTimeoutError as exc:
            self._cleanup_delay = min(self._cleanup_delay * 2 + 1.0, self.MAX_CLEANUP_DELAY)
            self._cleanup_due = time.monotonic() + self._cleanup_delay
            self._log.info(
                "removing unused sqlnotify triggers waits for a lock; trying again in %.0fs (%s)",
                self._cleanup_delay,
                exc,
            )
            return
        self.removed += removed
        self._cleanup_due = time.monotonic() + self.CLEANUP_REPEAT
        self._cleanup_delay = Backoff.INITIAL_DELAY
        self.cleaned = True
        if removed:
            self._log.info("removed %d unused sqlnotify trigger(s)", removed)

    def stopped(self) -> None:
        """Record that this notifier stops (its rows stay, for the grace period)."""
        stopped = dataclasses.replace(self._policy, live=False)
        self._dialect.touch(self._watches, stopped)


def prune_overflow(dialect: Dialect, watches: Sequence[Watch], log: logging.Logger) -> int:
    """Delete the overflow payloads of the watches' schemas older than the retention."""
    store = dialect.overflow
    if store is None or store.retention is None:
        return 0
    schemas = sorted({w.effective_schema for w in watches}, key=str)
    deleted = store.prune(schemas, store.retention, store.prune_batch)
    if deleted:
        log.debug("pruned %d stored overflow payload(s)", deleted)
    return deleted


class Maintenance:
    """The ``sqlnotify-maintenance`` thread of one run: registry upkeep, then overflow pruning.

    The thread starts with the run; pruning starts once a watch has an
    overflow table (:meth:`start` with ``overflow``, again from ``notify()``).
    """

    #: Seconds between two turns of the thread.
    TICK = 1.0

    def __init__(
        self, dialect: Dialect, watches: Sequence[Watch], owners: Ownership, log: logging.Logger
    ) -> None:
        self._dialect = dialect
        self._watches = list(watches)
        self.owners = owners
        self._log = log
        self._thread: Periodic | None = None
        #: When the next prune is due (monotonic), ``None`` while pruning is off.
        self.prune_due: float | None = None
        self._lock = threading.Lock()

    def start(self, overflow: bool = False) -> None:
        """Start the thread; with ``overflow``, it prunes the overflow tables too."""
        store = self._dialect.overflow
        interval = store.prune_interval if store is not None else None
        wanted = overflow and interval and store is not None and store.retention
        with self._lock:
            if wanted and self.prune_due is None:
                self.prune_due = time.monotonic() + (interval or 0.0)
            if self._thread is None:
                tick = min(self.TICK, interval or self.TICK)
                self._thread = Periodic(self.tick, tick, log=self._log)
                self._thread.start()

    def tick(self) -> None:
        """One turn (maintenance thread): ownership upkeep, then pruning when due."""
        try:
            self.owners.tick()
        except Exception:
            self._log.warning(
                "sqlnotify trigger registry upkeep failed; retrying later", exc_info=True
            )
        store = self._dialect.overflow
        due = self.prune_due
        interval = store.prune_interval if store is not None else None
        if due is not None and interval and time.monotonic() >= due:
            self.prune_due = time.monotonic() + interval
            prune_overflow(self._dialect, self._watches, self._log)

    def stop(self, timeout: float) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self.prune_due = None
        if thread is not None:
            thread.stop(timeout)
