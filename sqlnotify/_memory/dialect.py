"""The dialect of a memory database: the closed contract of ``dialects.base``, no server."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .._ownership import Policy
from .._watch import Watch
from ..dialects.base import Capabilities, Dialect, InstallState, Settings, Source
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyListenerError
from .database import WAKE_PAYLOAD, MemoryDatabase, MemoryJournal
from .triggers import fingerprint

__all__ = ["MemoryDialect"]


class MemoryDialect(Dialect):
    """A dialect whose database lives in this process, for tests without a server.

    Pass it as ``Notifier(engine, dialect=MemoryDialect)``.  Every notifier
    on one engine shares one :class:`MemoryDatabase`
    (``MemoryDatabase.of(engine)``), unless the ``memory_database`` option
    names another.  The engine only reflects tables given by name that the
    database does not know (see :meth:`MemoryDatabase.define`).

    Write rows through the database: its watches fire as PostgreSQL's
    triggers do, with the same payloads.  Durable watches, named consumers,
    retention and gaps behave as on PostgreSQL, and
    :meth:`MemoryDatabase.disconnect` breaks the listeners' connections.
    Receivers run on the notifier's dispatcher thread, as with every
    dialect; ``async def`` callbacks on the loop given to ``astart``.
    """

    capabilities = Capabilities(
        name="memory",
        options=frozenset({"memory_database"}),
        binary_encoding="hex",
        wake_payload=WAKE_PAYLOAD,
        durable=True,
    )

    def __init__(self, engine: sa.Engine, log: Any, settings: Settings) -> None:
        super().__init__(engine, log, settings)
        database = settings.options.get("memory_database")
        if database is None:
            database = MemoryDatabase.of(engine)
        elif not isinstance(database, MemoryDatabase):
            raise SQLNotifyConfigurationError(
                f"memory_database must be a MemoryDatabase, not {type(database).__name__}"
            )
        #: The database this dialect reads and writes.
        self.database: MemoryDatabase = database

    def reflect(self, name: str) -> sa.Table:
        try:
            return self.database.table(name)
        except SQLNotifyConfigurationError:
            pass
        return self.database.define(super().reflect(name))

    # -- triggers ---------------------------------------------------------------
    def fingerprint(self, watch: Watch) -> str:
        return fingerprint(watch)

    def ddl(self, watch: Watch) -> list[str]:
        return [f"-- memory trigger {watch.channel}: {watch.describe()}"]

    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy | None = None
    ) -> list[InstallState]:
        policy = policy or Policy()
        states = []
        for watch in watches:
            if watch.operation.value == "truncate":
                raise SQLNotifyConfigurationError(
                    f"cannot watch {watch.describe()}: the memory database has no TRUNCATE"
                )
            if watch.condition is not None:
                watch.condition.evaluate({})  # refuses an operator it cannot evaluate, now
            target = watch.request.target
            self.database.define(self.reflect(target) if isinstance(target, str) else target)
            state, installed = self.database.triggers.install(watch, revoke=revoke, policy=policy)
            states.append(InstallState(watch, state, installed))
        return states

    def uninstall(self, watches: Sequence[Watch], *, policy: Policy | None = None) -> int:
        channels = [w.channel for w in watches]
        keep = self.database.journal_channels()
        return self.database.triggers.remove(
            channels, policy or Policy(), stop_using=True, keep=keep
        )

    def cleanup(
        self, watches: Sequence[Watch], *, policy: Policy | None = None, keep_own: bool = False
    ) -> int:
        found = self.database.triggers.on_tables({(w.effective_schema, w.table) for w in watches})
        if keep_own:
            own = {w.channel for w in watches}
            found = [c for c in found if c not in own]
        keep = self.database.journal_channels()
        return self.database.triggers.remove(
            found, policy or Policy(), stop_using=not keep_own, keep=keep
        )

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        self.database.triggers.touch(watches, policy)

    def status(self) -> list[dict[str, Any]]:
        return self.database.triggers.status()

    # -- events -------------------------------------------------------------------
    def send(self, channel: str, payload: str) -> None:
        self.database.send(channel, payload)

    def open_source(
        self, channels: Sequence[str], *, stop: threading.Event, position: Any = None
    ) -> Source:
        if stop.is_set():
            raise SQLNotifyListenerError("the listener stopped before it connected")
        return self.database.open_source(channels)

    # -- optional stores --------------------------------------------------------
    def journal(self) -> MemoryJournal:
        return MemoryJournal(self.database)
