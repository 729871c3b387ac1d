"""Trigger functions and triggers: the SQL a watch installs, and what fills it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.sql.sqltypes import _AbstractInterval

from ...._names import qualified, quote_ident, quote_literal
from ...._values import _unwrap
from ...._watch import Watch
from .limits import JOURNAL_TABLE, MAX_PAYLOAD

# -- trigger functions and triggers -------------------------------------------------

# The payload is concatenated text around one json_build_object() (cheaper
# than nesting two), and pg_notify() is called inside an IF: PL/pgSQL
# evaluates an IF condition as a simple expression, where PERFORM would run a
# planned query for every row.
FUNCTION_SQL = """\
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql{security} AS {body}"""

# The body is dollar-quoted with a tag chosen once every name is in it (see
# dollar_quote): no name can close the quote early.
ROW_BODY = """
DECLARE
    payload text;
BEGIN
    BEGIN
        payload := '{{"ts":' || extract(epoch from clock_timestamp())
                   || ',"row":' || json_build_object({row})::text{update} || '}}';
        IF octet_length(payload) > {limit} THEN
            {oversize}
        END IF;
    EXCEPTION WHEN OTHERS THEN
        payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                     'row', json_build_object(), 'lost', true,
                                     'err', SQLSTATE, 'msg', left(SQLERRM, 300))::text;
    END;
    IF pg_notify({channel}, payload) IS NULL THEN
        NULL;
    END IF;
    RETURN NULL;
END;
"""

# The inner block keeps the user's write alive when the table no longer
# matches the watch (a watched column dropped or renamed since the trigger
# was installed): the event then says so ("err") instead.  It never writes,
# so the subtransaction it opens gets no transaction id and costs little.

# Without an overflow table, a row too large for NOTIFY is announced by its
# keys only ("trunc"); the listener re-reads the row.  If even the keys do not
# fit, only the fact is sent ("lost"), so the user's write never fails.
TRUNCATE_SQL = """\
payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                     'row', json_build_object({keys}),
                                     'trunc', true{changed})::text;
        IF octet_length(payload) > {limit} THEN
            payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                         'row', json_build_object(), 'lost', true)::text;
        END IF;"""

# The trigger's branch for a payload over the limit, with an overflow table.
# Should the table be missing, or not writable by the role that writes, it
# falls back to the keys-only branch so that the user's write still succeeds.
OVERFLOW_BRANCH_SQL = """\
DECLARE
            ovf_id bigint;
        BEGIN
            INSERT INTO {table} (channel, payload) VALUES ({channel}, payload)
                RETURNING id INTO ovf_id;
            payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                         'ovf', ovf_id)::text;
        EXCEPTION WHEN undefined_table OR insufficient_privilege THEN
            {fallback}
        END;"""

# A function that writes to sqlnotify's tables (the journal, the overflow
# table) runs as the role that installed it, so writers need no privilege on
# those tables; its search_path is pinned and every table it names is
# schema-qualified, so nothing a writer puts on its own path can step in.
# EXECUTE is revoked from PUBLIC: nobody can attach it to a table of theirs
# (a trigger's function is checked when the trigger is created, not when it
# fires).
DEFINER = "\nSECURITY DEFINER SET search_path = pg_catalog, pg_temp"
# A per-statement trigger's query over the transition tables has no
# statistics to plan with: a join on row numbers is estimated far above its
# size, and JIT compilation (tens of milliseconds) would cost more than the
# query.  The setting applies while the function runs.
NO_JIT = "\nSET jit = off"

# A durable watch appends the event to the journal in the writer's
# transaction and sends a wake-up; the listener reads the journal.
DURABLE_BODY = """
DECLARE
    payload text;
BEGIN
    payload := '{{"ts":' || extract(epoch from clock_timestamp())
               || ',"row":' || json_build_object({row})::text{update} || '}}';
    {insert}
    IF pg_notify({channel}, {wake}) IS NULL THEN
        NULL;
    END IF;
    RETURN NULL;
END;
"""

# The trigger's statement appending the event (``payload``) to the journal.
JOURNAL_INSERT_SQL = "INSERT INTO {journal} (channel, payload) VALUES ({channel}, payload);"

# The same for a whole statement: one INSERT ... SELECT over the transition
# table(s) (see STATEMENT_ROWS_SQL), then one wake-up.
DURABLE_STATEMENT_BODY = """
BEGIN
    INSERT INTO {journal} (channel, payload)
    SELECT {channel}, json_build_object('ts', extract(epoch from clock_timestamp()),
                                        'row', json_build_object({row}){update})::text
    FROM {source}{where}{order};
    IF FOUND THEN
        PERFORM pg_notify({channel}, {wake});
    END IF;
    RETURN NULL;
END;
"""

# A plain per-statement watch sends the statement's rows in as few
# notifications as the widest row allows: each row is a JSON array of its
# values (see sqlnotify._payload, "rows"), all of them aggregated in the
# transition table's order (UPDATE: its pairing's), and cut into slices of
# ``per`` rows, so that ``per`` rows of the widest width fit in {budget} bytes.
# The rows reach array_agg in the order of the fenced subquery (an UPDATE's
# pairs come out of their merge join in that order already: no second sort).
# One query, no loop over rows: the loop runs once per notification.  The
# element text is built below an ``OFFSET 0`` fence, so it is computed once,
# not again for its width.  When a row does not fit (wider than {fits} bytes:
# it would not share a notification, or would not travel whole row by row),
# every row of the statement is sent as a row trigger would send it, one
# notification each, and a row over the limit goes through the oversize branch
# (the overflow table, or its keys).  If the trigger cannot build its rows
# (the table changed under the watch), the statement's write stands and one
# event says so ("lost", "err").  The slices are cut below a fence too, so
# that the sort by slice never carries the whole array.
STATEMENT_BODY = """
DECLARE
    payload text;
    part record;
BEGIN
    BEGIN
        FOR part IN
            WITH s AS (
                SELECT array_agg(x.e) AS items, max(octet_length(x.e)) AS widest
                FROM (SELECT {element} AS e
                      FROM {source}{where}{order_x} OFFSET 0) x
            )
            (SELECT t.payload, NULL::text AS keys
             FROM (SELECT k, '{{"ts":' || extract(epoch from clock_timestamp()) || ',"rows":['
                             || array_to_string(s.items[k * c.per + 1 : k * c.per + c.per], ',')
                             || ']}}' AS payload
                   FROM s, LATERAL (SELECT ({budget} + 1) / (s.widest + 1) AS per) c,
                        generate_series(0, (cardinality(s.items) - 1) / c.per) AS k
                   WHERE s.widest <= {fits} OFFSET 0) t
             ORDER BY t.k)
            UNION ALL
            (SELECT y.p, CASE WHEN octet_length(y.p) > {limit} THEN y.k END
             FROM (SELECT '{{"ts":' || extract(epoch from clock_timestamp())
                          || ',"row":' || json_build_object({row})::text{update} || '}}' AS p,
                          {keys} AS k{ordinal}
                   FROM {source}{where} OFFSET 0) y
             WHERE (SELECT s.widest > {fits} FROM s){order_y})
        LOOP
            payload := part.payload;
            IF part.keys IS NOT NULL THEN
                {oversize}
            END IF;
            IF pg_notify({channel}, payload) IS NULL THEN
                NULL;
            END IF;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                     'row', json_build_object(), 'lost', true,
                                     'err', SQLSTATE, 'msg', left(SQLERRM, 300))::text;
        IF pg_notify({channel}, payload) IS NULL THEN
            NULL;
        END IF;
    END;
    RETURN NULL;
END;
"""
#: One row of a plain per-statement watch: its values as a JSON array.
STATEMENT_ELEMENT_SQL = "json_build_array({values})::text"
#: A row over the limit, sent by its keys (the oversize branch's ``part.keys``).
STATEMENT_KEYS_SQL = (
    "json_build_object('ts', extract(epoch from clock_timestamp()),"
    " 'row', json_build_object({keys}), 'trunc', true{changed})::text"
)
#: The oversize branch of a per-statement trigger without an overflow table.
STATEMENT_TRUNCATE_SQL = """payload := part.keys;
                IF octet_length(payload) > {limit} THEN
                    payload := json_build_object('ts', extract(epoch from clock_timestamp()),
                                                 'row', json_build_object(), 'lost', true)::text;
                END IF;"""
#: What a row of a multi-row notification takes at most: the limit less the
#: notification's own text (``{"ts":...,"rows":[...]}``) with room to spare.
STATEMENT_BUDGET = MAX_PAYLOAD - 64
#: The width of ``extract(epoch from clock_timestamp())`` as text.
EPOCH_WIDTH = len("1764657000.123456")

# The rows of a statement: its transition table as ``r`` ...
STATEMENT_ROWS_SQL = "{rows} r"
# ... and for an UPDATE, each new row ``r`` with its old version ``o``, paired
# by their position in the two transition tables (see .statement).
STATEMENT_PAIRS_SQL = """(SELECT o.*, row_number() OVER () AS {n} FROM {old} o) o
                      JOIN (SELECT r.*, row_number() OVER () AS {n} FROM {rows} r) r
                      USING ({n})"""
#: The pairs' position, selected next to a row and ordered by.
ORDINAL_SQL = ", {n}"
ORDER_SQL = " ORDER BY {ref}{n}"
#: The test of one of ``trigger_columns`` on a pair.
PAIR_CHANGED_SQL = "o.{column} IS DISTINCT FROM r.{column}"
#: ``chg`` and ``old`` of a durable per-statement UPDATE's payload.
DURABLE_UPDATE_SQL = ", 'chg', {changed}"
DURABLE_OLD_SQL = ", 'old', json_build_object({old})"

# TRUNCATE: one event per truncated table, no row (statement-level trigger).
TRUNCATED_BODY = """
DECLARE
    payload text;
BEGIN
    payload := '{{"ts":' || extract(epoch from clock_timestamp()) || ',"row":{{}}}}';
    {insert}
    IF pg_notify({channel}, {message}) IS NULL THEN
        NULL;
    END IF;
    RETURN NULL;
END;
"""
TRUNCATE_TRIGGER_SQL = """\
CREATE TRIGGER {trigger} AFTER TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION {function}()"""

STATEMENT_TRIGGER_SQL = """\
CREATE TRIGGER {trigger} AFTER {operation} ON {table}
REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"""
#: One transition table of a per-statement trigger (``OLD``/``NEW``).
TRANSITION_SQL = "{side} TABLE AS {name}"

TRIGGER_SQL = """\
CREATE TRIGGER {trigger} AFTER {operation} ON {table}
FOR EACH ROW{when} EXECUTE FUNCTION {function}()"""
#: The ``WHEN`` condition's test for one of ``trigger_columns``.
CHANGED_SQL = "OLD.{column} IS DISTINCT FROM NEW.{column}"
#: A condition on the transition table's rows (``where=`` of a per-statement trigger).
ROWS_WHERE_SQL = "\n    WHERE {condition}"
#: PostgreSQL 14+ replaces a trigger in place.
REPLACE_TRIGGER = ("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER")

COMMENT_FUNCTION_SQL = "COMMENT ON FUNCTION {function}() IS {comment}"
REVOKE_FUNCTION_SQL = "REVOKE ALL ON FUNCTION {function}() FROM PUBLIC"
DROP_TRIGGER_SQL = "DROP TRIGGER IF EXISTS {trigger} ON {table}"
# CASCADE drops the trigger that uses the function, and nothing else can.
DROP_FUNCTION_SQL = "DROP FUNCTION IF EXISTS {function}() CASCADE"

# sqlnotify's trigger functions and the triggers using them.
STATE_SQL = """\
SELECT n.nspname, p.proname, obj_description(p.oid, 'pg_proc'),
       tn.nspname, c.relname, t.tgname
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
LEFT JOIN pg_trigger t ON t.tgfoid = p.oid AND NOT t.tgisinternal
LEFT JOIN pg_class c ON c.oid = t.tgrelid
LEFT JOIN pg_namespace tn ON tn.oid = c.relnamespace
WHERE p.proname LIKE 'sqlnotify\\_%%' AND obj_description(p.oid, 'pg_proc') LIKE 'sqlnotify:%%'
"""

# An UPDATE's payload also says which watched columns changed ("chg"), and
# with include_old=True holds their old values ("old"): text appended to the
# payload after "row", and the "chg" member of a keys-only payload.  A plain
# array expression, no subquery: PL/pgSQL evaluates it without a query plan.
# json has no equality operator: its values are compared as jsonb.
CHANGED_TEST_SQL = (
    "CASE WHEN {old}{column}{cast} IS DISTINCT FROM {new}{column}{cast} THEN {name} END"
)
CHANGED_LIST_SQL = "array_to_json(array_remove(ARRAY[{tests}]::text[], NULL))"
UPDATE_PARTS_SQL = "\n                   || ',\"chg\":' || {changed}::text"
OLD_PART_SQL = "\n                   || ',\"old\":' || json_build_object({old})::text"
TRUNCATED_CHANGED_SQL = ", 'chg', {changed}"


# -- filling the shared templates ------------------------------------------------------


def dollar_quote(body: str) -> str:
    """``body`` as a dollar-quoted string, with a tag that does not occur in it.

    The tag is chosen from the finished text, names and all: the quote ends
    exactly where the body does, whatever characters the names hold.
    """
    tag = "$sqlnotify$"
    n = 0
    # The closing tag must first occur at the end, also when the body ends
    # with the beginning of a tag.
    while (body + tag).find(tag) != len(body):
        n += 1
        tag = f"$sqlnotify{n}$"
    return tag + body + tag


def value_sql(type_: Any, ref: str) -> str:
    """The SQL expression a PostgreSQL trigger puts in the payload for one column."""
    t = _unwrap(type_)
    if isinstance(t, sqltypes.ARRAY):
        item = _unwrap(t.item_type)
        if isinstance(item, sqltypes.Numeric) and not isinstance(item, sqltypes.Float):
            return f"{ref}::text[]" if item.asdecimal else ref  # exact decimals, as text
        return ref
    if isinstance(t, _AbstractInterval):
        return f"extract(epoch from {ref})"
    if isinstance(t, sqltypes.Numeric) and not isinstance(t, sqltypes.Float) and t.asdecimal:
        return f"{ref}::text"
    if isinstance(t, sqltypes.LargeBinary):
        return f"encode({ref}, 'base64')"
    return ref


def pairs(watch: Watch, columns: Sequence[str], ref: str) -> str:
    """``'name', <value expression>, ...`` for ``json_build_object``; ``ref`` is ``"NEW."``..."""
    return ", ".join(
        quote_literal(c) + ", " + value_sql(watch.column_types[c], ref + quote_ident(c))
        for c in columns
    )


def changed_sql(watch: Watch, old: str = "OLD.", new: str = "NEW.") -> str:
    """The JSON array of the watch's compared columns an UPDATE changed.

    ``old`` and ``new`` prefix the old and the new row's columns.
    """
    tests = ", ".join(
        CHANGED_TEST_SQL.format(
            old=old,
            new=new,
            column=quote_ident(c),
            name=quote_literal(c),
            cast="::jsonb" if isinstance(_unwrap(watch.column_types.get(c)), sqltypes.JSON) else "",
        )
        for c in watch.compared_columns
    )
    return CHANGED_LIST_SQL.format(tests=tests)


def update_parts(watch: Watch, old: str = "OLD.", new: str = "NEW.") -> tuple[str, str]:
    """What an UPDATE trigger adds to its payload text, and to its keys-only payload."""
    if watch.operation.value != "update":
        return "", ""
    changed = changed_sql(watch, old, new)
    text = UPDATE_PARTS_SQL.format(changed=changed)
    if watch.include_old:
        text += OLD_PART_SQL.format(old=pairs(watch, watch.payload_columns, old))
    return text, TRUNCATED_CHANGED_SQL.format(changed=changed)


def values(watch: Watch, columns: Sequence[str], ref: str) -> str:
    """The value expressions of ``columns`` for ``json_build_array`` (as :func:`pairs`)."""
    return ", ".join(value_sql(watch.column_types[c], ref + quote_ident(c)) for c in columns)


def journal_insert_sql(schema: str | None, channel: str) -> str:
    """The trigger's statement appending the event (``payload``) to the journal.

    The trigger function runs as the role that installed it, with a pinned
    ``search_path``: the table is always schema-qualified.
    """
    return JOURNAL_INSERT_SQL.format(
        journal=qualified(schema, JOURNAL_TABLE), channel=quote_literal(channel)
    )
