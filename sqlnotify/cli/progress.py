"""The progress bar ``sqlnotify listen --backfill`` draws on stderr."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import IO, Any

from .._backfill import Progress
from ..events import Operation
from ..notifier import Notifier

__all__ = ["backfill_with_bar", "progress_bar"]


def backfill_with_bar(
    notifier: Notifier, table: str, operations: Sequence[Operation], label: str | None
) -> None:
    """Backfill ``table`` through its INSERT watch (else its first), with a bar on stderr."""
    first = Operation.INSERT if Operation.INSERT in operations else operations[0]
    notifier.backfill(table, first, channel_label=label, progress=progress_bar(table, sys.stderr))


def progress_bar(table: str, stream: IO[str]) -> Progress:
    """A backfill ``progress(done, total)`` callback drawing a bar on ``stream``.

    tqdm's bar when tqdm is installed (it is no dependency), else a plain
    one redrawn in place with ``\\r``.  It runs on the dispatcher thread.
    """
    drawn: list[tuple[int, int | None]] = []

    def changed(done: int, total: int | None) -> bool:
        # The last page may repeat the figures of the one before (an empty page).
        if drawn and drawn[-1] == (done, total):
            return False
        drawn[:] = [(done, total)]
        return True

    try:
        tqdm: Any = importlib.import_module("tqdm")
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm.tqdm(desc=f"backfill {table}", unit=" rows", file=stream, leave=True)

        def update(done: int, total: int | None) -> None:
            if not changed(done, total):
                return
            bar.total = total
            bar.n = done
            bar.refresh()
            if total is not None and done >= total:
                bar.close()

        return update

    def draw(done: int, total: int | None) -> None:
        if not changed(done, total):
            return
        width = 30
        share = min(done / total, 1.0) if total else 0.0
        filled = "#" * int(share * width)
        end = "\n" if total is not None and done >= total else ""
        stream.write(
            f"\rbackfill {table}: [{filled:<{width}}] {share:4.0%} {done}/{total or '?'} rows{end}"
        )
        stream.flush()

    return draw
