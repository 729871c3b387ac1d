"""Rows too large for one notification: sending through the overflow table, and completing.

:func:`send_custom` sends a custom payload, through the overflow table when
:class:`LargeRows` completes what arrives: it
runs on the dispatcher thread, for the batches that hold an overflow
reference (``"ovf"``) or a row sent by its keys (``"trunc"``): the stored
payloads of a batch are fetched with one query per schema, the rows of a
watch re-read with one query, both through the dialect (a pooled connection
in autocommit, never the listening one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .._payload import OVF, ROW, TRUNC
from .._watch import Watch
from ..dialects.base import Dialect, OverflowStore
from ..events import Operation
from ..exceptions import SQLNotifyPayloadSizeError
from .delivery import Pending
from .stats import Stats

__all__ = ["LargeRows", "send_custom"]


def send_custom(dialect: Dialect, watch: Watch, body: str) -> bool:
    """Send a custom payload on ``watch``'s channel; ``True`` when it went by the overflow table.

    :raises SQLNotifyPayloadSizeError: when it is over the database's limit
        and the database keeps no overflow table.
    """
    limit = dialect.capabilities.max_payload
    size = len(body.encode("utf-8"))
    if limit is None or size <= limit:
        dialect.send(watch.channel, body)
        return False
    store = dialect.overflow
    if store is None:
        raise SQLNotifyPayloadSizeError(
            f"payload for channel {watch.channel!r} is over the {dialect.name} limit"
            " and the database keeps no overflow table",
            size=size,
            limit=limit,
        )
    store.send(watch.effective_schema, watch.channel, body)
    return True


class LargeRows:
    """Resolves overflow references and keys-only rows of a batch, in bulk."""

    def __init__(
        self,
        dialect: Dialect,
        stats: Stats,
        log: logging.Logger,
        drop: Callable[[str, str, str | None], None],
    ) -> None:
        self._dialect = dialect
        self._stats = stats
        self._log = log
        self._drop = drop

    def resolve(self, items: list[Pending]) -> list[Pending]:
        """Return ``items`` in order, references replaced by their payloads.

        A reference whose payload cannot be fetched is dropped (logged,
        counted, signalled); keys-only rows get their columns re-read and a
        status of ``"hydrated"`` or ``"row_gone"``.
        """
        wanted: dict[str | None, list[int]] = {}
        rereads: dict[str, list[Pending]] = {}
        for item in items:
            data = item.data
            if OVF in data:
                if type(data[OVF]) is int:
                    wanted.setdefault(item.route.watch.effective_schema, []).append(data[OVF])
            elif data.get(TRUNC):
                if item.route.op is Operation.DELETE:
                    item.status = "row_gone"  # the old row cannot be read back
                else:
                    rereads.setdefault(item.route.channel, []).append(item)
        stored, failed = self._fetch(wanted)
        out: list[Pending] = []
        for item in items:
            if OVF not in item.data or self._replace(item, stored, failed):
                out.append(item)
        for group in rereads.values():
            self._reread(group)
        return out

    def _store(self) -> OverflowStore:
        store = self._dialect.overflow
        if store is None:  # a reference nobody of ours sent: the database has no such table
            raise LookupError(f"the {self._dialect.name} database keeps no overflow payloads")
        return store

    def _fetch(
        self, wanted: dict[str | None, list[int]]
    ) -> tuple[dict[tuple[str | None, int], tuple[str, str]], dict[str | None, str]]:
        stored: dict[tuple[str | None, int], tuple[str, str]] = {}
        failed: dict[str | None, str] = {}
        for schema, ids in wanted.items():
            try:
                for ovf_id, pair in self._store().fetch(schema, ids).items():
                    stored[(schema, ovf_id)] = pair
            except Exception as exc:
                failed[schema] = f"{type(exc).__name__}: {exc}"
        return stored, failed

    def _replace(
        self,
        item: Pending,
        stored: dict[tuple[str | None, int], tuple[str, str]],
        failed: dict[str | None, str],
    ) -> bool:
        """Put the stored payload in place of the reference; ``False`` if dropped."""
        route = item.route
        ref = item.data[OVF]
        schema = route.watch.effective_schema
        found = stored.get((schema, ref)) if type(ref) is int else None
        if found is None:
            if type(ref) is not int:
                why = "not a valid reference"
            else:
                why = failed.get(schema) or "no longer stored (older than the retention period?)"
            self._drop(route.channel, f"overflow payload {ref!r}: {why}", item.raw)
            return False
        channel, payload = found
        if channel != route.channel:
            self._drop(
                route.channel, f"overflow payload {ref!r} belongs to channel {channel!r}", item.raw
            )
            return False
        try:
            data = json.loads(payload)
        except ValueError as exc:
            self._drop(route.channel, f"undecodable overflow payload ({exc})", payload)
            return False
        item.data = data
        item.raw = payload
        self._stats.overflow_fetched += 1
        return True

    def _reread(self, group: list[Pending]) -> None:
        route = group[0].route
        keys = route.keys

        def key_of(row: Mapping[str, Any]) -> str:
            return json.dumps([row.get(k) for k in keys], sort_keys=True)

        unique = {key_of(i.data[ROW]): [i.data[ROW].get(k) for k in keys] for i in group}
        try:
            rows = self._store().reread(route.watch, list(unique.values()))
        except Exception as exc:
            self._log.warning(
                "could not re-read %d row(s) of %s; their events carry the keys only: %s",
                len(group),
                route.watch.describe(),
                exc,
            )
            return
        found = {key_of(json.loads(text)): text for text in rows}
        for item in group:
            hit = found.get(key_of(item.data[ROW]))
            if hit is None:
                item.status = "row_gone"
            else:
                item.data[ROW] = json.loads(hit)  # a fresh dict per event
                item.status = "hydrated"
                self._stats.hydrated += 1
