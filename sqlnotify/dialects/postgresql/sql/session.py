"""Small statements, and those of the listener's session."""

from __future__ import annotations

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
