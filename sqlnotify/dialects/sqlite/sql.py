"""Every SQL statement of the SQLite dialect, as data.

Three tables live in the watched database file:

``sqlnotify_log``
    The change log: the triggers append one row per change, listeners read
    it in order and prune it (:mod:`.source`).
``sqlnotify_consumers``
    The saved position of each named consumer (:mod:`.consumers`).
``sqlnotify_users``
    Which notifiers use which trigger (:mod:`.owners`).

Statements with a ``{name}`` field are templates for :meth:`str.format`;
the others take ``?`` parameters.  :func:`value_sql` builds the expression a
trigger puts in the payload for one column, and :func:`trigger_comment` /
:func:`trigger_metadata` write and read the metadata a trigger carries;
:func:`create_trigger_sql` puts a watch's trigger together.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import types as sqltypes

from ..._names import quote_ident, quote_sqlite_literal
from ..._watch import Watch

LOG_TABLE = "sqlnotify_log"
CONSUMERS_TABLE = "sqlnotify_consumers"
REGISTRY_TABLE = "sqlnotify_users"

_LOG = quote_ident(LOG_TABLE)
_CONSUMERS = quote_ident(CONSUMERS_TABLE)
_USERS = quote_ident(REGISTRY_TABLE)

# -- connections and transactions ---------------------------------------------
BEGIN_SQL = "BEGIN IMMEDIATE"
COMMIT_SQL = "COMMIT"
ROLLBACK_SQL = "ROLLBACK"
JOURNAL_MODE_SQL = "PRAGMA journal_mode"
WAL_SQL = "PRAGMA journal_mode=WAL"
#: Changes whenever another connection committed.
DATA_VERSION_SQL = "PRAGMA data_version"
#: Template: ``milliseconds``.
BUSY_TIMEOUT_SQL = "PRAGMA busy_timeout = {milliseconds}"
TABLE_EXISTS_SQL = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

# -- the change log -------------------------------------------------------------
# The comment names this copy of the table: a listener that finds a
# different one after a reconnect knows the log was recreated.
LOG_TABLE_SQL = f"""\
CREATE TABLE IF NOT EXISTS {_LOG} (
    -- sqlnotify change log {{generation}}
    "seq" INTEGER PRIMARY KEY AUTOINCREMENT,
    "ts" REAL NOT NULL,
    "channel" TEXT NOT NULL,
    "payload" TEXT NOT NULL
)"""
INSERT_SQL = f'INSERT INTO {_LOG} ("ts", "channel", "payload") VALUES (?, ?, ?)'
FETCH_SQL = f'SELECT "seq", "channel", "payload" FROM {_LOG} WHERE "seq" > ? ORDER BY "seq" LIMIT ?'
LOG_INFO_SQL = f'SELECT count(*), min("seq"), max("seq") FROM {_LOG}'
#: The last sequence number ever given out (the log's name as parameter).
END_SQL = "SELECT seq FROM sqlite_sequence WHERE name = ?"
#: The log's ``CREATE TABLE`` text, with its generation mark (the log's name as parameter).
GENERATION_SQL = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?"
# Deletes a prefix of at most ``batch`` rows: never a long scan, never a long lock.
PRUNE_SQL = f"""\
DELETE FROM {_LOG} WHERE "seq" <= (
    SELECT max("seq") FROM (
        SELECT "seq", "ts" FROM {_LOG} ORDER BY "seq" LIMIT ?
    ) WHERE "ts" < ? AND "seq" <= ?
)"""


def log_table_sql() -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the change log, with a new generation mark."""
    return LOG_TABLE_SQL.format(generation=uuid.uuid4().hex)


# -- triggers -------------------------------------------------------------------
MARKER = "-- sqlnotify:"

# julianday('now') is the statement's time with millisecond resolution.
# The metadata comment ends the first line, right after the trigger's own
# name: no table or column name comes before it, so none can imitate it.
TRIGGER_SQL = """\
CREATE TRIGGER {trigger}{comment} AFTER {operation}{columns} ON {table} FOR EACH ROW{when}
BEGIN
INSERT INTO {log} ("ts", "channel", "payload")
SELECT t, {channel}, json_object('ts', t, 'row', json_object({row}){update})
FROM (SELECT (julianday('now') - 2440587.5) * 86400.0 AS t);
END"""
# An UPDATE also says which watched columns changed ("chg"), and with
# include_old=True holds their old values ("old").
CHANGED_TEST_SQL = "CASE WHEN OLD.{column} IS NOT NEW.{column} THEN {name} END"
CHANGED_SQL = (
    ", 'chg', json((SELECT json_group_array(value) FROM json_each(json_array({tests}))"
    " WHERE value IS NOT NULL))"
)
OLD_SQL = ", 'old', json_object({old})"
TRIGGERS_SQL = (
    "SELECT name, tbl_name, sql FROM sqlite_master"
    " WHERE type = 'trigger' AND name LIKE 'sqlnotify\\_%' ESCAPE '\\'"
)
#: Template: ``trigger`` (quoted).
DROP_TRIGGER_SQL = "DROP TRIGGER IF EXISTS {trigger}"


def create_trigger_sql(watch: Watch, comment: str, condition: str | None = None) -> str:
    """The ``CREATE TRIGGER`` statement of ``watch``; ``comment`` ends its first line.

    ``condition``: the watch's ``where=`` condition as SQL on its row.
    """
    ref = "OLD" if watch.operation.value == "delete" else "NEW"
    row = _pairs(watch, ref)
    update = ""
    if watch.operation.value == "update":
        checks = ", ".join(
            CHANGED_TEST_SQL.format(column=quote_ident(c), name=quote_sqlite_literal(c))
            for c in watch.compared_columns
        )
        update = CHANGED_SQL.format(tests=checks)
        if watch.include_old:
            update += OLD_SQL.format(old=_pairs(watch, "OLD"))
    columns = when = ""
    tests = []
    if watch.trigger_columns:
        columns = " OF " + ", ".join(quote_ident(c) for c in watch.trigger_columns)
        tests.append(
            " OR ".join(
                f"OLD.{quote_ident(c)} IS NOT NEW.{quote_ident(c)}" for c in watch.trigger_columns
            )
        )
    if condition:
        tests.append(condition)
    if tests:
        when = " WHEN " + " AND ".join(f"({t})" if len(tests) > 1 else t for t in tests)
    return TRIGGER_SQL.format(
        trigger=quote_ident(watch.channel),
        operation=watch.operation.value.upper(),
        columns=columns,
        table=quote_ident(watch.table),
        when=when,
        comment=comment,
        log=_LOG,
        channel=quote_sqlite_literal(watch.channel),
        row=row,
        update=update,
    )


def _pairs(watch: Watch, ref: str) -> str:
    """``'name', <value expression>, ...`` of the payload columns, for ``json_object``."""
    return ", ".join(
        quote_sqlite_literal(c) + ", " + value_sql(watch.column_types[c], f"{ref}.{quote_ident(c)}")
        for c in watch.payload_columns
    )


def trigger_comment(meta: dict[str, Any]) -> str:
    """The metadata comment that ends a trigger's first line."""
    # ensure_ascii: no newline or other character can end the comment early.
    text = json.dumps(meta, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return " " + MARKER + text + "\n"


def trigger_metadata(sql: str) -> dict[str, Any] | None:
    """The metadata recorded in a trigger's SQL; ``None`` for a trigger sqlnotify did not make.

    The comment ends the first line.  Triggers made before it moved there
    carry it on a line of its own further down: that form is read too.
    """
    first, _, rest = sql.partition("\n")
    _, marker, text = first.partition(" " + MARKER)
    if not marker:
        line = next((x for x in rest.splitlines() if x.startswith(MARKER)), None)
        if line is None:
            return None
        text = line[len(MARKER) :]
    try:
        meta = json.loads(text)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


# SQLite renders REAL values in JSON with 15 significant digits, and version
# 3.40 writes infinity as the invalid token ``Inf``.  Floats therefore travel
# as text with 17 digits (exact round trip), and ``json_object`` never sees a
# BLOB, which it rejects (that would fail the user's write).
_FINITE = "{r} BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"


def value_sql(type_: Any, ref: str) -> str:
    """The SQL expression an SQLite trigger puts in the payload for one column.

    Never raises inside the trigger, whatever the column holds (SQLite lets
    any column hold any type).
    """
    t = type_
    if isinstance(t, sqltypes.TypeDecorator) and not isinstance(t, sqltypes.Interval):
        t = t.impl_instance if hasattr(t, "impl_instance") else t.impl
    if isinstance(t, sqltypes.LargeBinary):
        return f"CASE WHEN {ref} IS NULL THEN NULL ELSE hex({ref}) END"
    real = f"CASE WHEN {_FINITE.format(r=ref)} THEN {ref} ELSE printf('%!.17g', {ref}) END"
    if isinstance(t, sqltypes.Float):
        real = f"printf('%!.17g', {ref})"
    elif isinstance(t, sqltypes.Numeric) and t.asdecimal:
        real = f"printf('%!.15g', {ref})"
    if isinstance(t, sqltypes.JSON):
        text = f"CASE WHEN json_valid({ref}) THEN json({ref}) ELSE {ref} END"
        return (
            f"CASE typeof({ref}) WHEN 'text' THEN {text} WHEN 'blob' THEN hex({ref})"
            f" WHEN 'real' THEN {real} ELSE {ref} END"
        )
    return f"CASE typeof({ref}) WHEN 'blob' THEN hex({ref}) WHEN 'real' THEN {real} ELSE {ref} END"


# -- named consumers ------------------------------------------------------------
CONSUMERS_SQL = f"""\
CREATE TABLE IF NOT EXISTS {_CONSUMERS} (
    "name" TEXT PRIMARY KEY,
    "seq" INTEGER NOT NULL,
    "updated" REAL NOT NULL
)"""
SAVE_SQL = f"""\
INSERT INTO {_CONSUMERS} ("name", "seq", "updated") VALUES (?, ?, ?)
ON CONFLICT ("name") DO UPDATE
SET "seq" = max("seq", excluded."seq"), "updated" = excluded."updated"
"""
LOAD_SQL = f'SELECT "seq", "updated" FROM {_CONSUMERS} WHERE "name" = ?'
OLDEST_SQL = f'SELECT min("seq") FROM {_CONSUMERS} WHERE "updated" > ?'

# -- the registry of users --------------------------------------------------------
REGISTRY_SQL = f"""\
CREATE TABLE IF NOT EXISTS {_USERS} (
    "channel" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "app" TEXT NOT NULL,
    "host" TEXT NOT NULL,
    "pid" INTEGER NOT NULL,
    "live" INTEGER NOT NULL,
    "first_seen" REAL NOT NULL,
    "last_seen" REAL NOT NULL,
    PRIMARY KEY ("channel", "user_id")
)"""
TOUCH_SQL = f"""\
INSERT INTO {_USERS} ("channel", "user_id", "app", "host", "pid", "live", "first_seen", "last_seen")
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT ("channel", "user_id") DO UPDATE SET "last_seen" = excluded."last_seen",
    "live" = excluded."live\""""
IN_USE_SQL = f"""\
SELECT EXISTS (SELECT 1 FROM {_USERS} WHERE "channel" = ? AND "user_id" <> ?
    AND (("live" AND "last_seen" > ?) OR "last_seen" > ?))"""
FORGET_SQL = f'DELETE FROM {_USERS} WHERE "user_id" = ? AND "channel" = ?'
DROP_USERS_SQL = f'DELETE FROM {_USERS} WHERE "channel" = ?'
USERS_SQL = (
    f'SELECT "channel", "user_id", "app", "host", "pid", "live", "last_seen" FROM {_USERS}'
    ' ORDER BY "channel", "last_seen" DESC'
)
