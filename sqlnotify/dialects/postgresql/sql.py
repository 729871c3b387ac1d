"""Every SQL text sqlnotify sends to PostgreSQL, as data.

Templates take their names through ``str.format``; the small functions at
the end fill the ones several modules share.  Names given to a template are
already quoted (:func:`~sqlnotify._names.qualified`,
:func:`~sqlnotify._names.quote_ident`); a template run with parameters takes
names made safe for ``%`` formatting (:func:`~sqlnotify._names.pyformat_safe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.sql.sqltypes import _AbstractInterval

from ..._names import digest, qualified, quote_ident, quote_literal
from ..._values import _unwrap
from ..._watch import Watch

# -- limits, names and keys ------------------------------------------------------

#: PostgreSQL rejects NOTIFY payloads of 8000 bytes or more.
MAX_PAYLOAD = 7999
#: PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1).
MAX_IDENTIFIER = 63
#: Comment prefix marking objects sqlnotify created (``COMMENT ON FUNCTION``).
MARKER = "sqlnotify:"
#: Version of the trigger format recorded in each function's comment.
FORMAT_VERSION = 1
#: Key of the transaction-level advisory lock that serialises installation
#: (triggers, the journal and overflow tables).
INSTALL_LOCK_KEY = int(digest("sqlnotify.install", 15), 16)
#: The payload of a durable watch's notification: a wake-up, the same for
#: every row (PostgreSQL sends one per transaction and channel).
WAKE_PAYLOAD = '{"wake":true}'
#: Name of the transition table in statement-level triggers (an UPDATE's new rows).
TRANSITION_TABLE = "sqlnotify_rows"
#: Name of a per-statement UPDATE trigger's transition table of old rows.
OLD_TRANSITION_TABLE = "sqlnotify_old"
JOURNAL_TABLE = "sqlnotify_journal"
CONSUMERS_TABLE = "sqlnotify_consumers"
#: Name of the table of poll mode's consumer leases (a session lock does not
#: survive a transaction pooler), beside the journal.
LEASES_TABLE = "sqlnotify_leases"
#: Name of the overflow table, created in the watched table's schema.
OVERFLOW_TABLE = "sqlnotify_overflow"
REGISTRY_TABLE = "sqlnotify_users"

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

# A plain per-statement watch: the statement's rows as JSON arrays, aggregated
# in order and sliced ``per`` rows a notification; a statement with a row
# wider than {fits} goes row by row (see .statement, which explains each part).
STATEMENT_BODY = """
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

# -- small statements --------------------------------------------------------------

CURRENT_SCHEMA_SQL = "SELECT current_schema()"
IN_RECOVERY_SQL = "SELECT pg_is_in_recovery()"
# The server process behind this transaction: a pooler hands out server
# sessions of its own (and a made-up process id at connect).
BACKEND_PID_SQL = "SELECT pg_backend_pid()"
RECOVERY_AND_PID_SQL = "SELECT pg_is_in_recovery(), pg_backend_pid()"
# The poll mode's liveness check (one round trip, any pooler).
ALIVE_SQL = "SELECT 1"
QUEUE_USAGE_SQL = "SELECT pg_notification_queue_usage()"
#: With SQLAlchemy's named parameters ``c`` (channel) and ``p`` (payload).
NOTIFY_SQL = "SELECT pg_notify(:c, :p)"
#: With SQLAlchemy's named parameter ``n`` (a quoted, maybe qualified name).
REGCLASS_SQL = "SELECT to_regclass(:n)"
XACT_LOCK_SQL = "SELECT pg_advisory_xact_lock({key})"
LOCK_TIMEOUT_SQL = "SET LOCAL lock_timeout = {millis}"
# Whether a durable watch's consumers still have journal rows of a channel.
JOURNAL_HAS_CHANNEL_SQL = "SELECT EXISTS (SELECT 1 FROM {journal} WHERE channel = %s)"

# -- the listener's session -----------------------------------------------------------

CONSUMER_LOCK_SQL = "SELECT pg_try_advisory_lock(%s)"
# Shared, never waited for: they tell cleanups a channel is live.
CHANNEL_LOCKS_SQL = (
    "SELECT count(pg_try_advisory_lock_shared(c, k)) FROM unnest(%s::int[], %s::int[]) AS l(c, k)"
)
LISTEN_SQL = "LISTEN {channel};"
PING_SQL = "SELECT pg_notify(%s, 'ready')"

# -- the journal of durable watches --------------------------------------------------

# The primary key (xid, id) is the index both scans of a read use.
JOURNAL_DDL = """\
CREATE TABLE IF NOT EXISTS {journal} (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created timestamptz NOT NULL DEFAULT now(),
    channel text NOT NULL,
    payload text NOT NULL,
    PRIMARY KEY (xid, id)
)"""

CONSUMERS_DDL = """\
CREATE TABLE IF NOT EXISTS {consumers} (
    name text PRIMARY KEY,
    snapshot pg_snapshot NOT NULL,
    upto pg_snapshot,
    after_id bigint NOT NULL DEFAULT 0,
    updated timestamptz NOT NULL DEFAULT now()
)"""

LEASES_DDL = """\
CREATE TABLE IF NOT EXISTS {leases} (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires timestamptz NOT NULL
)"""

# Poll mode's claim on a consumer name: taken when free, expired, or already
# ours; renewed by the same statement.  No row back: another holder has it.
LEASE_TAKE_SQL = """\
INSERT INTO {leases} AS l (name, holder, expires)
VALUES (%(name)s, %(holder)s, clock_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
WHERE l.holder = EXCLUDED.holder OR l.expires < clock_timestamp()
RETURNING holder"""
LEASE_HOLDER_SQL = """\
SELECT holder, extract(epoch from expires - clock_timestamp())::float8
FROM {leases} WHERE name = %s"""
LEASE_RELEASE_SQL = "DELETE FROM {leases} WHERE name = %s AND holder = %s"

# Consumers tables of the first format kept one row key ``(xid, id)``: every
# row before it in key order was consumed, and all of them were below the
# reader's horizon (finished).  That is the window position "everything
# before transaction xid, then the rows of xid up to id".
MIGRATE_SQL = """\
ALTER TABLE {consumers} ADD COLUMN snapshot pg_snapshot, ADD COLUMN upto pg_snapshot,
    ADD COLUMN after_id bigint NOT NULL DEFAULT 0;
UPDATE {consumers} SET
    snapshot = (xid::text || ':' || xid::text || ':')::pg_snapshot,
    upto = ((xid::text::bigint + 1)::text || ':' || (xid::text::bigint + 1)::text || ':')
        ::pg_snapshot,
    after_id = id;
ALTER TABLE {consumers} DROP COLUMN xid, DROP COLUMN id,
    ALTER COLUMN snapshot SET NOT NULL"""

COLUMNS_SQL = """\
SELECT c.relname, a.attname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s)"""

# One statement: the window's end snapshot (the current one, or the one a
# partly read window had) and its rows after ``after`` in id order.  The
# statement's own snapshot is the current one, so every row of the window is
# visible to it.  Prepared once per connection (planning costs more than
# running it): $1 the previous xmax, $2 the previous snapshot's in-progress
# transactions, $3 the last id read in the window, $4 the channels, $5 the
# row limit, $6 the window's end snapshot when it is already known.  The rows
# are sorted once, above the join: sorting them inside it as well doubled the
# server's time for a page of a large window.
WINDOW_SQL = """\
PREPARE {name}(xid8, xid8[], bigint, text[], bigint{extra}) AS
WITH w AS (SELECT {cur} AS cur)
SELECT w.cur::text, e.id, e.channel, e.payload FROM w LEFT JOIN LATERAL (
    SELECT j.id, j.channel, j.payload FROM {journal} j
    WHERE j.xid >= $1 AND j.xid < pg_snapshot_xmax(w.cur)
      AND pg_visible_in_snapshot(j.xid, w.cur) AND j.id > $3 AND j.channel = ANY($4)
    UNION ALL
    SELECT j.id, j.channel, j.payload FROM {journal} j
    WHERE j.xid = ANY($2) AND pg_visible_in_snapshot(j.xid, w.cur)
      AND j.id > $3 AND j.channel = ANY($4)
) e ON true ORDER BY e.id LIMIT $5"""
WINDOW_NEW = "sqlnotify_window_new"
WINDOW_AT = "sqlnotify_window_at"
EXECUTE_WINDOW_AT_SQL = f"EXECUTE {WINDOW_AT}(%s, %s::xid8[], %s, %s, %s, %s)"
EXECUTE_WINDOW_NEW_SQL = f"EXECUTE {WINDOW_NEW}(%s, %s::xid8[], %s, %s, %s)"
# The same read without PREPARE (a prepared statement is session state, which a
# transaction pooler does not keep): ``$n`` become the named placeholders ``pn``.
_WINDOW_PARAMS = ("xid8", "xid8[]", "bigint", "text[]", "bigint")


def window_query(journal: str, at: bool) -> str:
    """:data:`WINDOW_SQL` as one plain statement, with placeholders ``%(p1)s`` to
    ``%(p5)s`` (and ``%(p6)s``, the window's end, when ``at``) for ``$1`` to ``$6``.

    ``journal`` is the qualified journal table, already ``%``-escaped.
    """
    cur = "%(p6)s::pg_snapshot" if at else "pg_current_snapshot()"
    text = WINDOW_SQL.format(name="", extra="", cur=cur, journal=journal).split(" AS\n", 1)[1]
    for n, kind in enumerate(_WINDOW_PARAMS, start=1):
        text = text.replace(f"${n}", f"%(p{n})s::{kind}")
    return text


SAVE_SQL = """\
INSERT INTO {consumers} AS c (name, snapshot, upto, after_id)
VALUES (%s, %s::pg_snapshot, %s::pg_snapshot, %s)
ON CONFLICT (name) DO UPDATE SET snapshot = EXCLUDED.snapshot, upto = EXCLUDED.upto,
    after_id = EXCLUDED.after_id, updated = now()
WHERE pg_snapshot_xmax(c.snapshot) <= pg_snapshot_xmax(EXCLUDED.snapshot)"""

LOAD_SQL = "SELECT snapshot::text, upto::text, after_id, updated FROM {consumers} WHERE name = %s"

CURRENT_SNAPSHOT_SQL = "SELECT pg_current_snapshot()::text"
TRY_XACT_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(%s)"
PARAM_XACT_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"
JOURNAL_LOCK_TIMEOUT_SQL = "SET LOCAL lock_timeout = '5s'"
#: The journal store's settings, on a session it shares (its own get them at connect).
JOURNAL_SESSION_SQL = (
    "SET statement_timeout = {timeout_ms}; SET plan_cache_mode = force_generic_plan;"
    " SET max_parallel_workers_per_gather = 0"
)

# Only the first rows in key order are examined, so a prune costs the same
# however large the journal is; rows are roughly in time order, so the old
# ones are found there.  A row goes once it is past retention and every
# consumer seen lately has it in its snapshot (consumed).  The mark records
# the newest transaction removed, as a snapshot that sees it.
JOURNAL_PRUNE_SQL = """\
WITH first AS (SELECT xid, id, created FROM {journal} ORDER BY xid, id LIMIT %(batch)s),
doomed AS (
    SELECT f.xid, f.id FROM first f
    WHERE f.created < now() - make_interval(secs => %(retention)s) AND NOT EXISTS (
        SELECT 1 FROM {consumers} c
        WHERE c.name NOT LIKE '.%%' AND c.updated > now() - make_interval(secs => %(expiry)s)
          AND NOT pg_visible_in_snapshot(f.xid, c.snapshot))
),
gone AS (
    DELETE FROM {journal} j USING doomed WHERE j.xid = doomed.xid AND j.id = doomed.id
    RETURNING j.xid, j.id, j.created
),
newest AS (SELECT xid, id, created FROM gone ORDER BY xid DESC, id DESC LIMIT 1),
mark AS (
    INSERT INTO {consumers} AS c (name, snapshot, after_id, updated)
    SELECT %(mark)s, ((xid::text::bigint + 1)::text || ':' || (xid::text::bigint + 1)::text
                      || ':')::pg_snapshot, id, created FROM newest
    ON CONFLICT (name) DO UPDATE SET snapshot = EXCLUDED.snapshot,
        after_id = EXCLUDED.after_id, updated = EXCLUDED.updated
    WHERE pg_snapshot_xmax(c.snapshot) < pg_snapshot_xmax(EXCLUDED.snapshot)
)
SELECT count(*) FROM gone"""

# -- the overflow table ---------------------------------------------------------------

OVERFLOW_DDL = (
    """\
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel text NOT NULL,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
)""",
    "CREATE INDEX IF NOT EXISTS {index} ON {table} (created_at)",
    "COMMENT ON TABLE {table} IS {comment}",
)

STORE_SQL = "INSERT INTO {table} (channel, payload) VALUES (%(c)s, %(p)s) RETURNING id"

FETCH_SQL = "SELECT id, channel, payload FROM {table} WHERE id = ANY(%(ids)s)"

# One round deletes at most ``limit`` rows and skips rows another process is
# deleting at the same moment.
OVERFLOW_PRUNE_SQL = """\
DELETE FROM {table} WHERE id IN (
    SELECT id FROM {table}
    WHERE created_at < clock_timestamp() - make_interval(secs => %(retention)s)
    ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"""

# Builds the same JSON object the trigger would have sent for each row.
REREAD_SQL = "SELECT json_build_object({row})::text FROM {table} AS t WHERE ({keys}) IN ({values})"

TABLES_SQL = """\
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relname = :name
  AND obj_description(c.oid, 'pg_class') LIKE 'sqlnotify:%'
ORDER BY 1"""

COUNT_SQL = "SELECT count(*) FROM {table}"

# -- the registry of notifiers, and locks ----------------------------------------------

REGISTRY_SQL = """\
CREATE TABLE IF NOT EXISTS {table} (
    channel text NOT NULL,
    user_id text NOT NULL,
    app text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    live boolean NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, user_id)
)"""

TOUCH_SQL = """\
INSERT INTO {table} (channel, user_id, app, host, pid, live)
SELECT c, %s, %s, %s, %s, %s FROM unnest(%s::text[]) AS c
ON CONFLICT (channel, user_id) DO UPDATE SET last_seen = now(), live = EXCLUDED.live"""

FORGET_SQL = "DELETE FROM {table} WHERE user_id = %s AND channel = ANY(%s::text[])"
DROP_USERS_SQL = "DELETE FROM {table} WHERE channel = %s"

# Another user keeps a trigger while it is live (seen within LIVE_WINDOW) or
# was seen within the grace period.
IN_USE_SQL = """\
SELECT EXISTS (
    SELECT 1 FROM {table}
    WHERE channel = %s AND user_id <> %s
      AND ((live AND last_seen > now() - make_interval(secs => %s))
           OR last_seen > now() - make_interval(secs => %s)))"""

USERS_SQL = """\
SELECT channel, user_id, app, host, pid,
       live AND last_seen > now() - make_interval(secs => %s), last_seen
FROM {table} ORDER BY channel, last_seen DESC"""

LOCKED_CHANNELS_SQL = """\
SELECT objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""

BLOCKERS_SQL = """\
SELECT pid, application_name, state, extract(epoch from now() - xact_start)::float8,
       left(query, 300)
FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid"""
# Inside the report's own transaction: behind a transaction pooler a session
# setting would stay on a server session that other clients get next.
BLOCKERS_TIMEOUT_SQL = "SET LOCAL statement_timeout = 5000"


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


def journal_ddl(schema: str | None) -> str:
    """The statements creating the journal, consumers and leases tables (idempotent)."""
    return ";\n".join(
        [
            JOURNAL_DDL.format(journal=qualified(schema, JOURNAL_TABLE)),
            CONSUMERS_DDL.format(consumers=qualified(schema, CONSUMERS_TABLE)),
            LEASES_DDL.format(leases=qualified(schema, LEASES_TABLE)),
        ]
    )


def journal_insert_sql(schema: str | None, channel: str) -> str:
    """The trigger's statement appending the event (``payload``) to the journal.

    The trigger function runs as the role that installed it, with a pinned
    ``search_path``: the table is always schema-qualified.
    """
    return JOURNAL_INSERT_SQL.format(
        journal=qualified(schema, JOURNAL_TABLE), channel=quote_literal(channel)
    )


# -- backfill: snapshot, then stream ---------------------------------------------------

BACKFILLS_TABLE = "sqlnotify_backfills"

# One row per consumer and backfilled table: the state as JSON text.
BACKFILLS_DDL = """\
CREATE TABLE IF NOT EXISTS {backfills} (
    consumer text NOT NULL,
    relation text NOT NULL,
    state text NOT NULL,
    updated timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, relation)
)"""
BACKFILL_LOAD_SQL = "SELECT state FROM {backfills} WHERE consumer = %s AND relation = %s"
BACKFILL_SAVE_SQL = """\
INSERT INTO {backfills} (consumer, relation, state) VALUES (%s, %s, %s)
ON CONFLICT (consumer, relation) DO UPDATE SET state = EXCLUDED.state, updated = now()"""

# The table's primary key columns, in key order, with their SQL types.
BACKFILL_KEYS_SQL = """\
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)"""
# The planner's row estimate (-1: never analysed) and, for small or
# unanalysed tables, an exact count.
BACKFILL_ESTIMATE_SQL = "SELECT reltuples::bigint FROM pg_catalog.pg_class WHERE oid = %s::regclass"
BACKFILL_COUNT_SQL = "SELECT count(*) FROM {table}"

# Each page is read in a transaction of its own; its first statement takes
# the snapshot the page and the suppression query below both see.
BACKFILL_BEGIN_SQL = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
BACKFILL_END_SQL = "COMMIT"
# One page in key order after the last key read, each row as the payload a
# trigger would have built (``ts`` is the page's read time), with its key as
# text for the next page's bound.
BACKFILL_PAGE_SQL = """\
SELECT '{{"ts":' || extract(epoch from now()) || ',"row":' || json_build_object({row})::text
       || '}}', {key_text}
FROM {table} AS t{after}
ORDER BY {order} LIMIT %(limit)s"""
#: ``after`` of :data:`BACKFILL_PAGE_SQL`: past the last key read.
BACKFILL_AFTER_SQL = "\nWHERE ({keys}) > ({bound})"

# The journal events of the table's durable channels that this page's
# snapshot already shows: committed after the backfill's start position
# (not visible in its snapshot, nor consumed in its window) and visible to
# this transaction, for a key in the page's range.  The keys come from the
# payload, cast to the columns' types, so the range compares as the table
# orders it.
# A TRUNCATE's event (a row without columns) is in every page's range; its
# payload comes too, to be delivered before the page's rows.
BACKFILL_SEEN_SQL = """\
SELECT j.id, j.channel, CASE WHEN p.r::text = '{{}}' THEN j.payload END
FROM {journal} j, LATERAL (SELECT j.payload::json -> 'row' AS r) p
WHERE j.channel = ANY(%(channels)s)
  AND (j.xid >= %(xmax)s::xid8 OR j.xid = ANY(%(xip)s::xid8[]))
  AND NOT pg_visible_in_snapshot(j.xid, %(snapshot)s::pg_snapshot)
  AND NOT (%(window)s::pg_snapshot IS NOT NULL
           AND pg_visible_in_snapshot(j.xid, %(window)s::pg_snapshot) AND j.id <= %(upto)s)
  AND ({range} OR p.r::text = '{{}}')
ORDER BY j.id"""
#: The range conditions of :data:`BACKFILL_SEEN_SQL`: key above ``lower``, at most ``upper``.
BACKFILL_ABOVE_SQL = "({keys}) > ({bound})"
BACKFILL_UPTO_SQL = "({keys}) <= ({bound})"
#: A key column's value in a journal payload (``p.r``), as its column type.
BACKFILL_JSON_KEY_SQL = "(p.r ->> {name})::{type}"
BACKFILL_JSON_BYTES_SQL = "decode(p.r ->> {name}, 'base64')"
BACKFILL_JSON_INTERVAL_SQL = "make_interval(secs => (p.r ->> {name})::float8)"
# A backfill's progress is saved after each page: without waiting for the
# WAL flush (a server crash may lose the last saves; the pages since come again).
BACKFILL_ASYNC_COMMIT_SQL = "SET LOCAL synchronous_commit = off"
# Whether the backfills table exists (creating it needs CREATE on the schema).
BACKFILLS_EXIST_SQL = "SELECT to_regclass(%s) IS NOT NULL"
