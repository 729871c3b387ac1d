"""Receivers are checked when they are added, not when the first event reaches them.

:func:`check_receiver` raises at registration when a callable cannot be
called the way its registration will call it.  :class:`WatchSignal` is the
blinker signal of one watch: it checks every receiver connected to it, and
holds receivers strongly unless ``weak=True`` is passed, so a lambda or a
function defined inside another (a Flask app factory's receivers) is never
dropped silently.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import blinker

from ..exceptions import SQLNotifyConfigurationError
from .delivery import receiver_name

__all__ = ["WatchSignal", "check_receiver"]

F = TypeVar("F", bound=Callable[..., Any])

#: How :meth:`Notifier.subscribe` and :meth:`Notifier.on_gap` call a function.
ONE_ARGUMENT = "fn(value)"
#: How a watch's signal calls its receivers.
SENDER_AND_EVENT = "fn(sender, event=ChangeEvent)"

_HINTS = {
    ONE_ARGUMENT: (
        "for a receiver written as fn(sender, event), connect it with"
        " notifier.signal(model, operation).connect(fn) instead"
    ),
    SENDER_AND_EVENT: (
        "write it as def receiver(sender, event): ... (or add **kwargs); for a function"
        " taking the event alone, use @notifier.subscribe(model, operation)"
    ),
}


def check_receiver(fn: Any, form: str, where: str, *, arg: str = "event") -> None:
    """Raise unless ``fn`` accepts the arguments ``form`` describes.

    :param form: :data:`ONE_ARGUMENT` or :data:`SENDER_AND_EVENT`.
    :param where: the registration, for the message (``"subscribe()"``).
    :param arg: the name of the one argument, for the message.
    :raises SQLNotifyConfigurationError: naming the callable, its
        signature and the form expected.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): accepted as it is
    if form == ONE_ARGUMENT:
        args: tuple[Any, ...] = (object(),)
        kwargs: dict[str, Any] = {}
        shown = f"fn({arg})"
    else:
        args, kwargs, shown = (object(),), {"event": object()}, form
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise SQLNotifyConfigurationError(
            f"{where} calls its receivers as {shown}, but {receiver_name(fn)}{signature}"
            f" cannot be called that way ({exc}); {_HINTS[form]}"
        ) from None


class WatchSignal(blinker.Signal):
    """The blinker signal of one watch (see :meth:`Notifier.signal`).

    Differs from :class:`blinker.Signal` in two ways: :meth:`connect`
    checks that the receiver accepts ``(sender, event=...)``, and holds it
    strongly unless ``weak=True`` is passed.
    """

    def __init__(self, description: str) -> None:
        super().__init__(f"row changes of {description}")
        self.description = description

    def connect(self, receiver: F, sender: Any = blinker.ANY, weak: bool = False) -> F:
        """Call ``receiver(sender, event=ChangeEvent)`` for each event, on the dispatcher thread.

        :param sender: only events whose sender is this object (the watched
            model, Table or name as given to :meth:`Notifier.watch`).
        :param weak: hold the receiver by weak reference, so it is
            disconnected once nothing else refers to it (blinker's default;
            here the default is a strong reference, so a lambda or a nested
            function keeps being called until :meth:`disconnect`).
        :raises SQLNotifyConfigurationError: when ``receiver`` cannot be
            called as ``receiver(sender, event=...)``.
        """
        check_receiver(receiver, SENDER_AND_EVENT, f"the signal of {self.description}")
        if weak and getattr(receiver, "__name__", None) == "<lambda>":
            warnings.warn(
                f"a lambda connected with weak=True to the signal of {self.description} is"
                " garbage-collected as soon as connect() returns and will never be called;"
                " connect it without weak=True (the default holds it), or keep a reference",
                RuntimeWarning,
                stacklevel=2,
            )
        return super().connect(receiver, sender, weak)
