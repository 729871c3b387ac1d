"""A worker-style script: react to new rows until Ctrl-C or SIGTERM, then stop cleanly.

Models can be SQLModel classes, exactly like SQLAlchemy declarative ones::

    DATABASE_URL=postgresql+psycopg2://user@localhost/dbname python examples/worker.py
    psql -h localhost -U user dbname -c "INSERT INTO worker_jobs (kind) VALUES ('resize')"
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from sqlnotify import ChangeEvent, Notifier, signals


class Job(SQLModel, table=True):
    __tablename__ = "worker_jobs"
    id: int | None = Field(default=None, primary_key=True)
    kind: str


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    url = os.environ.get("DATABASE_URL") or sys.exit(
        "set DATABASE_URL to a PostgreSQL database,"
        " e.g. postgresql+psycopg2://user:password@localhost/dbname"
    )
    engine = sa.create_engine(url)
    SQLModel.metadata.create_all(engine)
    notifier = Notifier(engine)
    notifier.watch(Job, "insert", extra_columns=["kind"])

    @notifier.subscribe(Job, "insert")
    def run_job(event: ChangeEvent) -> None:
        print(f"job {event.id}: {event.extra_columns['kind']}", flush=True)

    def announce(sender: Notifier, reconnect: bool, **_: Any) -> None:
        print("listening again" if reconnect else "listening", flush=True)

    signals.listener_connected.connect(announce, sender=notifier)
    got = notifier.run_forever()  # blocks; SIGINT or SIGTERM ends it
    print(f"stopped by {signal.Signals(got).name if got else 'stop()'}", flush=True)


if __name__ == "__main__":
    main()
