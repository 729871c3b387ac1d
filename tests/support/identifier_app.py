"""The application ``sqlnotify sql --app support.identifier_app:notifier`` loads (identifier tests).

In process, a test sets :data:`CURRENT`; a ``sqlnotify`` child process reads
the same description as JSON from ``SQLNOTIFY_IDENTIFIER_APP``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import sqlalchemy as sa

from sqlnotify import Notifier
from support.identifiers import Spec, declare

#: ``{"engine": Engine, "schema": str, "spec": Spec}`` for in-process runs.
CURRENT: dict[str, Any] = {}


def notifier() -> Notifier:
    """A notifier declaring the property tests' watches on the described table."""
    if CURRENT:
        engine, schema, spec = CURRENT["engine"], CURRENT["schema"], CURRENT["spec"]
    else:
        data = json.loads(os.environ["SQLNOTIFY_IDENTIFIER_APP"])
        engine = sa.create_engine(data["url"])
        schema, spec = data["schema"], Spec(**data["spec"])
    result = Notifier(engine, journal_schema=schema)
    declare(result, spec.table_object(schema), spec, postgres=True)
    return result
