"""Deterministic, length-safe names for sqlnotify's database objects."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from .exceptions import SQLNotifyConfigurationError, SQLNotifyIdentifierSizeError

PREFIX = "sqlnotify_"
MAX_IDENTIFIER_BYTES = 63
_LABEL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,47}$")
_SLUG_RE = re.compile(r"[^a-z0-9_]+")


def check_label(label: str | None) -> str | None:
    """Validate a channel label: letters, digits, ``_``, ``.``, ``-``; 1-48 characters."""
    if label is None:
        return None
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise SQLNotifyConfigurationError(
            f"invalid channel_label {label!r}: use 1 to 48 characters from letters, digits,"
            " '_', '.' and '-', starting with a letter, digit or '_'"
        )
    return label


def digest(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def object_name(*parts: str, hashed: bool = False) -> str:
    """A lowercase ASCII name ``sqlnotify_<parts>`` of at most 63 bytes.

    When the readable form differs from the raw parts (case, punctuation,
    non-ASCII), is too long, or ``hashed`` says the caller's parts could be
    split another way, a hash of the raw parts is appended, so two different
    inputs never share a name.
    """
    raw = "\x1f".join(parts)
    slug = "_".join(_SLUG_RE.sub("_", p.lower()).strip("_") or "x" for p in parts)
    name = PREFIX + slug
    exact = not hashed and "_".join(parts) == slug
    if exact and len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    suffix = "_" + digest(raw)
    name = name[: MAX_IDENTIFIER_BYTES - len(suffix)].rstrip("_") + suffix
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:  # pragma: no cover - slug is ASCII
        raise SQLNotifyIdentifierSizeError(f"cannot shorten {name!r} to 63 bytes")
    return name


def _check_nul(text: str, what: str) -> None:
    if "\x00" in text:
        raise SQLNotifyConfigurationError(
            f"{what} {text!r} contains a NUL character (\\x00), which neither PostgreSQL nor"
            " SQLite accepts in SQL text: rename it without one"
        )


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (PostgreSQL and SQLite rules: ``"`` doubled)."""
    _check_nul(name, "identifier")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a PostgreSQL string literal, safe whatever ``standard_conforming_strings`` says.

    A value with a backslash becomes an escape string (``E'...'``), which
    PostgreSQL reads the same way under either setting.  SQLite has no such
    form: use :func:`quote_sqlite_literal` there.
    """
    _check_nul(value, "literal")
    body = value.replace("'", "''")
    if "\\" in body:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


def quote_sqlite_literal(value: str) -> str:
    """Quote an SQLite string literal: standard SQL, ``'`` doubled, backslash plain."""
    _check_nul(value, "literal")
    return "'" + value.replace("'", "''") + "'"


def qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped name, else ``""``."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def pyformat_safe(sql: str) -> str:
    """``sql`` (quoted names) made safe to run with psycopg2 parameters: ``%`` doubled.

    psycopg2 reads ``%`` in the statement as a placeholder whenever
    parameters are passed, even inside a quoted identifier.
    """
    return sql.replace("%", "%%")


def run_sql(conn: sa.Connection, sql: str) -> sa.CursorResult[Any]:
    """Run one statement that takes no parameters, passing the driver none.

    psycopg2 treats ``%`` in a statement as a placeholder as soon as any
    parameters (even an empty set) come with it, and names may hold ``%``.
    """
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
