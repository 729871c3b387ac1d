"""What the tests know of a ChangeEvent's documented form."""

from __future__ import annotations

#: The documented keys of ``ChangeEvent.to_dict()``, in their order; the
#: first seven are the event's mapping keys.
EVENT_KEYS = (
    "schema",
    "table",
    "operation",
    "id",
    "extra_columns",
    "timestamp",
    "channel",
    "position",
    "status",
    "custom",
    "changed_columns",
    "old",
)
