"""sqlnotify in a plain script: a sync engine, ``notifier.start()``, a few rows, ``stop()``.

Run it as it is, on an SQLite file in the working directory
(``sqlnotify-example.db``), or on any database you may create a table in::

    python examples/plain_script.py
    DATABASE_URL=postgresql+psycopg2://user@localhost/dbname python examples/plain_script.py

It creates a ``plain_script_users`` table, watches inserts, updates and
deletes on it, makes a few changes, prints each event as it arrives, then
stops the notifier, removes its triggers and drops the table.
"""

from __future__ import annotations

import os
import threading

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlnotify import ChangeEvent, Notifier, Operation

URL = os.environ.get("DATABASE_URL", "sqlite:///sqlnotify-example.db")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "plain_script_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    name: Mapped[str]


def main() -> None:
    engine = sa.create_engine(URL)
    Base.metadata.create_all(engine)

    notifier = Notifier(engine)
    notifier.watch(User, Operation.INSERT, extra_columns=["email", "name"])
    notifier.watch(User, Operation.UPDATE, extra_columns=["email"], trigger_columns=["email"])
    notifier.watch(User, Operation.DELETE)

    expected = 4  # two inserts, one email change, one delete
    received: list[ChangeEvent] = []
    all_done = threading.Event()

    def show(event: ChangeEvent) -> None:
        # Runs on the notifier's dispatcher thread.
        print(f"{event.operation.value} id={event.id} {dict(event.extra_columns)}", flush=True)
        received.append(event)
        if len(received) == expected:
            all_done.set()

    for operation in Operation.rows():
        notifier.subscribe(User, operation)(show)

    notifier.start()  # returns once the listener listens: nothing below is missed
    try:
        with Session(engine) as session:
            session.add_all(
                [
                    User(id=1, email="ada@example.com", name="Ada"),
                    User(id=2, email="alan@example.com", name="Alan"),
                ]
            )
            session.commit()
            ada = session.get(User, 1)
            assert ada is not None
            ada.name = "Ada Lovelace"  # not a trigger column: no event
            session.commit()
            ada.email = "ada@lovelace.example"
            session.commit()
            session.delete(session.get(User, 2))
            session.commit()
        if not all_done.wait(timeout=10):
            raise SystemExit(f"only {len(received)} of {expected} events arrived")
    finally:
        notifier.stop(cleanup=True)  # also remove the triggers: this is a demo
        Base.metadata.drop_all(engine)
        engine.dispose()
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
