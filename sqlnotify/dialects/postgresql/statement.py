"""PostgreSQL per-statement triggers: one call per statement, over its transition tables.

A watch with ``per_statement=True`` (and every durable watch of a notifier
with ``pg_journal_per_statement=True``) gets an ``AFTER ... FOR EACH
STATEMENT`` trigger whose function reads the statement's rows from its
transition tables (``REFERENCING NEW TABLE AS ...``) in one query:

* a plain watch sends them many to a notification (:data:`.sql.STATEMENT_BODY`):
  each row is a JSON array of its values (``"rows"`` in
  :mod:`sqlnotify._payload`), all of them aggregated in order, and cut into
  slices of ``per`` rows, so that ``per`` rows as wide as the widest fit in
  :data:`.sql.STATEMENT_BUDGET` bytes.  One query, no loop over rows: the
  loop runs once per notification.  Each row's text is built below an
  ``OFFSET 0`` fence, so it is computed once, not again for its width; the
  slices are cut below one too, so that sorting them never carries the whole
  array.  When a row is too wide (it would not share a notification, or
  would not travel whole row by row: :func:`row_overhead`), every row of the
  statement is sent as a row trigger would send it, one notification each,
  and a row over the limit takes the oversize branch (the overflow table, or
  its keys).  If the trigger cannot build its rows (the table changed under
  the watch), the write stands and one event says so (``lost``, ``err``);
* a durable watch journals them with one ``INSERT ... SELECT``, one journal
  row per changed row, as a row trigger would.

An UPDATE pairs each new row with its old version by their position in the
two transition tables (:data:`.sql.STATEMENT_PAIRS_SQL`): PostgreSQL appends
a row's old and new versions to them together, so the rows at one position
are one row, also when the UPDATE changed its key (a join on the key would
miss those, and mispair keys swapped between rows).  The pairs come out of
their merge join in position order, which the aggregate keeps.  That gives
``changed_columns``, ``old`` and the ``trigger_columns`` test; ``where=``
filters the rows in the same query.  Events come in the transition tables'
order: the order in which the statement changed the rows, the order of row
triggers.  The query has no statistics to plan with (its join is estimated
far above its size), so the function turns JIT compilation off
(:data:`.sql.NO_JIT`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..._names import quote_ident, quote_literal
from ..._watch import PAIRING_COLUMN, Watch
from ...exceptions import SQLNotifyConfigurationError
from .sql import (
    DURABLE_OLD_SQL,
    DURABLE_STATEMENT_BODY,
    DURABLE_UPDATE_SQL,
    EPOCH_WIDTH,
    MAX_PAYLOAD,
    OLD_TRANSITION_TABLE,
    ORDER_SQL,
    ORDINAL_SQL,
    PAIR_CHANGED_SQL,
    ROWS_WHERE_SQL,
    STATEMENT_BODY,
    STATEMENT_BUDGET,
    STATEMENT_ELEMENT_SQL,
    STATEMENT_KEYS_SQL,
    STATEMENT_PAIRS_SQL,
    STATEMENT_ROWS_SQL,
    STATEMENT_TRUNCATE_SQL,
    TRANSITION_SQL,
    TRANSITION_TABLE,
    changed_sql,
    pairs,
    update_parts,
    values,
)

__all__ = ["durable_body", "notify_body", "row_overhead", "transition_tables"]

#: The alias of the statement's (new) rows, on which ``where=`` is rendered,
#: and of an UPDATE's old rows.
ROW = "r"
OLD = "o"
#: PostgreSQL's limit on a function's arguments (``json_build_array``'s too).
MAX_ARGS = 100


def _update(watch: Watch) -> bool:
    return watch.operation.value == "update"


def transition_tables(watch: Watch) -> str:
    """The ``REFERENCING`` clause of the watch's trigger."""
    if _update(watch):
        return " ".join(
            (
                TRANSITION_SQL.format(side="OLD", name=OLD_TRANSITION_TABLE),
                TRANSITION_SQL.format(side="NEW", name=TRANSITION_TABLE),
            )
        )
    side = "OLD" if watch.operation.value == "delete" else "NEW"
    return TRANSITION_SQL.format(side=side, name=TRANSITION_TABLE)


def _source(watch: Watch) -> str:
    if _update(watch):
        return STATEMENT_PAIRS_SQL.format(
            n=quote_ident(PAIRING_COLUMN), old=OLD_TRANSITION_TABLE, rows=TRANSITION_TABLE
        )
    return STATEMENT_ROWS_SQL.format(rows=TRANSITION_TABLE)


def _where(watch: Watch, condition: str | None) -> str:
    """``WHERE`` on the rows: the ``where=`` condition (on ``r``), the trigger columns' test."""
    tests = [condition] if condition else []
    if watch.trigger_columns:
        tests.append(
            " OR ".join(
                PAIR_CHANGED_SQL.format(column=quote_ident(c)) for c in watch.trigger_columns
            )
        )
    if not tests:
        return ""
    text = " AND ".join(f"({t})" for t in tests) if len(tests) > 1 else tests[0]
    return ROWS_WHERE_SQL.format(condition=text)


def _ordinal(watch: Watch) -> tuple[str, str]:
    """What selects the pairs' position, and what orders by it (``ref``: the subquery)."""
    if not _update(watch):
        return "", ""  # one transition table, read in its order
    n = quote_ident(PAIRING_COLUMN)
    return ORDINAL_SQL.format(n=n), ORDER_SQL.format(ref="{ref}", n=n)


def durable_body(watch: Watch, condition: str | None, journal: str, wake: str) -> str:
    """The function body of a durable per-statement watch: journal the rows, wake once."""
    update = ""
    order = _ordinal(watch)[1]
    if _update(watch):
        update = DURABLE_UPDATE_SQL.format(changed=changed_sql(watch, OLD + ".", ROW + "."))
        if watch.include_old:
            update += DURABLE_OLD_SQL.format(old=pairs(watch, watch.payload_columns, OLD + "."))
    return DURABLE_STATEMENT_BODY.format(
        journal=journal,
        channel=quote_literal(watch.channel),
        row=pairs(watch, watch.payload_columns, ROW + "."),
        update=update,
        source=_source(watch),
        where=_where(watch, condition),
        order=order.format(ref=""),
        wake=wake,
    )


def notify_body(watch: Watch, condition: str | None, oversize: Callable[[str], str]) -> str:
    """The function body of a plain per-statement watch (:data:`.sql.STATEMENT_BODY`).

    ``oversize`` turns the keys-only branch into the branch for a row over
    the limit (with an overflow table: store it there, else that branch).
    """
    columns = watch.payload_columns
    items = values(watch, columns, ROW + ".")
    count = len(columns)
    if _update(watch):
        items += ", " + changed_sql(watch, OLD + ".", ROW + ".")
        count += 1
        if watch.include_old:
            items += ", " + values(watch, columns, OLD + ".")
            count += len(columns)
    if count > MAX_ARGS:
        raise SQLNotifyConfigurationError(
            f"per_statement=True sends at most {MAX_ARGS} values a row ({watch.describe()}"
            f" sends {count}): watch fewer columns, or row by row"
        )
    text, changed = update_parts(watch, OLD + ".", ROW + ".")
    ordinal, order = _ordinal(watch)
    return STATEMENT_BODY.format(
        element=STATEMENT_ELEMENT_SQL.format(values=items),
        ordinal=ordinal,
        order_x=order.format(ref=""),
        order_y=order.format(ref="y."),
        source=_source(watch),
        where=_where(watch, condition),
        budget=STATEMENT_BUDGET,
        fits=min(STATEMENT_BUDGET, MAX_PAYLOAD - row_overhead(watch)),
        limit=MAX_PAYLOAD,
        row=pairs(watch, columns, ROW + "."),
        update=text,
        keys=STATEMENT_KEYS_SQL.format(
            keys=pairs(watch, watch.primary_keys, ROW + "."), changed=changed
        ),
        oversize=oversize(STATEMENT_TRUNCATE_SQL.format(limit=MAX_PAYLOAD)),
        channel=quote_literal(watch.channel),
    )


def _json_object(names: tuple[str, ...]) -> str:
    # json_build_object's text, with 0 for every value.
    return "{" + ", ".join(json.dumps(n, ensure_ascii=False) + " : 0" for n in names) + "}"


def row_overhead(watch: Watch) -> int:
    """How many bytes longer a row trigger's payload is than the same row's array.

    A row whose array is longer than the limit less this would not travel
    whole row by row: the statement then takes the row trigger's path, so
    its events are the same.  The difference depends on the column names
    only (and on the width of the timestamp, taken as now).
    """
    columns = watch.payload_columns
    element = ["0"] * len(columns)
    payload = '{"ts":' + "0" * EPOCH_WIDTH + ',"row":' + _json_object(columns)
    if _update(watch):
        element.append("[]")
        payload += ',"chg":[]'
        if watch.include_old:
            element += ["0"] * len(columns)
            payload += ',"old":' + _json_object(columns)
    payload += "}"
    array = "[" + ", ".join(element) + "]"
    return len(payload.encode("utf-8", "surrogatepass")) - len(array.encode("utf-8"))
