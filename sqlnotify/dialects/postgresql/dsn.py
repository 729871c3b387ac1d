"""Connection settings for sqlnotify's own PostgreSQL sessions, from an engine's URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ...exceptions import SQLNotifyConfigurationError

__all__ = ["URL_KEYS", "listener_dsn"]

# libpq connection keywords a URL query may carry through to the listener.
LIBPQ_KEYWORDS = frozenset(
    [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "requiressl",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
        "sslcertmode",
        "require_auth",
    ]
)

# The payload is concatenated text around one json_build_object() (cheaper
# than nesting two), and pg_notify() is called inside an IF: PL/pgSQL
#: The keywords a URL's host, port, user, password and database become.
URL_KEYS = frozenset({"host", "port", "user", "password", "dbname"})


def listener_dsn(url: sa.URL, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """psycopg2 connection keywords for ``url``, whatever its PostgreSQL driver.

    Host, port, user, password, database and libpq query parameters
    (``sslmode``, a unix-socket ``host``, ...) are kept; asyncpg's ``ssl=``
    becomes ``sslmode=``; driver-specific options libpq does not know are
    dropped.  ``extra`` (the ``listener_connect_args`` option) is applied
    last, for settings an application passes to its engine through
    ``connect_args`` rather than the URL.
    """
    kwargs: dict[str, Any] = {}
    args = url.translate_connect_args(username="user", database="dbname")
    for key, value in args.items():
        if value is not None:
            kwargs[key] = str(value)
    for key, value in url.query.items():
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        if key == "ssl" and "sslmode" not in url.query:
            mapping = {"true": "require", "false": "disable"}
            kwargs["sslmode"] = mapping.get(text.lower(), text)
        elif key in LIBPQ_KEYWORDS:
            kwargs[key] = text
    for key, value in (extra or {}).items():
        if key not in LIBPQ_KEYWORDS:
            raise SQLNotifyConfigurationError(
                f"listener_connect_args: {key!r} is not a libpq connection keyword"
                " (for example sslmode, sslrootcert, password, options, connect_timeout)"
            )
        kwargs[key] = str(value)
    # The listener's session must be recognisable in pg_stat_activity.
    app = kwargs.get("application_name")
    kwargs["application_name"] = (
        f"{app}/sqlnotify" if app and "sqlnotify" not in app else app or "sqlnotify"
    )
    kwargs.setdefault("connect_timeout", "10")
    kwargs.setdefault("keepalives", "1")
    kwargs.setdefault("keepalives_idle", "10")
    kwargs.setdefault("keepalives_interval", "5")
    kwargs.setdefault("keepalives_count", "3")
    return kwargs
