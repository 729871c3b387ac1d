"""The shape of a benchmark case, its measurements and targets."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Row:
    """One measurement a case reports on each run.

    ``baseline`` names another row's key: the ratio ``value / baseline`` is
    computed run by run (both measured in the same run) and its median shown.
    ``target`` is ``">=0.7x"`` / ``"<=2x"`` (ratio to the baseline),
    ``"<=+0.3"`` (difference to the baseline, in the row's unit), or
    ``"<=10"`` / ``"==0"`` (the value itself).
    """

    key: str
    label: str
    unit: str
    baseline: str | None = None
    target: str | None = None
    #: How the table compares the row with its baseline: ``"ratio"`` or ``"delta"``.
    compare: str = "ratio"


_TARGET = re.compile(r"^(>=|<=|==)(\+)?(-?[0-9.]+)(x)?$")


def check_target(target: str, value: float, base: float | None) -> bool | None:
    """Whether ``value`` meets ``target``; ``None`` when it cannot be judged."""
    m = _TARGET.match(target)
    if not m:
        raise ValueError(f"bad target {target!r}")
    op, plus, number, ratio = m.groups()
    limit = float(number)
    if ratio or plus:
        if base is None or (ratio and base == 0):
            return None
        subject = value / base if ratio else value - base
    else:
        subject = value
    if op == ">=":
        return subject >= limit
    if op == "<=":
        return subject <= limit
    return subject == limit


@dataclasses.dataclass
class Context:
    """What a case gets on each run."""

    smoke: bool
    pg_url: str | None
    run_index: int
    scratch: dict[str, Any]
    log: Callable[[str], None]

    def count(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full


@dataclasses.dataclass
class Case:
    """A named benchmark: ``run(ctx)`` returns one value per row key."""

    name: str
    title: str
    what: str
    needs: tuple[str, ...]
    rows: list[Row]
    run: Callable[[Context], dict[str, float]]
    setup: Callable[[Context], Any] | None = None
    teardown: Callable[[Context], None] | None = None
    max_repeat: int | None = None
    available: Callable[[], str | None] | None = None
