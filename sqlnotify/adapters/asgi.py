"""ASGI lifespans (FastAPI, Starlette, any ASGI application): start and stop a notifier.

Nothing here imports a framework; the ASGI types below are plain aliases,
compatible with Starlette's.

In a FastAPI or Starlette lifespan::

    @asynccontextmanager
    async def lifespan(app):
        async with sqlnotify_lifespan(notifier):
            yield

    app = FastAPI(lifespan=lifespan)

or, when the notifier is all the lifespan does,
``FastAPI(lifespan=sqlnotify_lifespan(notifier))``.

The notifier is started with :meth:`~sqlnotify.Notifier.astart`, so
``async def`` callbacks run on the server's event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

from ..notifier import Notifier

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "sqlnotify_lifespan",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class sqlnotify_lifespan:  # noqa: N801 - used like a function, as asynccontextmanager
    """An async context manager that runs a notifier for the duration of an app's lifespan.

    On entry it awaits :meth:`Notifier.astart` (triggers installed, the
    listener listening); on exit it awaits :meth:`Notifier.astop`, whatever
    ends the block: a normal shutdown, an exception raised by startup code
    that runs after it, or a cancellation.  The entered value is the
    notifier.

    It can also be passed directly as an application's lifespan: called
    with the application, it returns a fresh context manager for the same
    notifier, which gives the server no lifespan state.

    :param stop_timeout: how long :meth:`Notifier.astop` waits for async
        callbacks already queued (default: the notifier's ``drain_timeout``).
    """

    def __init__(self, notifier: Notifier, *, stop_timeout: float | None = None) -> None:
        if not isinstance(notifier, Notifier):
            raise TypeError(f"sqlnotify_lifespan() needs a Notifier, not {type(notifier).__name__}")
        self.notifier = notifier
        self.stop_timeout = stop_timeout

    def __call__(self, app: ASGIApp | Any) -> _AppLifespan:
        return _AppLifespan(self.notifier, stop_timeout=self.stop_timeout)

    async def __aenter__(self) -> Notifier:
        await self.notifier.astart()
        return self.notifier

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.notifier.astop(timeout=self.stop_timeout)


class _AppLifespan(sqlnotify_lifespan):
    """``sqlnotify_lifespan`` as an application's own lifespan: it yields no state."""

    async def __aenter__(self) -> None:  # type: ignore[override]
        await self.notifier.astart()
