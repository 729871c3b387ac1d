"""The running half of :class:`~sqlnotify.Notifier`: install, start, stop, fork.

:class:`Lifecycle` installs the watches' triggers and hands each start to a
:class:`~sqlnotify._pipeline.run.Run` (the listener, intake, dispatcher and
bridge of one start-to-stop); it stops that run, releases the triggers, and
lets go of the parent's threads in a forked child.  ``Notifier`` (in
:mod:`sqlnotify.notifier`) adds the configuration: watches, subscriptions,
custom notifications and health.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal as _signal
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from ._backfill import BackfillRequest, Progress
from ._ownership import Policy, new_user_id
from ._pipeline.bridge import LoopBridge
from ._pipeline.delivery import Delivery
from ._pipeline.dispatcher import Dispatcher
from ._pipeline.intake import Intake
from ._pipeline.listener import Listener
from ._pipeline.maintenance import Ownership, install_triggers, prune_overflow
from ._pipeline.run import Run, catching_signals, wait_for_stop
from ._pipeline.subscriptions import AsyncSide, Entry, Registry
from ._watch import Watch
from .dialects.base import Dialect, InstallState
from .events import Operation
from .exceptions import SQLNotifyConfigurationError, SQLNotifyException, SQLNotifyForkError

__all__ = ["Lifecycle"]

_L = TypeVar("_L", bound="Lifecycle")

#: Every notifier of this process (each adds itself); a forked child resets their state.
NOTIFIERS: weakref.WeakSet[Lifecycle] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for notifier in list(NOTIFIERS):
        notifier._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Lifecycle:
    """Installing and running a notifier (the base of :class:`~sqlnotify.Notifier`).

    Its state is set by ``Notifier.__init__``; it is not used on its own.
    """

    #: Bound on joining each thread in :meth:`stop`.
    STOP_TIMEOUT = 10.0

    log: logging.Logger
    start_timeout: float
    drain_timeout: float
    revoke_on_model_change: bool
    cleanup_on_start: bool
    cleanup_on_stop: bool
    consumer: str | None
    max_queue: int
    queue_timeout: float
    journal_retention: float
    consumer_expiry: float
    install_states: list[InstallState]
    forked: bool
    _dialect: Dialect
    _registry: Registry
    _lock: threading.RLock
    _running: bool
    _stopped: threading.Event
    _fork_error: str | None
    _policy: Policy
    _delivery: Delivery
    _async: AsyncSide
    _run: Run | None
    #: The watches ``backfill()`` named, with what it asked.
    _backfills: list[tuple[Entry, BackfillRequest]] | None = None

    @property
    def _advice(self) -> Mapping[str, str]:
        """How log messages name the settings they advise (the command line sets its own)."""
        return self._delivery.advice

    @_advice.setter
    def _advice(self, advice: Mapping[str, str]) -> None:
        self._delivery.advice = advice

    @property
    def dialect_name(self) -> str:
        """The database's SQLAlchemy dialect name: ``"postgresql"``, ``"sqlite"``, ``"mysql"``..."""
        return self._dialect.name

    @property
    def dialect(self) -> Dialect:
        """The dialect object (for tools; its API is not stable)."""
        return self._dialect

    @property
    def watches(self) -> list[Watch]:
        """The resolved watches (tables given by name appear once reflected at start)."""
        return self._registry.watches

    @property
    def is_running(self) -> bool:
        """``True`` between a successful :meth:`start` and :meth:`stop`."""
        return self._running

    @property
    def listener_thread_name(self) -> str | None:
        listener = self._listener
        return listener.name if listener else None

    @property
    def callback_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop ``async def`` callbacks run on while running, else ``None``."""
        bridge = self._bridge
        return bridge.loop if bridge is not None else None

    @property
    def loop_thread(self) -> threading.Thread | None:
        """The private event-loop thread (only after :meth:`start` with async callbacks)."""
        bridge = self._bridge
        if bridge is None or bridge.thread is None:
            return None
        return bridge.thread.thread

    # -- the current run's parts (for tools and tests) ---------------------------
    @property
    def _listener(self) -> Listener | None:
        return self._run.listener if self._run is not None else None

    @property
    def _dispatcher(self) -> Dispatcher | None:
        return self._run.dispatcher if self._run is not None else None

    @property
    def _intake(self) -> Intake | None:
        return self._run.intake if self._run is not None else None

    @property
    def _owners(self) -> Ownership | None:
        return self._run.owners if self._run is not None else None

    @property
    def _prune_due(self) -> float | None:
        return self._run.prune_due if self._run is not None else None

    @property
    def _bridge(self) -> LoopBridge | None:
        return self._delivery.bridge

    # -- triggers ------------------------------------------------------------------
    def prepare(self) -> list[Watch]:
        """Resolve every watch against the database (reflecting tables given by name)."""
        with self._lock:
            return self._registry.resolve(self._dialect, self._dialect.default_schema())

    @property
    def policy(self) -> Policy:
        """The lock bounds, grace period and registry identity this notifier uses."""
        return self._policy

    def install(self, *, timeout: float | None = None) -> list[InstallState]:
        """Install (or update) the triggers of every watch without starting the listener.

        Records this notifier as a user of each trigger.  Installs only what
        is missing or changed, with the weakest locks, each statement within
        ``lock_timeout``, all of it within ``install_timeout``.

        :param timeout: bound on reaching the server first (default: the
            ``start_timeout`` option).
        :raises SQLNotifyListenerError: naming the address, when the
            database cannot be reached or does not answer as one.
        :raises SQLNotifyLockTimeoutError: naming the sessions that held a lock.
        """
        return self._install(live=False, timeout=timeout)

    def _install(self, live: bool, timeout: float | None = None) -> list[InstallState]:
        with self._lock:
            self._dialect.check_reachable(self.start_timeout if timeout is None else timeout)
            states = install_triggers(
                self._dialect,
                self.prepare,
                lambda: self.watches,
                revoke=self.revoke_on_model_change,
                policy=dataclasses.replace(self._policy, live=live),
                log=self.log,
                advice=self._delivery.advice,
            )
            self.install_states = states
            return states

    def uninstall(self) -> int:
        """Stop using the watches' triggers; remove those nobody else uses.

        A trigger stays while another notifier is live on it or was seen
        within ``cleanup_grace``.  Returns how many were removed.

        :raises SQLNotifyLockTimeoutError: naming the sessions that held a lock.
        """
        with self._lock:
            return self._dialect.uninstall(self.prepare(), policy=self._policy)

    def cleanup(self) -> int:
        """Remove the unused sqlnotify triggers on the watched tables; return how many.

        A running notifier keeps its own; a stopped one stops using them.
        Any trigger another notifier is live on or was seen using within
        ``cleanup_grace`` stays, and so does a durable watch's trigger while
        its journal rows are kept.

        :raises SQLNotifyLockTimeoutError: naming the sessions that held a lock.
        """
        with self._lock:
            return self._dialect.cleanup(
                self.prepare(), policy=self._policy, keep_own=self._running
            )

    def ddl(self) -> list[str]:
        """The SQL that installs every watch, for migrations and review."""
        with self._lock:
            statements: list[str] = []
            for watch in self.prepare():
                for stmt in self._dialect.ddl(watch):
                    if stmt not in statements:  # shared objects (the overflow table) once
                        statements.append(stmt)
            return statements

    def prune_overflow(self) -> int:
        """Delete stored overflow payloads older than the retention period; return how many.

        A running notifier calls it by itself every ``overflow_prune_interval``
        seconds on its ``sqlnotify-maintenance`` thread, for the schemas of its
        watches, once one of them has an overflow table (a watch with
        ``use_overflow_table=True``, or an earlier ``notify()`` through it);
        calling it by hand is only useful without a listener.
        """
        return prune_overflow(self._dialect, self.watches, self.log)

    def backfill(
        self: _L,
        model_or_name: object,
        operation: Operation | str = Operation.INSERT,
        channel_label: str | None = None,
        *,
        page_size: int = 5000,
        progress: Progress | None = None,
    ) -> _L:
        """Deliver the table's current rows first, then its changes: no gap, no duplicate.

        At start, the rows the watched table holds are read in primary key
        order, in pages of ``page_size`` rows (each page in a transaction
        of its own), and delivered to the receivers of the named watch (by
        default the table's INSERT watch) as events whose ``operation`` is
        :attr:`Operation.SNAPSHOT <sqlnotify.Operation.SNAPSHOT>`, typed like
        its other events.  Then the journal continues from the consumer's
        position when the backfill began; a change a page already showed is
        skipped, a later one delivered.  The watch must be durable, and so
        must every watch of the table whose changes should follow the rows
        (PostgreSQL).  Returns the notifier, so calls chain.

        With ``consumer=`` the backfill's progress is saved with the
        consumer's position: a process that dies mid-way resumes after the
        last page whose receivers ran (a page may come twice: at least
        once), and a finished backfill is not done again by that consumer.
        Without a consumer, every start backfills anew.

        :param progress: ``progress(done, total_estimate)``, called on the
            dispatcher thread after each page's receivers ran: rows
            delivered so far, and the table's estimated row count (the
            exact count once every page was read; ``None`` if unknown).
            ``health()["backfill"]`` reports the same, and each page is
            logged at INFO.
        :raises SQLNotifyConfigurationError: when the watch does not exist
            (``watch()`` first), or when called while running.
        """
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise SQLNotifyConfigurationError(
                f"page_size must be a positive int, not {page_size!r}"
            )
        if progress is not None and not callable(progress):
            raise SQLNotifyConfigurationError(f"progress must be callable, not {progress!r}")
        with self._lock:
            if self._running:
                raise SQLNotifyConfigurationError("backfill() must be called before start()")
            entry = self._registry.find(model_or_name, operation, channel_label)
            if not entry.request.durable:
                raise SQLNotifyConfigurationError(
                    f"backfill() needs a durable watch: watch({entry.request.target!r},"
                    f" {entry.request.operation.value!r}, durable=True)"
                )
            kept = [(e, r) for e, r in self._backfills or () if e is not entry]
            self._backfills = [*kept, (entry, BackfillRequest(page_size, progress))]
        return self

    def start(self, timeout: float | None = None) -> None:
        """Install triggers, start the listener and dispatcher threads, and wait until listening.

        Returns once the listener has proven with a round trip through the
        database that it receives notifications, so a change committed after
        ``start()`` returns is delivered.  Calling it on a running notifier
        does nothing.  ``async def`` callbacks then run on a private event
        loop thread (``sqlnotify-asyncio``) that :meth:`stop` ends; from
        async code use :meth:`astart` instead, so they run on your loop.

        :raises SQLNotifyConfigurationError: for a watch that does not match its table.
        :raises SQLNotifyListenerError: when the listener cannot connect or listen.
        :raises SQLNotifyLockTimeoutError: when a trigger could not be installed
            within ``install_timeout`` (each try waits at most ``lock_timeout``);
            it names the sessions that held the lock.
        :raises SQLNotifyForkError: in a child forked while another thread of
            the parent was starting or stopping this notifier.
        """
        self._warn_in_loop("start()")
        self._start(timeout, None)

    def _warn_in_loop(self, call: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop on this thread: the usual case
        if self._running:
            return
        warnings.warn(
            f"{call} was called from a running event loop: it blocks the loop until the"
            " listener listens, and async def callbacks will run on the private"
            " sqlnotify-asyncio loop thread rather than this loop; use"
            " 'await notifier.astart()' (or 'async with notifier') in async code",
            RuntimeWarning,
            stacklevel=3,
        )

    def _start(self, timeout: float | None, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._fork_error is not None:
            raise SQLNotifyForkError(self._fork_error)
        with self._lock:
            if self._running:
                return
            timeout = self.start_timeout if timeout is None else timeout
            states = self._install(live=True, timeout=timeout)
            watches = [s.watch for s in states]
            run = Run(
                sender=self,
                dialect=self._dialect,
                delivery=self._delivery,
                async_side=self._async,
                log=self.log,
                stop_timeout=self.STOP_TIMEOUT,
            )
            run.start(
                watches,
                [e.signal for e in self._registry.entries],
                loop=loop,
                timeout=timeout,
                consumer=self.consumer,
                max_queue=self.max_queue,
                queue_timeout=self.queue_timeout,
                retention=self.journal_retention,
                consumer_expiry=self.consumer_expiry,
                wants_loop=self._async.wants_loop,
                backfills=[(e.watch, r) for e, r in self._backfills or () if e.watch is not None],
            )
            self._run = run
            self._running = True
            self._stopped.clear()
            run.start_maintenance(self._policy, self.cleanup_on_start)
            self.log.info("sqlnotify listening on %d channel(s)", len(watches))

    def stop(self, cleanup: bool | None = None) -> None:
        """Stop the listener, dispatch what was already received, and join both threads.

        ``async def`` callbacks already queued or running get up to
        ``drain_timeout`` seconds to finish; the rest are cancelled and
        counted in the log (called on the loop's own thread, this cannot
        wait: use :meth:`astop` there).  Streams end.

        :param cleanup: remove the watches' triggers too (default: the
            ``cleanup_on_stop`` option).  Calling it on a stopped notifier does
            nothing.
        """
        self._stop(cleanup, None)

    def _stop(self, cleanup: bool | None, drain_timeout: float | None) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False
            run = self._run
            assert run is not None
            owners = run.stop(self.drain_timeout if drain_timeout is None else drain_timeout)
            try:
                self._release(owners, cleanup if cleanup is not None else self.cleanup_on_stop)
            finally:
                self._dialect.close()
                self._stopped.set()
            self.log.info("sqlnotify stopped")

    def _release(self, owners: Ownership | None, cleanup: bool) -> None:
        """Record the stop in the registry, or remove the triggers nobody else uses."""
        try:
            if cleanup:
                self._dialect.uninstall(self.watches, policy=self._policy)
            elif owners is not None:
                owners.stopped()
        except SQLNotifyException as exc:
            self.log.warning("at stop, the trigger registry was left as it was: %s", exc)
        except DBAPIError as exc:
            self.log.warning("at stop, the trigger registry was left as it was: %s", exc.orig)

    def run_forever(
        self, stop_signals: Sequence[int] = (_signal.SIGINT, _signal.SIGTERM)
    ) -> int | None:
        """Start if needed, block until a stop signal arrives, then stop cleanly.

        For worker-style scripts.  On the main thread, handlers for
        ``stop_signals`` are installed for the duration and the previous
        handlers restored before stopping (so a second Ctrl-C during a slow
        stop acts as usual).  On another thread no handler is installed and
        the call returns once :meth:`stop` was called elsewhere.

        :returns: the signal number that ended the wait, or ``None`` when
            :meth:`stop` was called from another thread (or a receiver).
        """
        # The handlers first: a signal that arrives while start() runs still stops.
        with catching_signals(stop_signals) as caught:
            self.start()
            received = wait_for_stop(self._stopped, caught)
        self.log.info(
            "sqlnotify stopping on %s",
            _signal.Signals(received).name if received is not None else "stop()",
        )
        self.stop()
        return received

    def _after_fork(self) -> None:
        """Forget the parent's threads and connection; runs in the child, right after fork."""
        # Only the forking thread exists now.  A lock held by another thread
        # of the parent would never be released: replace it, and refuse to
        # restart if the fork caught a start() or stop() half done.
        if self._lock.acquire(blocking=False):
            self._lock.release()
        else:
            self._fork_error = (
                f"{self!r} was being started or stopped by another thread when process"
                f" {os.getppid()} forked this one; create a new Notifier in the child"
            )
        self._lock = threading.RLock()
        self._dialect.after_fork()
        self._policy = dataclasses.replace(self._policy, user=new_user_id())
        run, self._run = self._run, None
        self._async.lock = threading.Lock()
        listener = run.listener if run is not None else None
        if not self._running and listener is None:
            return  # never started: nothing of the parent's to let go of
        # The event loop thread is the parent's too; its streams serve the parent's loop.
        self._async.after_fork()
        self._running = False
        self._stopped = threading.Event()
        self._stopped.set()
        self.forked = True
        if run is not None:
            run.abandon()
        try:
            # The parent's pooled connections stay the parent's (closed=False).
            self._dialect.engine.dispose(close=False)
        except Exception:  # noqa: S110 - nothing to log safely this early in a child
            pass

    def __enter__(self: _L) -> _L:
        self._warn_in_loop("'with notifier'")
        self._start(None, None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- asyncio --------------------------------------------------------------
    async def astart(self, timeout: float | None = None) -> None:
        """:meth:`start` for async code: ``async def`` callbacks run on the calling loop.

        The blocking work (trigger installation, waiting for the listener)
        runs in a worker thread, so the loop keeps serving meanwhile.  If
        the awaiting task is cancelled, the start is allowed to finish and
        is then undone before the cancellation propagates.  Calling it on a
        running notifier does nothing (callbacks stay where they run).
        """
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._start, timeout, loop)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            try:
                await future
            except BaseException:  # noqa: S110 - the start failed: nothing to undo
                pass
            else:
                await asyncio.to_thread(self.stop)
            raise

    async def acleanup(self) -> int:
        """:meth:`cleanup` for async code: the DDL runs in a worker thread, the loop keeps serving.

        Removes every sqlnotify-owned trigger and function on the watched
        tables; returns how many objects were dropped.
        """
        return await asyncio.to_thread(self.cleanup)

    async def astop(self, cleanup: bool | None = None, timeout: float | None = None) -> None:
        """:meth:`stop` for async code, without blocking the loop.

        Waits up to ``timeout`` seconds (default: the ``drain_timeout``
        option) for ``async def`` callbacks already queued or running, then
        cancels what is left and logs how many callbacks that was.  Streams
        end.  Calling it on a stopped notifier does nothing.
        """
        bridge = self._bridge
        if bridge is not None and bridge.loop is asyncio.get_running_loop():
            bridge.exempt(asyncio.current_task())  # a callback stopping its notifier
        await asyncio.to_thread(self._stop, cleanup, timeout)

    async def __aenter__(self: _L) -> _L:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()
