"""Backfill in the pipeline: pages into the dispatcher, then the journal with suppression.

:class:`Backfill` runs on the listener thread, inside the durable
:class:`~.durable.Feed`: while a table has pages left it reads them (the
journal store's ``backfill_page``) instead of the journal, and queues each
as a :class:`SnapshotBatch`, followed by a :class:`~sqlnotify._backfill.BackfillMark`
for the acknowledgements: the consumer's position stays at the backfill's
start, and the page's progress is saved with it once the page's receivers
ran.  Once every page was read, the journal is read from that start, and
the events a page already showed are skipped (:meth:`Backfill.filter`)
until the first read that reaches the journal's end; then the backfill is
done, and saved as such.

:func:`deliver_snapshot` runs on the dispatcher thread: it decodes a page's
rows exactly as the watch's trigger payloads are decoded (same converters),
as :attr:`~sqlnotify.events.Operation.SNAPSHOT` events, and calls the
watch's receivers.  After each page, one INFO log line and the request's
``progress(done, total_estimate)`` callback, also on the dispatcher thread.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._backfill import DONE, PAGES, STREAM, BackfillMark, BackfillRequest, BackfillState
from .._payload import ROW, TS, decode_json
from .._watch import Watch
from ..dialects.base import BackfillStore
from ..events import ChangeEvent, Operation
from .dispatcher import Batch, Dispatcher, JournalBatch

__all__ = ["Backfill", "Job", "SnapshotBatch", "deliver_snapshot"]


class SnapshotBatch(Batch):
    """Rows of one backfill page: each a payload text of ``channel``'s watch.

    ``position`` is what every event of the page carries as ``event.position``:
    the journal position the backfill started from.
    """

    __slots__ = ("channel", "position")

    def __init__(
        self, payloads: Sequence[str], received_at: float, channel: str, position: int
    ) -> None:
        super().__init__(payloads, received_at)
        self.channel = channel
        self.position = position


@dataclasses.dataclass
class Job:
    """One table's backfill in a run."""

    watch: Watch
    #: The durable channels of the table (whose events a page can show).
    channels: tuple[str, ...]
    request: BackfillRequest
    state: BackfillState
    relation: str
    #: Rows whose receivers ran (dispatcher thread); starts at the saved count.
    delivered: int = 0
    #: Journal events skipped because a page showed them (listener thread).
    suppressed: int = 0


class Backfill:
    """The backfills of one run (listener thread, but :meth:`report`: any thread)."""

    #: Seconds one sweep spends reading pages before the listener takes its turn.
    TIME_BUDGET = 0.5

    def __init__(
        self,
        jobs: Sequence[Job],
        store: BackfillStore,
        dispatcher: Dispatcher,
        log: logging.Logger,
        stamp: Callable[[Any], int],
    ) -> None:
        self.jobs = list(jobs)
        self._store = store
        self._dispatcher = dispatcher
        self._log = log
        self._stamp = stamp
        self._final = False
        for job in self.jobs:
            job.delivered = job.state.rows

    @property
    def paging(self) -> bool:
        """A table has pages left to read."""
        return any(j.state.phase == PAGES for j in self.jobs)

    @property
    def streaming(self) -> bool:
        """Journal events may still be ones a page showed."""
        return any(j.state.phase == STREAM for j in self.jobs)

    def mark(self, position: Any) -> Any:
        """The token to acknowledge for ``position``: with the backfills' states until
        their end was handed out once, then ``position`` alone."""
        if self._final:
            return position
        if all(j.state.phase == DONE for j in self.jobs):
            self._final = True
        return BackfillMark(position, tuple((j.relation, j.state) for j in self.jobs))

    def step(self, position: Any, ack: Callable[[Any], None]) -> None:
        """Read the next page and queue it, its acknowledgement and its progress report."""
        job = next(j for j in self.jobs if j.state.phase == PAGES)
        payloads, state, before = self._store.backfill_page(
            job.watch, job.channels, job.state, job.request
        )
        job.state = state
        if before:
            # A TRUNCATE committed before this page was read: what earlier
            # pages delivered is gone, this page's rows come after it.
            self._dispatcher.put(JournalBatch(before, time.time(), self._stamp))
        if payloads:
            stamp = self._stamp(state.start)
            self._dispatcher.put(SnapshotBatch(payloads, time.time(), job.watch.channel, stamp))
        ack(self.mark(position))
        count = len(payloads)
        self._dispatcher.put_control(lambda: self._delivered(job, count, state))

    def filter(self, rows: Sequence[Any]) -> Sequence[Any]:
        """Journal rows ``(position, channel, payload)`` with those a page showed
        emptied (their position still counts)."""
        jobs = [
            j for j in self.jobs if j.state.phase == STREAM and (j.state.suppress or j.state.cut)
        ]
        if not jobs:
            return rows
        out = list(rows)
        for n, (position, channel, payload) in enumerate(out):
            if payload is None:
                continue
            event_id = self._stamp(position)
            for job in jobs:
                if channel in job.channels and (
                    event_id in job.state.suppress or event_id < job.state.cut
                ):
                    out[n] = (position, channel, None)
                    job.suppressed += 1
                    break
        return out

    def streamed(self) -> None:
        """The journal was read to its end after every page: the backfills are done."""
        for job in self.jobs:
            if job.state.phase == STREAM:
                job.state = dataclasses.replace(job.state, phase=DONE, suppress=frozenset())
                self._dispatcher.put_control(lambda job=job: self._done(job))  # type: ignore[misc]

    def _done(self, job: Job) -> None:
        # Dispatcher thread: after the events of the journal's first read.
        self._log.info(
            "backfill of %s done: %d rows, then %d journal events it had shown skipped",
            job.relation,
            job.state.rows,
            job.suppressed,
        )

    def _delivered(self, job: Job, count: int, state: BackfillState) -> None:
        # Dispatcher thread: the page's sync receivers ran.
        job.delivered += count
        last = state.phase != PAGES
        total = job.delivered if last else state.total
        if total is not None and total < job.delivered:
            total = job.delivered
        self._log.info(
            "backfill of %s: page %d, %d of %s rows%s",
            job.relation,
            state.pages,
            job.delivered,
            "?" if total is None else f"~{total}" if not last else str(total),
            ", every page read" if last else "",
        )
        progress = job.request.progress
        if progress is not None:
            try:
                progress(job.delivered, total)
            except Exception:
                self._log.exception("the backfill progress callback of %s failed", job.relation)

    def report(self) -> list[dict[str, Any]]:
        """What ``health()["backfill"]`` lists: one dict per table."""
        return [
            {
                "table": j.relation,
                "phase": j.state.phase,
                "rows": j.delivered,
                "read": j.state.rows,
                "pages": j.state.pages,
                "total": j.state.total,
                "suppressed": j.suppressed,
            }
            for j in self.jobs
        ]


class Deliverer(Protocol):
    """What :func:`deliver_snapshot` uses of the dispatcher's ``Delivery``."""

    routes: Any
    halt: Any
    stats: Any

    def deliver(self, route: Any, event: ChangeEvent) -> None: ...

    def drop(self, channel: str, reason: str, payload: str | None = None) -> None: ...

    def undecodable(self, channel: str, exc: Exception, payload: str) -> None: ...


def deliver_snapshot(delivery: Deliverer, batch: SnapshotBatch) -> None:
    """Decode a page's rows into SNAPSHOT events and call the watch's receivers
    (dispatcher thread)."""
    route = delivery.routes.get(batch.channel)
    if route is None:
        delivery.drop(batch.channel, "no watch uses this channel")
        return
    halt = delivery.halt
    stats = delivery.stats
    deliver = delivery.deliver
    converters = route.converters
    op = Operation.SNAPSHOT
    schema, table, keys, channel, position = (
        route.schema,
        route.table,
        route.keys,
        route.channel,
        batch.position,
    )
    complete = ChangeEvent._complete
    for payload in batch:
        if halt is not None and halt.halted:
            return  # stop() returned: no receiver runs any more
        try:
            data = decode_json(payload)
            row = data[ROW]
            for name, fn in converters:
                value = row.get(name)
                if value is not None:
                    row[name] = fn(value)
            event = complete(schema, table, op, row, keys, data[TS], channel, position)
        except Exception as exc:
            delivery.undecodable(channel, exc, payload)
            continue
        stats.received += 1
        deliver(route, event)
