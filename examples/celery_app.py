"""Committed inserts turned into Celery tasks, with PostgreSQL as the only service.

The worker's main process listens (``where="main"``), so each new order is
enqueued once; a pool process runs the task, which writes a receipt.  The
broker is PostgreSQL too, through kombu's SQLAlchemy transport.

Run it::

    export DATABASE_URL=postgresql+psycopg2://user@localhost/dbname
    celery --workdir examples -A celery_app worker --loglevel=INFO
    psql -h localhost -U user dbname \\
        -c "INSERT INTO celery_orders (customer, total_cents) VALUES ('ada', 4200)"
"""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa
from celery import Celery, signals
from sqlmodel import Field, Session, SQLModel

from sqlnotify import ChangeEvent, Notifier
from sqlnotify.adapters.celery import connect_celery

DATABASE_URL = os.environ.get("DATABASE_URL") or sys.exit(
    "set DATABASE_URL to a PostgreSQL database,"
    " e.g. postgresql+psycopg2://user:password@localhost/dbname"
)

app = Celery(
    "sqlnotify_example",
    broker="sqla+" + DATABASE_URL,  # kombu's SQLAlchemy transport: no other service
)
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_proc_alive_timeout=30,
)

engine = sa.create_engine(DATABASE_URL)


class Order(SQLModel, table=True):
    __tablename__ = "celery_orders"
    id: int | None = Field(default=None, primary_key=True)
    customer: str
    total_cents: int


class Receipt(SQLModel, table=True):
    __tablename__ = "celery_receipts"
    order_id: int = Field(primary_key=True)
    customer: str
    worker_pid: int


SQLModel.metadata.create_all(engine)

notifier = Notifier(engine)
notifier.watch(Order, "insert", extra_columns=["customer"])


@notifier.subscribe(Order, "insert")
def enqueue_receipt(event: ChangeEvent) -> None:
    # The dispatcher thread of the worker's main process.
    send_receipt.delay(event.id, event.extra_columns["customer"])


@app.task
def send_receipt(order_id: int, customer: str) -> None:
    with Session(engine) as session:
        session.add(Receipt(order_id=order_id, customer=customer, worker_pid=os.getpid()))
        session.commit()


@signals.worker_process_init.connect
def fresh_pool(**_: object) -> None:
    # A pool process must not reuse the connections its parent pooled.
    engine.dispose(close=False)


connect_celery(notifier, app, where="main")
