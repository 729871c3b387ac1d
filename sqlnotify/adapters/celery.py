"""Celery: run a notifier's listener inside Celery worker processes.

A listener must be started in the process that uses it, after any fork.
:func:`connect_celery` hooks a notifier to Celery's worker signals, in one
of two places:

``where="process"`` (the default)
    In every process that runs tasks: each prefork pool process starts its
    own listener after the fork (``worker_process_init``) and stops it when
    it exits (``worker_process_shutdown``).  With the ``solo``, ``threads``,
    ``gevent`` or ``eventlet`` pools that is the worker's one process.  For
    receivers that act locally in each process (clear a cache, refresh an
    in-memory table).  Every process receives every event.
``where="main"``
    Once per worker node, in the worker's main process, from
    ``worker_ready`` to ``worker_shutdown``.  For receivers that turn events
    into tasks (``task.delay(...)``): each event is enqueued once per worker
    node rather than once per pool process.

Receivers run on the notifier's dispatcher thread of that process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from celery import signals

from ..exceptions import SQLNotifyConfigurationError
from ..notifier import Notifier

__all__ = ["connect_celery"]

log = logging.getLogger("sqlnotify.celery")

# Pools that send worker_process_init in each process that runs tasks.
_POOLS_WITH_PROCESS_INIT = ("celery.concurrency.prefork", "celery.concurrency.solo")


def _app_of(sender: Any) -> Any:
    return getattr(sender, "app", None)


def connect_celery(
    notifier: Notifier,
    app: Any = None,
    *,
    where: Literal["process", "main"] = "process",
) -> Callable[[], None]:
    """Start ``notifier`` in Celery worker processes and stop it at shutdown.

    :param notifier: a configured notifier (watches and receivers added);
        it is not started here, nor in processes that are not workers.
    :param app: the Celery app; when given, worker signals of other apps in
        the same process are ignored.
    :param where: ``"process"``: in each process that runs tasks;
        ``"main"``: in the worker's main process only (see the module
        documentation).
    :returns: a function that disconnects the hooks again.
    """
    if where not in ("process", "main"):
        raise SQLNotifyConfigurationError(f"where must be 'process' or 'main', not {where!r}")

    def mine(sender: Any) -> bool:
        return app is None or _app_of(sender) in (None, app)

    def start(reason: str) -> None:
        try:
            notifier.start()
        except Exception:
            log.exception("sqlnotify could not start in the Celery worker (%s)", reason)
            raise
        log.info("sqlnotify started in the Celery worker (%s)", reason)

    def on_process_init(sender: Any = None, **_: Any) -> None:
        start("worker_process_init")

    def on_process_shutdown(sender: Any = None, **_: Any) -> None:
        notifier.stop()

    def on_ready(sender: Any = None, **_: Any) -> None:
        if not mine(sender):
            return
        if where == "process":
            pool = getattr(sender, "pool", None)
            if type(pool).__module__ in _POOLS_WITH_PROCESS_INIT:
                return  # its processes start their own
        start("worker_ready")

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        if mine(sender):
            notifier.stop()

    uid = f"sqlnotify-{id(notifier):x}"
    hooks: list[tuple[Any, Callable[..., None]]] = [
        (signals.worker_ready, on_ready),
        (signals.worker_shutdown, on_shutdown),
    ]
    if where == "process":
        hooks += [
            (signals.worker_process_init, on_process_init),
            (signals.worker_process_shutdown, on_process_shutdown),
        ]
    for signal, receiver in hooks:
        signal.connect(receiver, weak=False, dispatch_uid=f"{uid}-{where}-{signal.name}")

    def disconnect() -> None:
        for signal, _receiver in hooks:
            signal.disconnect(dispatch_uid=f"{uid}-{where}-{signal.name}")

    return disconnect
