"""A relay or a consumer in a process of its own, for the Redis Streams tests.

``python redis_child.py relay <db-url> <redis-url> <prefix> <table>
[save_interval]``: a relay of durable inserts into ``table``; prints ``active``
once it is the active one (``save_interval``: its :attr:`Relay.save_interval`).

``python redis_child.py consume <db-url> <redis-url> <prefix> <table> <group>
<name> [claim_idle] [hang_after]``: a consumer; each event's id goes to the
Redis list ``<prefix>got:<group>`` as ``<name>:<id>``, each gap to
``<prefix>gaps`` as ``<name>:<count>``.  With ``hang_after``, the receiver
blocks for good after that many events (its entries stay pending).
Prints ``ready`` once reading.  Both stop cleanly on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import redis
import sqlalchemy as sa

from sqlnotify import Notifier, signals
from sqlnotify.relay import Relay


def relay(db_url: str, redis_url: str, prefix: str, table: str, save_interval: str = "") -> None:
    engine = sa.create_engine(db_url)
    source = Notifier(engine).watch(table, "insert", durable=True)
    r = Relay(source, redis_url, name=prefix, stream_prefix=prefix)
    if save_interval:
        r.save_interval = float(save_interval)
    r.start()
    said = threading.Event()
    while not said.is_set():
        if r.active:
            print("active", flush=True)
            said.set()
        else:
            said.wait(0.02)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    r.stop()


def consume(
    db_url: str,
    redis_url: str,
    prefix: str,
    table: str,
    group: str,
    name: str,
    claim_idle: str = "30",
    hang_after: str = "0",
) -> None:
    engine = sa.create_engine(db_url)
    out = redis.Redis.from_url(redis_url)
    n = Notifier.from_redis(
        engine,
        redis_url,
        group=group,
        consumer=name,
        stream_prefix=prefix,
        claim_idle=float(claim_idle),
    ).watch(table, "insert", durable=True)
    hang = int(hang_after)
    handled = [0]
    forever = threading.Event()

    def receive(event: Any) -> None:
        out.rpush(f"{prefix}got:{group}", f"{name}:{event.id}")
        handled[0] += 1
        if hang and handled[0] >= hang:
            print("hanging", flush=True)
            forever.wait()

    def gap(sender: Any, **kw: Any) -> None:
        out.rpush(f"{prefix}gaps", f"{name}:{kw.get('count')}")

    n.subscribe(table, "insert")(receive)
    signals.gap.connect(gap)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    n.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    n.stop()


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "relay":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        relay(*args)
    else:
        consume(*args)
