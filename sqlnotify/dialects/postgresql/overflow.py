"""PostgreSQL rows too large for one notification: the overflow table and re-reads.

A watch with ``use_overflow_table=True`` stores an oversized payload in
``sqlnotify_overflow`` (in the watched table's schema) within the writing
transaction and notifies ``{"ts": ..., "ovf": <id>}``; the dispatcher
fetches the payloads of a batch in one query.  Other watches send the keys
(``"trunc": true``) and the dispatcher re-reads the row.  Every query here
runs on a pooled connection in autocommit, never on the listening one.
Stored payloads are kept for a retention period, since every listening
process reads them, and pruned in bounded batches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..._names import pyformat_safe, qualified, quote_ident, quote_literal, run_sql
from ..._watch import Watch
from ...exceptions import SQLNotifyConfigurationError
from .ownership import brief_read, is_lock_timeout
from .sql import (
    COUNT_SQL,
    FETCH_SQL,
    NOTIFY_SQL,
    OVERFLOW_BRANCH_SQL,
    OVERFLOW_DDL,
    OVERFLOW_PRUNE_SQL,
    OVERFLOW_TABLE,
    REGCLASS_SQL,
    REREAD_SQL,
    STORE_SQL,
    TABLES_SQL,
    XACT_LOCK_SQL,
    pairs,
)

__all__ = ["PgOverflow", "positive"]


def positive(options: Mapping[str, Any], name: str, default: float) -> float:
    """A positive number from the notifier's dialect options."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SQLNotifyConfigurationError(
            f"Notifier option {name}={value!r} is invalid: use a positive number"
            f" (default {default:g})"
        )
    return float(value)


class PgOverflow:
    """The overflow tables of one database, and re-reads of rows sent by key.

    The dialect's :class:`~sqlnotify.dialects.base.OverflowStore`.

    Thread-safe: the dispatcher thread fetches and re-reads, the maintenance
    thread prunes, application threads store custom payloads.
    """

    #: Most bounded DELETE rounds one :meth:`prune` call runs per schema.
    PRUNE_ROUNDS = 10
    #: Most rows one re-read query asks for.
    REREAD_CHUNK = 500

    def __init__(
        self,
        engine: sa.Engine,
        *,
        marker: str,
        lock_key: int,
        version: int,
        retention: float | None,
        prune_interval: float | None,
        prune_batch: int,
    ) -> None:
        self.engine = engine
        #: Seconds a stored payload stays.
        self.retention = retention
        #: Seconds between two prunes.
        self.prune_interval = prune_interval
        #: Most rows one bounded DELETE of the prune removes.
        self.prune_batch = prune_batch
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._marker = marker
        self._lock_key = lock_key
        self._version = version
        #: Schemas whose overflow table is known to exist.
        self.ready: set[str | None] = set()

    # -- DDL ----------------------------------------------------------------
    def ref(self, schema: str | None) -> str:
        """The quoted name of the overflow table of ``schema``."""
        return qualified(schema, OVERFLOW_TABLE)

    def ddl(self, schema: str | None) -> list[str]:
        """The idempotent statements that create the overflow table of ``schema``."""
        comment = self._marker + json.dumps({"v": self._version, "kind": "overflow"})
        index = quote_ident(OVERFLOW_TABLE + "_created_at")
        table = self.ref(schema)
        return [
            stmt.format(table=table, index=index, comment=quote_literal(comment))
            for stmt in OVERFLOW_DDL
        ]

    def trigger_sql(self, watch: Watch, fallback: str) -> str:
        """The trigger's oversize branch for a watch with ``use_overflow_table=True``."""
        return OVERFLOW_BRANCH_SQL.format(
            table=self.ref(watch.effective_schema),
            channel=quote_literal(watch.channel),
            fallback=fallback.replace("\n", "\n    "),
        )

    def missing(self, conn: sa.Connection, schemas: set[str | None]) -> list[str | None]:
        """The schemas among ``schemas`` that have no overflow table."""
        found = []
        for schema in sorted(schemas, key=str):
            name = self.ref(schema)
            if conn.execute(sa.text(REGCLASS_SQL), {"n": name}).scalar() is None:
                found.append(schema)
        return found

    def ensure(self, schema: str | None) -> None:
        """Create the overflow table of ``schema`` unless it is known to exist."""
        if schema in self.ready:
            return
        with self.engine.begin() as conn:
            if self.missing(conn, {schema}):
                conn.exec_driver_sql(XACT_LOCK_SQL.format(key=self._lock_key))
                for stmt in self.ddl(schema):
                    run_sql(conn, stmt)
        self.ready.add(schema)

    # -- payloads -------------------------------------------------------------
    def send(self, schema: str | None, channel: str, payload: str) -> int:
        """Store ``payload`` and notify its reference in one transaction; return its id."""
        self.ensure(schema)
        with self.engine.begin() as conn:
            sql = STORE_SQL.format(table=pyformat_safe(self.ref(schema)))
            ovf_id: int = conn.exec_driver_sql(sql, {"c": channel, "p": payload}).scalar_one()
            ref = json.dumps({"ts": round(time.time(), 6), "ovf": ovf_id})
            conn.execute(sa.text(NOTIFY_SQL), {"c": channel, "p": ref})
        return ovf_id

    def fetch(self, schema: str | None, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Stored payloads by id, ``{id: (channel, payload)}``, in one query.

        Ids no longer stored are absent from the result.
        """
        sql = FETCH_SQL.format(table=pyformat_safe(self.ref(schema)))
        with self._autocommit.connect() as conn:
            rows = conn.exec_driver_sql(sql, {"ids": list(ids)}).all()
        return {row[0]: (row[1], row[2]) for row in rows}

    def prune(self, schemas: Sequence[str | None], retention: float, limit: int) -> int:
        """Delete payloads older than ``retention`` seconds, ``limit`` rows per round.

        At most :attr:`PRUNE_ROUNDS` rounds per schema, so a call stays short;
        returns how many rows were deleted.
        """
        deleted = 0
        with self._autocommit.connect() as conn:
            for schema in schemas:
                if self.missing(conn, {schema}):
                    continue
                sql = OVERFLOW_PRUNE_SQL.format(table=pyformat_safe(self.ref(schema)))
                for _ in range(self.PRUNE_ROUNDS):
                    n = conn.exec_driver_sql(sql, {"retention": retention, "limit": limit}).rowcount
                    deleted += n
                    if n < limit:
                        break
        return deleted

    def has_tables(self, schemas: set[str | None]) -> bool:
        """Whether any of ``schemas`` has an overflow table (known since install looked)."""
        return bool(schemas & self.ready)

    def reread(self, watch: Watch, keys: Sequence[Sequence[Any]]) -> list[str]:
        """Re-read rows of the watched table by raw key values; each as the trigger's JSON.

        One query per :attr:`REREAD_CHUNK` keys.
        """
        table = qualified(watch.effective_schema, watch.table)
        width = len(watch.primary_keys)
        row = pairs(watch, watch.payload_columns, "t.")
        key_columns = ", ".join("t." + quote_ident(k) for k in watch.primary_keys)
        found: list[str] = []
        with self._autocommit.connect() as conn:
            for start in range(0, len(keys), self.REREAD_CHUNK):
                chunk = keys[start : start + self.REREAD_CHUNK]
                values = ", ".join(
                    "(" + ", ".join(f"%(k{i}_{j})s" for j in range(width)) + ")"
                    for i in range(len(chunk))
                )
                params = {
                    f"k{i}_{j}": value for i, key in enumerate(chunk) for j, value in enumerate(key)
                }
                sql = REREAD_SQL.format(
                    row=pyformat_safe(row),
                    table=pyformat_safe(table),
                    keys=pyformat_safe(key_columns),
                    values=values,
                )
                found.extend(r[0] for r in conn.exec_driver_sql(sql, params))
        return found

    def tables(self) -> list[dict[str, Any]]:
        """Every sqlnotify overflow table in the database, with its number of rows.

        Each table is counted in a transaction of its own; ``rows`` is
        ``None`` for one another session's DDL kept locked (or dropped) meanwhile.
        """
        found: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            with brief_read(conn):
                names = conn.execute(sa.text(TABLES_SQL), {"name": OVERFLOW_TABLE}).all()
            for schema, name in names:
                count: int | None = None
                try:
                    with brief_read(conn):
                        table = qualified(schema, name)
                        count = run_sql(conn, COUNT_SQL.format(table=table)).scalar_one()
                except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
                    gone = getattr(exc.orig, "pgcode", None) == "42P01"  # undefined_table
                    if not (gone or is_lock_timeout(exc)):
                        raise
                    if gone:
                        continue
                found.append({"schema": schema, "table": name, "rows": count})
        return found
