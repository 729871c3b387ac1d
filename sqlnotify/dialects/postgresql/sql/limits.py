"""Limits, object names and lock keys shared by PostgreSQL's SQL templates."""

from __future__ import annotations

from ...._names import digest

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
