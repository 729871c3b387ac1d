"""Every SQL statement of the MySQL/MariaDB dialect, as data.

Four tables live in the journal's database (the engine's default database,
or ``journal_schema``):

``sqlnotify_log``
    The change log: the triggers append one row per change in the writer's
    transaction (InnoDB), listeners read it (:mod:`.source`) and prune it.
``sqlnotify_log_state``
    One row: the highest log id pruning removed, and when (retention gaps).
``sqlnotify_consumers``
    The saved position of each named consumer (:mod:`.consumers`).
``sqlnotify_users``
    Which notifiers use which trigger (:mod:`.owners`), and each trigger's
    metadata (MySQL keeps no comment of a trigger's body).

Statements with a ``{name}`` field are templates for :meth:`str.format`
(names quoted by :func:`quote_ident`); the others take ``%s`` parameters
(PyMySQL's paramstyle).  :func:`create_trigger_sql` puts a watch's trigger
together.
"""

from __future__ import annotations

import json

from sqlalchemy import types as sqltypes

from ..._watch import Watch

LOG_TABLE = "sqlnotify_log"
STATE_TABLE = "sqlnotify_log_state"
CONSUMERS_TABLE = "sqlnotify_consumers"
REGISTRY_TABLE = "sqlnotify_users"
TRIGGERS_TABLE = "sqlnotify_triggers"


def quote_ident(name: str) -> str:
    """A backtick-quoted MySQL identifier (backticks doubled)."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return "`" + name.replace("`", "``") + "`"


def qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def quote_literal(value: str) -> str:
    """A string literal read the same way whatever ``sql_mode`` says.

    Plain quotes when the text holds neither quote nor backslash (whose
    meaning ``NO_BACKSLASH_ESCAPES`` changes); a hexadecimal literal otherwise.
    """
    if "'" not in value and "\\" not in value and "\x00" not in value:
        return "'" + value + "'"
    return "CONVERT(X'" + value.encode("utf-8").hex() + "' USING utf8mb4)"


# -- sessions and locks ---------------------------------------------------------
#: Template: ``seconds`` (an integer): how long DDL waits for a metadata lock.
LOCK_WAIT_SQL = "SET SESSION lock_wait_timeout = {seconds}"
INNODB_LOCK_WAIT_SQL = "SET SESSION innodb_lock_wait_timeout = {seconds}"
GET_LOCK_SQL = "SELECT GET_LOCK(%s, %s)"
RELEASE_LOCK_SQL = "SELECT RELEASE_LOCK(%s)"
DATABASE_SQL = "SELECT DATABASE()"
NOW_SQL = "SELECT UNIX_TIMESTAMP(NOW(6))"
VERSION_SQL = "SELECT VERSION()"
TABLE_EXISTS_SQL = (
    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
)
#: The listener reads committed rows only and takes no gap locks.
READ_COMMITTED_SQL = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
#: Error codes of a locking read that met a lock under ``NOWAIT`` (MariaDB, MySQL).
LOCKED_ERRORS = (1205, 3572)


# -- the change log ---------------------------------------------------------------
def log_table_sql(db: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {qualified(db, LOG_TABLE)} (
    `id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    `ts` DOUBLE NOT NULL,
    `channel` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `payload` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    KEY `sqlnotify_log_ts` (`ts`)
) ENGINE=InnoDB"""


def state_table_sql(db: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {qualified(db, STATE_TABLE)} (
    `k` TINYINT NOT NULL PRIMARY KEY,
    `pruned_upto` BIGINT NOT NULL,
    `pruned_ts` DOUBLE NOT NULL
) ENGINE=InnoDB"""


def insert_sql(db: str) -> str:
    return (
        f"INSERT INTO {qualified(db, LOG_TABLE)} (`ts`, `channel`, `payload`) VALUES (%s, %s, %s)"
    )


def fetch_sql(db: str, ranges: int) -> str:
    """Rows after a position: ``id > %s``, or in one of ``ranges`` pending ``BETWEEN %s AND %s``."""
    late = "".join(" OR `id` BETWEEN %s AND %s" for _ in range(ranges))
    return (
        f"SELECT `id`, `channel`, `payload` FROM {qualified(db, LOG_TABLE)}"
        f" WHERE `id` > %s{late} ORDER BY `id` LIMIT %s"
    )


def probe_sql(db: str, ranges: int) -> str:
    """A locking read of ``ranges`` pending ranges that fails at once on an open writer's row.

    An uncommitted insert holds its row's lock: the read meets it and fails
    (:data:`LOCKED_ERRORS`); without one, every id of the ranges is final.
    """
    where = " OR ".join("`id` BETWEEN %s AND %s" for _ in range(ranges))
    return f"SELECT `id` FROM {qualified(db, LOG_TABLE)} WHERE {where} FOR UPDATE NOWAIT"


def end_sql(db: str) -> str:
    return f"SELECT COALESCE(MAX(`id`), 0) FROM {qualified(db, LOG_TABLE)}"


def log_info_sql(db: str) -> str:
    return f"SELECT COUNT(*), MIN(`id`), MAX(`id`) FROM {qualified(db, LOG_TABLE)}"


def prune_bound_sql(db: str) -> str:
    """The last id of a bounded batch of old rows (params: upto, cutoff, batch)."""
    return (
        f"SELECT MAX(`id`) FROM (SELECT `id` FROM {qualified(db, LOG_TABLE)}"
        " WHERE `id` <= %s AND `ts` < %s ORDER BY `id` LIMIT %s) AS `b`"
    )


def prune_sql(db: str) -> str:
    return f"DELETE FROM {qualified(db, LOG_TABLE)} WHERE `id` <= %s AND `ts` < %s"


def mark_pruned_sql(db: str) -> str:
    return (
        f"INSERT INTO {qualified(db, STATE_TABLE)} (`k`, `pruned_upto`, `pruned_ts`)"
        " VALUES (1, %s, %s) ON DUPLICATE KEY UPDATE"
        " `pruned_ts` = IF(VALUES(`pruned_upto`) > `pruned_upto`,"
        " VALUES(`pruned_ts`), `pruned_ts`),"
        " `pruned_upto` = GREATEST(`pruned_upto`, VALUES(`pruned_upto`))"
    )


def pruned_sql(db: str) -> str:
    return f"SELECT `pruned_upto`, `pruned_ts` FROM {qualified(db, STATE_TABLE)} WHERE `k` = 1"


# -- triggers -----------------------------------------------------------------------
TRIGGER_SQL = """\
CREATE TRIGGER {trigger} AFTER {operation} ON {table} FOR EACH ROW
{guard}INSERT INTO {log} (`ts`, `channel`, `payload`)
VALUES (UNIX_TIMESTAMP(NOW(6)), {channel},
JSON_OBJECT('ts', UNIX_TIMESTAMP(NOW(6)), 'row', JSON_OBJECT({row}){update}));{end}"""
# An UPDATE also says which watched columns changed ("chg": CONCAT_WS skips
# the NULLs of the unchanged ones), and with include_old=True holds their old
# values ("old").
CHANGED_TEST_SQL = "IF(OLD.{column} <=> NEW.{column}, NULL, {name})"
CHANGED_SQL = ", 'chg', JSON_EXTRACT(CONCAT('[', CONCAT_WS(',', {tests}), ']'), '$')"
OLD_SQL = ", 'old', JSON_OBJECT({old})"
#: Every sqlnotify trigger: name, schema, table (params: none).
TRIGGERS_SQL = (
    "SELECT TRIGGER_NAME, EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS"
    " WHERE TRIGGER_NAME LIKE 'sqlnotify\\_%'"
)
#: Template: ``trigger`` (qualified).
DROP_TRIGGER_SQL = "DROP TRIGGER IF EXISTS {trigger}"
#: Template: ``table`` (qualified): replacing a trigger under a write lock loses no write.
LOCK_TABLE_SQL = "LOCK TABLES {table} WRITE"
UNLOCK_TABLES_SQL = "UNLOCK TABLES"


def create_trigger_sql(watch: Watch, db: str, schema: str, condition: str | None = None) -> str:
    """The ``CREATE TRIGGER`` statement of ``watch`` (log in ``db``, table in ``schema``).

    ``condition``: the watch's ``where=`` condition as SQL on its row.
    """
    ref = "OLD" if watch.operation.value == "delete" else "NEW"
    row = _pairs(watch, ref)
    update = ""
    if watch.operation.value == "update":
        checks = ", ".join(
            CHANGED_TEST_SQL.format(
                column=quote_ident(c), name=quote_literal(json.dumps(c, ensure_ascii=False))
            )
            for c in watch.compared_columns
        )
        update = CHANGED_SQL.format(tests=checks)
        if watch.include_old:
            update += OLD_SQL.format(old=_pairs(watch, "OLD"))
    guard = end = ""
    tests = []
    if watch.trigger_columns:
        tests.append(
            " OR ".join(
                f"NOT (OLD.{quote_ident(c)} <=> NEW.{quote_ident(c)})"
                for c in watch.trigger_columns
            )
        )
    if condition:
        tests.append(condition)
    if tests:
        # A NULL condition is no: IF runs its branch only when true.
        test = " AND ".join(f"({t})" if len(tests) > 1 else t for t in tests)
        guard, end = f"BEGIN IF {test} THEN\n", "\nEND IF; END"
    text = TRIGGER_SQL.format(
        trigger=qualified(schema, watch.channel),
        operation=watch.operation.value.upper(),
        table=qualified(schema, watch.table),
        guard=guard,
        log=qualified(db, LOG_TABLE),
        channel=quote_literal(watch.channel),
        row=row,
        update=update,
        end=end,
    )
    # A single statement needs no ``;`` (some clients split on it).
    return text if end else text.rstrip(";")


def _pairs(watch: Watch, ref: str) -> str:
    """``'name', <value expression>, ...`` of the payload columns, for ``JSON_OBJECT``."""
    return ", ".join(
        quote_literal(c) + ", " + value_sql(watch.column_types[c], f"{ref}.{quote_ident(c)}")
        for c in watch.payload_columns
    )


def value_sql(type_: object, ref: str) -> str:
    """The expression a trigger puts in the payload for one column.

    JSON documents are embedded (``JSON_EXTRACT(x, '$')``: MariaDB stores
    JSON as text), decimals travel as text (no float rounding), binary as hex.
    """
    t = type_
    while isinstance(t, sqltypes.TypeDecorator) and not isinstance(t, sqltypes.Interval):
        t = t.impl_instance if hasattr(t, "impl_instance") else t.impl
    if isinstance(t, sqltypes.JSON):
        return f"JSON_EXTRACT({ref}, '$')"
    if isinstance(t, (sqltypes.LargeBinary, sqltypes._Binary)):
        return f"HEX({ref})"
    if isinstance(t, sqltypes.Numeric) and not isinstance(t, sqltypes.Float) and t.asdecimal:
        return f"CAST({ref} AS CHAR)"
    return ref


# -- trigger metadata (MySQL keeps no comment of a trigger body) ----------------------
def triggers_table_sql(db: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {qualified(db, TRIGGERS_TABLE)} (
    `schema_name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `trigger_name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `meta` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (`schema_name`, `trigger_name`)
) ENGINE=InnoDB"""


def save_meta_sql(db: str) -> str:
    return (
        f"INSERT INTO {qualified(db, TRIGGERS_TABLE)} (`schema_name`, `trigger_name`, `meta`)"
        " VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE `meta` = VALUES(`meta`)"
    )


def load_meta_sql(db: str) -> str:
    return f"SELECT `schema_name`, `trigger_name`, `meta` FROM {qualified(db, TRIGGERS_TABLE)}"


def drop_meta_sql(db: str) -> str:
    return (
        f"DELETE FROM {qualified(db, TRIGGERS_TABLE)}"
        " WHERE `schema_name` = %s AND `trigger_name` = %s"
    )


# -- named consumers ------------------------------------------------------------------
def consumers_table_sql(db: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {qualified(db, CONSUMERS_TABLE)} (
    `name` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    `low` BIGINT NOT NULL,
    `high` BIGINT NOT NULL,
    `position` LONGTEXT NOT NULL,
    `updated` DOUBLE NOT NULL
) ENGINE=InnoDB"""


def save_consumer_sql(db: str) -> str:
    """Params: name, low, high, position, updated; never moves a position backwards."""
    return (
        f"INSERT INTO {qualified(db, CONSUMERS_TABLE)}"
        " (`name`, `low`, `high`, `position`, `updated`) VALUES (%s, %s, %s, %s, %s)"
        " ON DUPLICATE KEY UPDATE"
        " `position` = IF(VALUES(`high`) >= `high`, VALUES(`position`), `position`),"
        " `low` = IF(VALUES(`high`) >= `high`, VALUES(`low`), `low`),"
        " `high` = GREATEST(`high`, VALUES(`high`)), `updated` = VALUES(`updated`)"
    )


def load_consumer_sql(db: str) -> str:
    return f"SELECT `position`, `updated` FROM {qualified(db, CONSUMERS_TABLE)} WHERE `name` = %s"


def oldest_consumer_sql(db: str) -> str:
    return f"SELECT MIN(`low`) FROM {qualified(db, CONSUMERS_TABLE)} WHERE `updated` > %s"


# -- the registry of users ----------------------------------------------------------------
def registry_table_sql(db: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {qualified(db, REGISTRY_TABLE)} (
    `channel` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `user_id` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `app` VARCHAR(255) NOT NULL,
    `host` VARCHAR(255) NOT NULL,
    `pid` BIGINT NOT NULL,
    `live` TINYINT NOT NULL,
    `first_seen` DOUBLE NOT NULL,
    `last_seen` DOUBLE NOT NULL,
    PRIMARY KEY (`channel`, `user_id`)
) ENGINE=InnoDB"""


def touch_sql(db: str) -> str:
    return (
        f"INSERT INTO {qualified(db, REGISTRY_TABLE)} (`channel`, `user_id`, `app`, `host`,"
        " `pid`, `live`, `first_seen`, `last_seen`) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON DUPLICATE KEY UPDATE `last_seen` = VALUES(`last_seen`), `live` = VALUES(`live`)"
    )


def in_use_sql(db: str) -> str:
    return (
        f"SELECT EXISTS (SELECT 1 FROM {qualified(db, REGISTRY_TABLE)} WHERE `channel` = %s"
        " AND `user_id` <> %s AND ((`live` AND `last_seen` > %s) OR `last_seen` > %s))"
    )


def forget_sql(db: str) -> str:
    return f"DELETE FROM {qualified(db, REGISTRY_TABLE)} WHERE `user_id` = %s AND `channel` = %s"


def drop_users_sql(db: str) -> str:
    return f"DELETE FROM {qualified(db, REGISTRY_TABLE)} WHERE `channel` = %s"


def users_sql(db: str) -> str:
    return (
        f"SELECT `channel`, `user_id`, `app`, `host`, `pid`, `live`, `last_seen`"
        f" FROM {qualified(db, REGISTRY_TABLE)} ORDER BY `channel`, `last_seen` DESC"
    )


# -- the binlog source (:mod:`.binlog`) -----------------------------------------------
BINLOG_CONSUMERS_TABLE = "sqlnotify_binlog_consumers"
#: The server settings the binlog source needs (one row; ``binlog_row_metadata`` apart:
#: older servers lack it).
BINLOG_SETTINGS_SQL = "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, VERSION()"
BINLOG_METADATA_SQL = "SELECT @@binlog_row_metadata"
#: MySQL 8.0.20+: transactions written as compressed payload events, which the source
#: cannot read (MariaDB lacks the variable).
BINLOG_COMPRESSION_SQL = "SELECT @@GLOBAL.binlog_transaction_compression"
GRANTS_SQL = "SHOW GRANTS FOR CURRENT_USER()"
#: Every binary log file and its size (the last one's size is the log's end).  MySQL 8.4
#: removed ``SHOW MASTER STATUS``; this statement exists in MySQL 5.7-8.4 and MariaDB.
BINARY_LOGS_SQL = "SHOW BINARY LOGS"
GTID_POS_SQL = "SELECT @@gtid_binlog_pos"


def binlog_consumers_table_sql(db: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {qualified(db, BINLOG_CONSUMERS_TABLE)} (
    `name` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    `ord` DECIMAL(40, 0) NOT NULL,
    `position` TEXT NOT NULL,
    `updated` DOUBLE NOT NULL
) ENGINE=InnoDB"""


def save_binlog_consumer_sql(db: str) -> str:
    """Params: name, ord, position, updated; never moves a position backwards."""
    return (
        f"INSERT INTO {qualified(db, BINLOG_CONSUMERS_TABLE)}"
        " (`name`, `ord`, `position`, `updated`) VALUES (%s, %s, %s, %s)"
        " ON DUPLICATE KEY UPDATE"
        " `position` = IF(VALUES(`ord`) >= `ord`, VALUES(`position`), `position`),"
        " `ord` = GREATEST(`ord`, VALUES(`ord`)), `updated` = VALUES(`updated`)"
    )


def load_binlog_consumer_sql(db: str) -> str:
    return (
        f"SELECT `position`, `updated` FROM {qualified(db, BINLOG_CONSUMERS_TABLE)}"
        " WHERE `name` = %s"
    )
