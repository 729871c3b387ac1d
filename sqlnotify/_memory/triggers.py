"""The installed watches of a memory database and who uses them (its "triggers")."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from .._names import digest
from .._ownership import Policy
from .._watch import Watch

__all__ = ["FORMAT_VERSION", "LIVE_WINDOW", "Triggers", "fingerprint"]

#: Bumped when the payloads a memory database builds change (part of every fingerprint).
FORMAT_VERSION = 1
#: A user of a trigger counts as live while seen within this many seconds.
LIVE_WINDOW = 120.0


def fingerprint(watch: Watch) -> str:
    """A hash of what the payloads of ``watch`` depend on."""
    types = {name: repr(t) for name, t in watch.column_types.items()}
    spec = json.dumps([FORMAT_VERSION, watch.spec, types], sort_keys=True, default=str)
    return digest(spec, 16)


@dataclasses.dataclass
class _User:
    app: str
    live: bool
    last_seen: float


@dataclasses.dataclass
class _Trigger:
    watch: Watch
    fingerprint: str
    users: dict[str, _User] = dataclasses.field(default_factory=dict)

    def used_by_others(self, user: str, grace: float, now: float) -> bool:
        for name, other in self.users.items():
            seen = now - other.last_seen
            if name != user and ((other.live and seen < LIVE_WINDOW) or seen < grace):
                return True
        return False


class Triggers:
    """Installed watches by channel, in installation order, with their users (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_channel: dict[str, _Trigger] = {}

    def watches(self) -> list[Watch]:
        """The installed watches, in the order they were installed."""
        with self._lock:
            return [t.watch for t in self._by_channel.values()]

    def __iter__(self) -> Iterator[Watch]:
        return iter(self.watches())

    def install(self, watch: Watch, *, revoke: bool, policy: Policy) -> tuple[str, str]:
        """Install ``watch`` for ``policy.user``; return its state and installed fingerprint."""
        fp = fingerprint(watch)
        with self._lock:
            found = self._by_channel.get(watch.channel)
            if found is None:
                state, found = "installed", _Trigger(watch, fp)
                self._by_channel[watch.channel] = found
            elif found.fingerprint == fp:
                state = "unchanged"
            elif revoke:
                state, found = "replaced", _Trigger(watch, fp, found.users)
                self._by_channel[watch.channel] = found
            else:
                state = "outdated"
            found.users[policy.user] = _User(policy.app, policy.live, time.time())
            return state, found.fingerprint

    def on_tables(self, tables: Collection[tuple[str | None, str]]) -> list[str]:
        """The channels of every trigger on ``tables`` (``(schema, table)`` pairs)."""
        with self._lock:
            return [
                channel
                for channel, t in self._by_channel.items()
                if (t.watch.effective_schema, t.watch.table) in tables
            ]

    def remove(
        self, channels: Sequence[str], policy: Policy, *, stop_using: bool, keep: Collection[str]
    ) -> int:
        """Remove the triggers of ``channels`` nobody else uses; return how many.

        ``stop_using``: ``policy.user`` stops using them first.  ``keep``:
        channels whose journal rows are still kept (never removed).
        """
        now = time.time()
        removed = 0
        with self._lock:
            for channel in channels:
                trigger = self._by_channel.get(channel)
                if trigger is None:
                    continue
                if stop_using:
                    trigger.users.pop(policy.user, None)
                if trigger.used_by_others(policy.user, policy.grace, now) or channel in keep:
                    continue
                del self._by_channel[channel]
                removed += 1
        return removed

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        """Record that ``policy.user`` still uses (or stopped using) the watches' triggers."""
        now = time.time()
        with self._lock:
            for watch in watches:
                trigger = self._by_channel.get(watch.channel)
                if trigger is not None:
                    trigger.users[policy.user] = _User(policy.app, policy.live, now)

    def status(self) -> list[dict[str, Any]]:
        """Every trigger as ``Dialect.status`` lists it."""
        now = time.time()
        with self._lock:
            triggers = sorted(self._by_channel.items())
            return [
                {
                    "schema": t.watch.effective_schema,
                    "table": t.watch.table,
                    "operation": t.watch.operation.value,
                    "channel": channel,
                    "function": None,
                    "fingerprint": t.fingerprint,
                    "triggers": [channel],
                    "state": "installed",
                    "spec": {
                        "keys": list(t.watch.primary_keys),
                        "columns": list(t.watch.extra_columns),
                        "trigger_columns": list(t.watch.trigger_columns),
                        "label": t.watch.channel_label,
                    },
                    "users": [
                        {
                            "user": name,
                            "app": u.app,
                            "live": u.live and now - u.last_seen < LIVE_WINDOW,
                            "last_seen": dt.datetime.fromtimestamp(u.last_seen, dt.timezone.utc),
                        }
                        for name, u in t.users.items()
                    ],
                }
                for channel, t in triggers
            ]
