"""Flask extension: one notifier per application, started once per process.

::

    db = SQLAlchemy(app)
    sqlnotify = SQLNotify(app)            # or SQLNotify() + sqlnotify.init_app(app)
    sqlnotify.notifier.watch(User, "insert")

    @sqlnotify.notifier.signal(User, "insert").connect_via(User)
    def on_user(sender, event):
        ...

Configuration keys (``app.config``):

``SQLNOTIFY_AUTOSTART`` (``True``)
    Start the listener before the first request this process handles.  A
    process that serves no request (the Werkzeug reloader's watcher, a
    ``flask`` CLI command) starts nothing.
``SQLNOTIFY_STOP_AT_EXIT`` (``True``)
    Stop the notifier when the interpreter exits (:mod:`atexit`).
``SQLNOTIFY_DATABASE_URI`` (``None``)
    A database URL for the notifier's own engine; by default the engine of
    Flask-SQLAlchemy (``db.engine``, or the bind ``SQLNOTIFY_BIND_KEY``).
``SQLNOTIFY_BIND_KEY`` (``None``)
    Which Flask-SQLAlchemy bind to use.

``SQLNOTIFY_REVOKE_ON_MODEL_CHANGE`` (``True``), ``SQLNOTIFY_CLEANUP_ON_START``
(``False``), ``SQLNOTIFY_CLEANUP_ON_STOP`` (``False``), ``SQLNOTIFY_USE_LOGGER``
(``True``), ``SQLNOTIFY_START_TIMEOUT`` (``30.0``) and
``SQLNOTIFY_DIALECT_OPTIONS`` (``{}``) are the :class:`~sqlnotify.Notifier`
options of the same names; they are ignored when the extension is given a
ready notifier.

Receivers run on the notifier's dispatcher thread, outside any application
context; wrap them with :func:`in_app_context` to use ``current_app`` or
``db.session`` there.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context

from ..exceptions import SQLNotifyConfigurationError
from ..notifier import Notifier

__all__ = ["SQLNotify", "in_app_context", "is_reloader_parent"]

F = TypeVar("F", bound=Callable[..., Any])

EXTENSION_KEY = "sqlnotify"

DEFAULTS: dict[str, Any] = {
    "SQLNOTIFY_AUTOSTART": True,
    "SQLNOTIFY_STOP_AT_EXIT": True,
    "SQLNOTIFY_DATABASE_URI": None,
    "SQLNOTIFY_BIND_KEY": None,
    "SQLNOTIFY_REVOKE_ON_MODEL_CHANGE": True,
    "SQLNOTIFY_CLEANUP_ON_START": False,
    "SQLNOTIFY_CLEANUP_ON_STOP": False,
    "SQLNOTIFY_USE_LOGGER": True,
    "SQLNOTIFY_START_TIMEOUT": 30.0,
    "SQLNOTIFY_DIALECT_OPTIONS": {},
}

log = logging.getLogger("sqlnotify.flask")


def is_reloader_parent(app: Flask) -> bool:
    """``True`` in the process that only watches files for Werkzeug's reloader.

    In debug mode ``flask run`` and ``app.run()`` start a watcher process
    that re-executes the program as a child with ``WERKZEUG_RUN_MAIN=true``;
    the child serves the requests.  A listener started in the watcher would
    be a second, useless one.
    """
    return bool(app.debug) and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


def in_app_context(app: Flask) -> Callable[[F], F]:
    """Decorator: run a receiver inside ``app.app_context()``.

    Receivers run on the dispatcher thread, where Flask has no context;
    with this one ``current_app``, ``g`` and Flask-SQLAlchemy's
    ``db.session`` work, and the session is removed when the receiver ends.
    """

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


_states: weakref.WeakSet[_State] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread of the parent would never be released here.
    for state in list(_states):
        state.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _State:
    """What the extension keeps per application, in ``app.extensions["sqlnotify"]``."""

    def __init__(
        self, extension: SQLNotify, notifier: Notifier, owned_engine: sa.Engine | None
    ) -> None:
        self.extension = extension
        self.notifier = notifier
        self.owned_engine = owned_engine
        self.started_pid: int | None = None
        self.lock = threading.Lock()
        _states.add(self)

    def start(self) -> None:
        with self.lock:
            self.notifier.start()
            self.started_pid = os.getpid()

    def start_once(self) -> None:
        """Start unless this process already started it (and maybe stopped it since)."""
        if self.started_pid == os.getpid():
            return
        with self.lock:
            if self.started_pid != os.getpid():
                self.notifier.start()
                self.started_pid = os.getpid()

    def at_exit(self) -> None:
        if self.started_pid == os.getpid():
            self.notifier.stop()
            if self.owned_engine is not None:
                self.owned_engine.dispose()


class SQLNotify:
    """The Flask extension: one :class:`~sqlnotify.Notifier` per application.

    :param app: the application; or call :meth:`init_app` later.
    :param notifier: a notifier configured elsewhere (then the engine and
        the notifier options in ``app.config`` are not used).  One notifier
        serves one application.
    :param engine: the engine to build the notifier on, instead of
        ``SQLNOTIFY_DATABASE_URI`` or Flask-SQLAlchemy's engine.
    """

    def __init__(
        self,
        app: Flask | None = None,
        notifier: Notifier | None = None,
        engine: sa.Engine | None = None,
    ) -> None:
        self._notifier = notifier
        self._engine = engine
        self._apps: list[Flask] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create the application's notifier and register the start and stop hooks.

        Call it after Flask-SQLAlchemy's ``init_app`` when the notifier uses
        its engine.  Watches are added on :attr:`notifier` afterwards, before
        the first request.
        """
        if EXTENSION_KEY in app.extensions:
            raise SQLNotifyConfigurationError(
                f"sqlnotify is already initialised on the Flask app {app.name!r}"
            )
        if self._notifier is not None and self._apps:
            raise SQLNotifyConfigurationError(
                f"this SQLNotify's notifier already serves the Flask app {self._apps[0].name!r};"
                " a notifier belongs to one app: create another SQLNotify for"
                f" {app.name!r}"
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        notifier, owned_engine = self._make_notifier(app)
        state = _State(self, notifier, owned_engine)
        app.extensions[EXTENSION_KEY] = state
        self._apps.append(app)
        if app.config["SQLNOTIFY_AUTOSTART"]:
            app.before_request(state.start_once)
        if app.config["SQLNOTIFY_STOP_AT_EXIT"]:
            atexit.register(state.at_exit)

    def _make_notifier(self, app: Flask) -> tuple[Notifier, sa.Engine | None]:
        if self._notifier is not None:
            return self._notifier, None
        config = app.config
        engine, owned = self._engine, None
        if engine is None and config["SQLNOTIFY_DATABASE_URI"]:
            engine = owned = sa.create_engine(config["SQLNOTIFY_DATABASE_URI"])
        if engine is None:
            db = app.extensions.get("sqlalchemy")
            if db is None:
                raise SQLNotifyConfigurationError(
                    f"sqlnotify has no database for the Flask app {app.name!r}: pass"
                    " SQLNotify(engine=...) or notifier=..., set SQLNOTIFY_DATABASE_URI, or"
                    " initialise Flask-SQLAlchemy before sqlnotify"
                )
            bind = config["SQLNOTIFY_BIND_KEY"]
            with app.app_context():
                engines = db.engines
                if bind not in engines:
                    raise SQLNotifyConfigurationError(
                        f"SQLNOTIFY_BIND_KEY is {bind!r}, but Flask-SQLAlchemy has no such bind;"
                        f" its binds are {sorted(map(repr, engines))}"
                    )
                engine = engines[bind]
        notifier = Notifier(
            engine,
            revoke_on_model_change=config["SQLNOTIFY_REVOKE_ON_MODEL_CHANGE"],
            cleanup_on_start=config["SQLNOTIFY_CLEANUP_ON_START"],
            use_logger=config["SQLNOTIFY_USE_LOGGER"],
            cleanup_on_stop=config["SQLNOTIFY_CLEANUP_ON_STOP"],
            start_timeout=float(config["SQLNOTIFY_START_TIMEOUT"]),
            **dict(config["SQLNOTIFY_DIALECT_OPTIONS"]),
        )
        return notifier, owned

    # -- access ---------------------------------------------------------------
    def _state(self, app: Flask | None) -> _State:
        if app is None:
            if has_app_context():
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            elif len(self._apps) == 1:
                app = self._apps[0]
            elif not self._apps:
                raise RuntimeError("SQLNotify.init_app(app) was not called yet")
            else:
                raise RuntimeError(
                    "this SQLNotify serves several apps: pass app=, or use it in an app context"
                )
        assert app is not None
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, _State) or state.extension is not self:
            raise RuntimeError(f"the Flask app {app.name!r} was not initialised by this SQLNotify")
        return state

    def get_notifier(self, app: Flask | None = None) -> Notifier:
        """The notifier of ``app`` (default: the current app, or the only one)."""
        return self._state(app).notifier

    @property
    def notifier(self) -> Notifier:
        """The notifier of the current app (or of the only app initialised)."""
        return self.get_notifier()

    # -- lifecycle ------------------------------------------------------------
    def start(self, app: Flask | None = None, *, force: bool = False) -> bool:
        """Start the app's listener now rather than before the first request.

        Does nothing in the Werkzeug reloader's watcher process
        (:func:`is_reloader_parent`) unless ``force``; then
        ``SQLNOTIFY_AUTOSTART`` still starts it on the first request, which
        only a serving process handles.  Returns whether the notifier runs.
        """
        state = self._state(app)
        target = app or self._app_of(state)
        if not force and is_reloader_parent(target):
            log.info("not starting sqlnotify in the reloader's watcher process")
            return False
        state.start()
        return state.notifier.is_running

    def stop(self, app: Flask | None = None) -> None:
        """Stop the app's notifier (it stays stopped until :meth:`start`)."""
        self._state(app).notifier.stop()

    def _app_of(self, state: _State) -> Flask:
        for app in self._apps:
            if app.extensions.get(EXTENSION_KEY) is state:
                return app
        raise RuntimeError("unknown sqlnotify state")  # pragma: no cover
