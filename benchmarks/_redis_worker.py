"""Child processes of the Redis cases: a relay, and notifiers reading its streams.

A relay worker (``role: relay``) starts a :class:`~sqlnotify.relay.Relay` of the
table's durable insert watch, says ``ready`` once it is active, and relays until
it gets SIGTERM; then it says ``result`` with the relay's ``health()``.
The ``redis`` consumer mode is a notifier reading the relay's streams in
consumer group ``group`` (see ``benchmarks._worker`` for the other modes).
The Redis cases start their children as ``python -m benchmarks._redis_worker``
(``spec["module"]``), which adds these roles to ``benchmarks._worker``'s.

``measure: "phases"`` (every mode): the first ``warmup + count`` events are
paced (their latency is recorded, less the warm-up); the ``rate_count`` events
after them are a burst, whose first and last receipt give a rate.
``measure: "shared"``: one of several consumers sharing a group, so it gets an
unknown share of the events: it records the latency of each paced event (row
``b == "paced"``, ``a >= warmup``) and the first and last receipt of the
burst's, and reports them when it gets SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import _worker
from benchmarks._worker import CONSUMERS, Tally, _receiver, bench_table, say


def _engine(spec: dict[str, Any]) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(spec["url"], pool_size=1, max_overflow=1)


def _watch(notifier: Any, table: Any) -> Any:
    return notifier.watch(
        table, "insert", extra_columns=["a", "b"], durable=True, channel_label="durable"
    )


def relay(spec: dict[str, Any]) -> None:
    """Relay the durable watch into Redis until SIGTERM."""
    from sqlnotify import Notifier
    from sqlnotify.relay import Relay

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine = _engine(spec)
    table = bench_table(spec["table"], spec["schema"])
    runner = Relay(
        _watch(Notifier(engine, use_logger=False), table),
        spec["redis_url"],
        name=spec["prefix"],
        stream_prefix=spec["prefix"],
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not runner.active and time.monotonic() < deadline and not stop.is_set():
        stop.wait(0.01)
    if not runner.active:
        raise RuntimeError(f"the relay did not become active: {runner.health()}")
    engine.dispose()  # only the relay's own connections stay open
    say(ready={})
    while not stop.wait(0.2):
        pass
    runner.stop()
    say(result=runner.health())


def phases_receiver(spec: dict[str, Any], tally: Tally) -> Callable[[Any], None]:
    """Latencies of the paced events, then the first and last receipt of the burst."""
    paced = tally.total
    total = paced + int(spec.get("rate_count", 0))
    warmup = tally.warmup
    wall = time.time
    clock = time.monotonic
    latencies = tally.latencies
    count = 0

    def receive(event: Any) -> None:
        nonlocal count
        count += 1
        if count <= paced:
            if count > warmup:
                latencies.append(wall() - event.epoch)
        elif count == paced + 1:
            tally.t_first = clock()
        if count == total:
            tally.n = count
            tally.t_last = clock()
            tally.done.set()

    return receive


def shared_receiver(spec: dict[str, Any], tally: Tally) -> Callable[[Any], None]:
    """Latencies of the paced events this consumer got, and its burst's first and last."""
    warmup = tally.warmup
    wall = time.time
    clock = time.monotonic
    latencies = tally.latencies

    def receive(event: Any) -> None:
        row = event.row
        if row["b"] == "paced":
            if row["a"] >= warmup:
                latencies.append(wall() - event.epoch)
            return
        now = clock()
        if not tally.n:
            tally.t_first = now
        tally.n += 1
        tally.t_last = now

    return receive


def consumer(spec: dict[str, Any], tally: Tally, measure: str) -> Callable[[], None]:
    """A notifier of the durable watch: ``source: "redis"`` reads the relay's streams."""
    from sqlnotify import Notifier

    engine = _engine(spec)
    table = bench_table(spec["table"], spec["schema"])
    if spec.get("source") == "redis":
        notifier = Notifier.from_redis(
            engine,
            spec["redis_url"],
            group=spec["group"],
            consumer=spec.get("consumer", "c"),
            stream_prefix=spec["prefix"],
            use_logger=False,
        )
    else:
        notifier = Notifier(engine, use_logger=False)
    _watch(notifier, table)
    if measure == "shared":
        signal.signal(signal.SIGTERM, lambda *_: tally.done.set())
        receive = shared_receiver(spec, tally)
    elif measure == "phases":
        receive = phases_receiver(spec, tally)
    else:
        receive = _receiver(tally, measure)
    notifier.subscribe(table, "insert", channel_label="durable")(receive)
    notifier.start()
    engine.dispose()  # what stays open is the notifier's own
    _CPU_AT_START[0] = time.process_time()

    def run() -> None:
        tally.done.wait(spec.get("timeout", 300.0))
        notifier.stop()
        engine.dispose()

    return run


def result(tally: Tally, measure: str) -> dict[str, Any]:
    """What a consumer reports (``phases``, ``shared``: latencies and the burst's receipts)."""
    if measure not in ("phases", "shared"):
        return tally.result(measure)
    return {
        "cpu": time.process_time() - _CPU_AT_START[0],
        "count": tally.n,
        "t_first": tally.t_first,
        "t_last": tally.t_last,
        "latencies": tally.latencies,
    }


# The process's CPU seconds once its notifier started (what the events cost comes after).
_CPU_AT_START = [0.0]

CONSUMERS["durable_source"] = consumer


def _consume(spec: dict[str, Any]) -> None:
    _worker.consumer(spec, report=result)


ROLES = {"consumer": _consume, "producer": _worker.producer, "relay": relay}

if __name__ == "__main__":
    _worker.main(ROLES)
