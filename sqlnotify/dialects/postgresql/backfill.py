"""Backfill reads on PostgreSQL: a table's rows in key order, a page per transaction.

Each page runs in a ``REPEATABLE READ`` read-only transaction of its own.
Its first statement reads the page (keyset pagination over the primary
key, composite keys included, each row built as the payload its trigger
would have built), which fixes the transaction's snapshot; the second
statement, in the same snapshot, lists the journal events of the table's
durable channels that this snapshot shows and the backfill's start position
had not consumed, for keys in the page's range.  The page already shows
what those events did, so the reader skips them; an event committed after
the page was read is not visible there and is delivered.

No long transaction is held: a page is a few milliseconds, and the server
keeps no snapshot between pages.  Used on the listener thread, through the
journal store's connection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.sql.sqltypes import _AbstractInterval

from ..._backfill import PAGES, STREAM, BackfillState
from ..._names import pyformat_safe, qualified, quote_ident, quote_literal
from ..._values import _unwrap
from ..._watch import Watch
from ...exceptions import SQLNotifyConfigurationError
from .sql import (
    BACKFILL_ABOVE_SQL,
    BACKFILL_AFTER_SQL,
    BACKFILL_BEGIN_SQL,
    BACKFILL_COUNT_SQL,
    BACKFILL_END_SQL,
    BACKFILL_ESTIMATE_SQL,
    BACKFILL_JSON_BYTES_SQL,
    BACKFILL_JSON_INTERVAL_SQL,
    BACKFILL_JSON_KEY_SQL,
    BACKFILL_KEYS_SQL,
    BACKFILL_PAGE_SQL,
    BACKFILL_SEEN_SQL,
    BACKFILL_UPTO_SQL,
    pairs,
)

__all__ = ["TablePages"]

#: Below this many estimated rows, the estimate is replaced by an exact count.
COUNT_BELOW = 1_000_000


def _bound(types: Sequence[str], prefix: str) -> str:
    return ", ".join(f"%({prefix}{n})s::{t}" for n, t in enumerate(types))


def _json_key(name: str, pg_type: str, sa_type: Any) -> str:
    t = _unwrap(sa_type)
    literal = pyformat_safe(quote_literal(name))
    if isinstance(t, sqltypes.LargeBinary):
        return BACKFILL_JSON_BYTES_SQL.format(name=literal)
    if isinstance(t, _AbstractInterval):
        return BACKFILL_JSON_INTERVAL_SQL.format(name=literal)
    return BACKFILL_JSON_KEY_SQL.format(name=literal, type=pg_type)


@dataclasses.dataclass
class TablePages:
    """The statements of one table's backfill, built once from its watch and key.

    ``channels``: the table's durable channels (whose events a page can show).
    """

    watch: Watch
    channels: tuple[str, ...]
    keys: tuple[str, ...]
    types: tuple[str, ...]
    first: str
    after: str
    seen: dict[tuple[bool, bool], str]
    count: str

    @classmethod
    def build(cls, cur: Any, watch: Watch, channels: Sequence[str], journal: str) -> TablePages:
        """Read the table's key from the catalog and compile the statements.

        ``journal`` is the qualified journal table, already ``%``-escaped.

        :raises SQLNotifyConfigurationError: when the table has no primary
            key, or the watch's key columns are not exactly it.
        """
        table = qualified(watch.effective_schema, watch.table)
        cur.execute(BACKFILL_KEYS_SQL, (table,))
        found = [(str(n), str(t)) for n, t in cur.fetchall()]
        keys = tuple(n for n, _ in found)
        if not keys or set(keys) != set(watch.primary_keys):
            raise SQLNotifyConfigurationError(
                f"a backfill of {watch.describe()} reads the table in primary key order and"
                f" needs the watch's key columns {list(watch.primary_keys)} to be the table's"
                f" primary key ({list(keys) or 'none'})"
            )
        types = tuple(pyformat_safe(t) for _, t in found)
        safe_table = pyformat_safe(table)
        cols = ", ".join(f"t.{pyformat_safe(quote_ident(k))}" for k in keys)
        page = {
            "row": pyformat_safe(pairs(watch, watch.payload_columns, "t.")),
            "key_text": ", ".join(f"t.{pyformat_safe(quote_ident(k))}::text" for k in keys),
            "table": safe_table,
            "order": cols,
        }
        json_keys = ", ".join(
            _json_key(k, t, watch.column_types.get(k)) for k, t in zip(keys, types, strict=True)
        )
        seen = {}
        for lower in (False, True):
            for upper in (False, True):
                parts = []
                if lower:
                    parts.append(
                        BACKFILL_ABOVE_SQL.format(keys=json_keys, bound=_bound(types, "a"))
                    )
                if upper:
                    parts.append(BACKFILL_UPTO_SQL.format(keys=json_keys, bound=_bound(types, "u")))
                seen[(lower, upper)] = BACKFILL_SEEN_SQL.format(
                    journal=journal, range=" AND ".join(parts) or "true"
                )
        return cls(
            watch=watch,
            channels=tuple(channels),
            keys=keys,
            types=types,
            first=BACKFILL_PAGE_SQL.format(after="", **page),
            after=BACKFILL_PAGE_SQL.format(
                after=BACKFILL_AFTER_SQL.format(keys=cols, bound=_bound(types, "a")), **page
            ),
            seen=seen,
            count=BACKFILL_COUNT_SQL.format(table=safe_table),
        )

    def estimate(self, cur: Any) -> int | None:
        """The table's row count: the planner's estimate, or an exact count when small."""
        cur.execute(
            BACKFILL_ESTIMATE_SQL, (qualified(self.watch.effective_schema, self.watch.table),)
        )
        row = cur.fetchone()
        estimate = int(row[0]) if row is not None and row[0] is not None else -1
        if estimate >= COUNT_BELOW:
            return estimate
        cur.execute(self.count)
        return int(cur.fetchone()[0])

    def read(
        self, cur: Any, state: BackfillState, limit: int, start: dict[str, Any]
    ) -> tuple[list[str], BackfillState, list[tuple[int, str, str]]]:
        """One page after ``state``: the rows' payloads, the state past them, and
        the TRUNCATE events no earlier page found, as ``(id, channel, payload)``.

        ``start`` is the backfill's start position as the parameters
        ``xmax``, ``xip``, ``snapshot``, ``window`` and ``upto``.  The last
        page (fewer rows than ``limit``) moves the state to the journal phase.
        """
        assert state.phase == PAGES
        params: dict[str, Any] = {"limit": limit}
        if state.after is not None:
            params.update({f"a{n}": v for n, v in enumerate(state.after)})
        cur.execute(BACKFILL_BEGIN_SQL)
        try:
            cur.execute(self.first if state.after is None else self.after, params)
            rows = cur.fetchall()
            last = len(rows) < limit
            upper = None if last else tuple(rows[-1][1:])
            if upper is not None:
                params.update({f"u{n}": v for n, v in enumerate(upper)})
            params.update(start, channels=list(self.channels))
            cur.execute(self.seen[(state.after is not None, upper is not None)], params)
            found = cur.fetchall()
        finally:
            cur.execute(BACKFILL_END_SQL)
        seen = [int(r[0]) for r in found]
        truncates = [
            (int(i), str(c), str(p))
            for i, c, p in found
            if p is not None and int(i) not in state.suppress
        ]
        return (
            [r[0] for r in rows],
            dataclasses.replace(
                state,
                after=upper if upper is not None else state.after,
                rows=state.rows + len(rows),
                pages=state.pages + 1,
                suppress=state.suppress.union(seen) if seen else state.suppress,
                phase=STREAM if last else PAGES,
                cut=max([state.cut, *(i for i, _, _ in truncates)]),
            ),
            truncates,
        )
