"""The overflow table, the registry of notifiers, and the lock reports."""

from __future__ import annotations

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
