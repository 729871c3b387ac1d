"""A bounded first contact with a PostgreSQL server, before anything else of start().

A psycopg2 connection in asynchronous mode, driven to the end of the
startup exchange under one deadline: an address that refuses, never
answers or speaks another protocol gives a clear error within the bound,
instead of a blocking connect that may never return.
"""

from __future__ import annotations

import select
import time
from collections.abc import Mapping
from typing import Any

from ..exceptions import SQLNotifyListenerError

__all__ = ["describe_address", "probe"]


def describe_address(dsn: Mapping[str, Any]) -> str:
    """``host:port (database 'db', user 'u')`` for messages, from libpq keywords."""
    host = dsn.get("host") or dsn.get("hostaddr") or "the local socket"
    port = dsn.get("port") or "5432"
    where = f"{host}:{port}" if not str(host).startswith("/") else f"{host} (port {port})"
    return f"{where} (database {dsn.get('dbname')!r}, user {dsn.get('user')!r})"


def probe(dsn: Mapping[str, Any], timeout: float) -> None:
    """Connect to the server once and hang up, all within ``timeout`` seconds.

    :raises SQLNotifyListenerError: naming the address, when the server
        refuses, fails the startup exchange, or does not finish it in time.
    """
    import psycopg2
    import psycopg2.extensions as ext

    address = describe_address(dsn)
    deadline = time.monotonic() + max(0.0, timeout)
    try:
        conn = psycopg2.connect(async_=1, **dsn)
    except psycopg2.Error as exc:
        raise _error(address, exc) from exc
    try:
        while True:
            try:
                state = conn.poll()
            except psycopg2.Error as exc:
                raise _error(address, exc) from exc
            if state == ext.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SQLNotifyListenerError(
                    f"cannot connect to PostgreSQL at {address}: no answer to the startup"
                    f" exchange within {timeout:g}s (start_timeout); is a PostgreSQL server"
                    " listening there, and not another service?"
                )
            poller = select.poll()
            poller.register(
                conn.fileno(), select.POLLOUT if state == ext.POLL_WRITE else select.POLLIN
            )
            poller.poll(min(remaining, 0.5) * 1000.0)
    finally:
        conn.close()


def _error(address: str, exc: BaseException) -> SQLNotifyListenerError:
    text = str(exc).strip()
    reason = (
        " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__
    )
    hint = ""
    lowered = reason.lower()
    if "invalid response" in lowered or "expected authentication" in lowered:
        hint = "; the service at that address does not speak PostgreSQL's protocol"
    elif "refused" in lowered:
        hint = "; is the server running, and are host and port right?"
    return SQLNotifyListenerError(f"cannot connect to PostgreSQL at {address}: {reason}{hint}")
