"""A notifier whose events come from Redis Streams written by a relay, not from the database."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import redis
import sqlalchemy as sa

from ..._journal import JournalReader
from ..._ownership import Policy
from ..._watch import Watch
from ...exceptions import SQLNotifyConfigurationError, SQLNotifyListenerError
from ..base import Capabilities, Dialect, InstallState, Settings, Source
from .commands import DEFAULT_PREFIX, lease_key, stream_key
from .source import Lease, Ledger, RedisAcks, RedisSource, ensure_groups

__all__ = ["RedisStreams"]


class RedisStreams(Dialect):
    """Read the events a :class:`~sqlnotify.relay.Relay` appends to Redis Streams.

    Pass it as ``Notifier(engine, dialect=RedisStreams, redis_url=...,
    group=..., consumer=...)`` (or use :meth:`Notifier.from_redis`).  The
    engine is the database the relay reads: it is used only to reflect the
    watched tables, so events carry the same typed values as a direct
    listener's; this notifier holds no database connection while it runs and
    installs no trigger (the relay does).

    Options: ``redis_url`` (required), ``group`` (the consumer group; every
    group gets every event, each consumer of a group a share of them),
    ``stream_prefix`` (default ``"sqlnotify:"``, as the relay's),
    ``claim_idle`` (seconds after which an entry another consumer took and
    did not acknowledge is claimed by this one; default 30), ``lease_ttl``
    (seconds a dead process keeps its consumer name; default 10).
    ``consumer`` (the notifier's argument) names this process in the group
    and is required: one process at a time holds a name (a Redis lease
    refreshed by the listener thread); a second start with it raises.

    An entry is acknowledged (``XACK``) once every receiver of its event,
    ``async def`` callbacks included, finished.  Receivers run on the
    notifier's dispatcher thread; the blocking reads on its listener thread.
    """

    capabilities = Capabilities(
        name="redis",
        options=frozenset({"redis_url", "group", "stream_prefix", "claim_idle", "lease_ttl"}),
        replays_log=True,
        durable=True,
    )

    def __init__(self, engine: sa.Engine, log: logging.Logger, settings: Settings) -> None:
        super().__init__(engine, log, settings)
        opts = settings.options
        url = opts.get("redis_url")
        group = opts.get("group")
        if not isinstance(url, str) or not url:
            raise SQLNotifyConfigurationError("RedisStreams needs redis_url='redis://...'")
        if not isinstance(group, str) or not group:
            raise SQLNotifyConfigurationError("RedisStreams needs group='...' (the consumer group)")
        if settings.consumer is None:
            raise SQLNotifyConfigurationError(
                "RedisStreams needs consumer='...': this process's name in the consumer group"
            )
        self.group = group
        self.consumer: str = settings.consumer
        self.prefix = str(opts.get("stream_prefix", DEFAULT_PREFIX))
        self.claim_idle = float(opts.get("claim_idle", 30.0))
        #: The Redis client (thread-safe; a pool of connections).
        self.client: redis.Redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=5.0
        )
        self.ledger = Ledger()
        #: This process's hold on its consumer name in the group.
        self.lease = Lease(
            self.client,
            lease_key(self.prefix, group, self.consumer),
            self.consumer,
            float(opts.get("lease_ttl", 10.0)),
        )
        #: The last entry number the group is known to have got, by stream
        #: (kept across reconnects and restarts of the notifier).
        self.seen: dict[str, int] = {}
        self._joined = False

    @property
    def name(self) -> str:
        # Values are decoded as the database the relay reads encodes them.
        return self.engine.dialect.name

    def default_schema(self) -> str | None:
        # Channels name the schema as the relay's notifier resolves it.
        name: str | None = sa.inspect(self.engine).default_schema_name
        return name if self.engine.dialect.name != "sqlite" else None

    # -- triggers: the relay's side ---------------------------------------------
    def fingerprint(self, watch: Watch) -> str:
        return ""

    def ddl(self, watch: Watch) -> list[str]:
        return [f"-- read from Redis stream {stream_key(self.prefix, watch.channel)}"]

    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy | None = None
    ) -> list[InstallState]:
        return [InstallState(w, "unchanged") for w in watches]

    def uninstall(self, watches: Sequence[Watch], *, policy: Policy | None = None) -> int:
        return 0

    def cleanup(
        self, watches: Sequence[Watch], *, policy: Policy | None = None, keep_own: bool = False
    ) -> int:
        return 0

    def status(self) -> list[dict[str, Any]]:
        return []

    def check_reachable(self, timeout: float) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise SQLNotifyListenerError(f"Redis does not answer: {exc}") from exc

    # -- events -------------------------------------------------------------------
    def send(self, channel: str, payload: str) -> None:
        raise SQLNotifyConfigurationError(
            "a notifier reading Redis Streams sends nothing: notify through the database"
        )

    def open_source(
        self, channels: Sequence[str], *, stop: threading.Event, position: Any = None
    ) -> Source:
        if stop.is_set():
            raise SQLNotifyListenerError("the listener stopped before it connected")
        keys = [stream_key(self.prefix, c) for c in channels]
        try:
            # A new group starts at the streams' end (as a new consumer starts
            # at the journal's end); one that vanished since is made anew at
            # the start of what the streams hold now.
            ensure_groups(self.client, keys, self.group, "0" if self._joined else "$")
            self._joined = True
        except redis.RedisError as exc:
            raise SQLNotifyListenerError(f"could not join the Redis consumer group: {exc}") from exc
        return RedisSource(
            self.client,
            keys,
            channels,
            group=self.group,
            consumer=self.consumer,
            ledger=self.ledger,
            claim_idle=self.claim_idle,
            log=self.log,
            reader=JournalReader(self.ledger.last),
            seen=self.seen,
            lease=self.lease,
        )

    def inspect(self, timeout: float) -> dict[str, Any]:
        return {}

    # -- optional stores --------------------------------------------------------
    def journal(self) -> RedisAcks:
        return RedisAcks(self.client, self.group, self.ledger, self.lease)

    def close(self) -> None:
        self.client.close()
