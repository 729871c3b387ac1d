"""The ``backend`` fixture: every conformance test runs once per dialect.

``memory`` (the in-memory dialect, no database), ``sqlite`` (a temporary
file), ``postgresql`` (a schema of its own, marked ``postgresql``) and
``mariadb`` (a database of its own, marked ``mysql``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from backends import Backend, MemoryBackend, MySQLBackend, PostgresBackend, SQLiteBackend

from sqlnotify import Notifier

DIALECTS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mysql),
]


@pytest.fixture(params=DIALECTS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    notifiers: list[Notifier] = []
    own: sa.Engine | None = None
    made: Backend
    if request.param == "memory":
        own = sa.create_engine("sqlite://")
        made = MemoryBackend(own, notifiers)
    elif request.param == "sqlite":
        own = sa.create_engine(f"sqlite:///{request.getfixturevalue('sqlite_path')}")
        made = SQLiteBackend(own, notifiers)
    elif request.param == "mariadb":
        made = MySQLBackend(request.getfixturevalue("mysql_engine"), notifiers)
    else:
        engine = request.getfixturevalue("pg_schema_engine")
        made = PostgresBackend(engine, notifiers, request.getfixturevalue("schema"))
    try:
        yield made
    finally:
        # Before the schema or file goes.
        for notifier in notifiers:
            notifier.stop()
        if own is not None:
            own.dispose()
