"""Installing and removing PostgreSQL triggers with the weakest locks, within bounds.

- An unchanged trigger costs no DDL: its fingerprint is compared first.
- A changed function body is ``CREATE OR REPLACE FUNCTION`` (no table lock).
- A missing or changed trigger is ``CREATE OR REPLACE TRIGGER`` (PostgreSQL
  14+; ``SHARE ROW EXCLUSIVE``, which readers never block), or ``DROP`` +
  ``CREATE`` before 14.
- Removing a trigger (``DROP FUNCTION ... CASCADE``, ``ACCESS EXCLUSIVE`` on
  its table) happens only for triggers nobody uses, and never in ``start()``.

Every transaction runs through :class:`LockedRunner`: ``lock_timeout`` per
attempt, retried until ``install_timeout``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from ..._names import digest, qualified, quote_ident, quote_literal
from ..._ownership import Policy
from ..._watch import Watch
from ...exceptions import SQLNotifyListenerError
from ..base import InstallState
from .overflow import PgOverflow
from .ownership import (
    LockedRunner,
    Registry,
    brief_read,
    channel_lock,
    execute_plain,
    is_lock_timeout,
)
from .sql import (
    COMMENT_FUNCTION_SQL,
    DROP_FUNCTION_SQL,
    DROP_TRIGGER_SQL,
    IN_RECOVERY_SQL,
    JOURNAL_HAS_CHANNEL_SQL,
    JOURNAL_TABLE,
    MARKER,
    REGCLASS_SQL,
    REPLACE_TRIGGER,
    STATE_SQL,
    journal_ddl,
)

__all__ = [
    "Installed",
    "PgInstaller",
    "TriggerBuilder",
    "installed",
    "part_fingerprint",
    "state_of",
]

#: What :func:`installed` finds: by (schema, function name), the function's
#: recorded metadata (``meta``), its ``schema`` and ``name``, and the
#: ``(schema, table, trigger)`` of each trigger using it.
Installed = dict[tuple[str, str], dict[str, Any]]


class TriggerBuilder(Protocol):
    """What installing needs to know of the dialect: the SQL of one watch's trigger."""

    def check_names(self, watch: Watch) -> None: ...
    def fingerprint(self, watch: Watch) -> str: ...
    def function_sql(self, watch: Watch) -> str: ...
    def trigger_sql(self, watch: Watch) -> str: ...
    def function_ref(self, watch: Watch) -> str: ...
    def table_ref(self, watch: Watch) -> str: ...
    def comment(self, watch: Watch) -> str: ...
    def journal_schema_name(self) -> str | None: ...


def part_fingerprint(sql: str) -> str:
    """The hash of the function's or the trigger's statement alone, recorded apart."""
    return digest(sql, 16)


def drop_sql(schema: str, function: str) -> str:
    """The statement removing one trigger function and the trigger using it."""
    return DROP_FUNCTION_SQL.format(function=qualified(schema, function))


def installed(conn: sa.Connection) -> Installed:
    """sqlnotify's trigger functions in the database, and their triggers."""
    found: Installed = {}
    for fschema, fname, comment, tschema, tname, tgname in conn.exec_driver_sql(STATE_SQL):
        try:
            meta = json.loads(comment[len(MARKER) :])
        except ValueError:
            meta = {}
        entry = found.setdefault(
            (fschema, fname), {"meta": meta, "triggers": [], "schema": fschema, "name": fname}
        )
        if tgname is not None:
            entry["triggers"].append((tschema, tname, tgname))
    return found


def state_of(watch: Watch, found: Installed, fingerprint: str) -> InstallState:
    """How the installed trigger of ``watch`` compares with a fresh build (``fingerprint``)."""
    schema = watch.effective_schema or "public"
    entry = found.get((schema, watch.channel))
    if entry is None:
        return InstallState(watch, "missing")
    fp = entry["meta"].get("fp")
    attached = (schema, watch.table, watch.channel) in entry["triggers"]
    if not attached:
        return InstallState(watch, "missing", fp)
    if fp != fingerprint:
        return InstallState(watch, "outdated", fp)
    return InstallState(watch, "unchanged", fp)


class PgInstaller:
    """The installation, removal and registry work of one PostgreSQL dialect.

    :param triggers: builds each watch's SQL (the dialect).
    :param overflow: the overflow tables, created with the triggers that use them.
    :param runner: runs each transaction within the lock bounds.
    :param url: the server's address, for messages.
    """

    def __init__(
        self,
        triggers: TriggerBuilder,
        overflow: PgOverflow,
        runner: LockedRunner,
        url: sa.URL,
        log: logging.Logger,
    ) -> None:
        self.triggers = triggers
        self.overflow = overflow
        self.runner = runner
        self.url = url
        self.log = log

    # -- install ----------------------------------------------------------------
    def install(
        self, watches: Sequence[Watch], *, revoke: bool, policy: Policy
    ) -> list[InstallState]:
        d, ovf = self.triggers, self.overflow
        for watch in watches:
            d.check_names(watch)
        deadline = policy.deadline()
        schemas = {w.effective_schema for w in watches}
        overflow = {w.effective_schema for w in watches if w.use_overflow_table}

        def register(conn: sa.Connection) -> tuple[list[InstallState], list[str | None]]:
            if conn.exec_driver_sql(IN_RECOVERY_SQL).scalar_one():
                url = self.url
                raise SQLNotifyListenerError(
                    f"the server at {url.host}:{url.port or 5432} is in recovery (a read"
                    " replica or standby): triggers cannot be installed and notifications are"
                    " only sent on the primary; connect to the primary"
                )
            # Recorded before anything is compared: a concurrent cleanup that
            # runs after this commit sees this notifier as a user.
            self._touch(conn, watches, policy)
            found = installed(conn)
            states = [state_of(w, found, d.fingerprint(w)) for w in watches]
            absent = ovf.missing(conn, schemas)
            ovf.ready.update(schemas - set(absent))
            return states, [s for s in absent if s in overflow]

        states, missing_overflow = self.runner.run(
            register, policy, "record this notifier in the trigger registry", deadline
        )
        todo = [s for s in states if s.state == "missing" or (s.state == "outdated" and revoke)]
        if not todo and not missing_overflow:
            ovf.ready.update(overflow)
            return states

        def work(conn: sa.Connection) -> list[InstallState]:
            for schema in ovf.missing(conn, overflow):
                for stmt in ovf.ddl(schema):
                    execute_plain(conn, stmt)
            found = installed(conn)
            replace_trigger = conn.dialect.server_version_info >= (14,)  # type: ignore[operator]
            result = []
            for watch in watches:
                state = state_of(watch, found, d.fingerprint(watch))
                if state.state == "missing" or (state.state == "outdated" and revoke):
                    entry = found.get((watch.effective_schema or "public", watch.channel))
                    for stmt in self.statements(watch, entry, replace_trigger):
                        execute_plain(conn, stmt)
                    new = "replaced" if state.state == "outdated" else "installed"
                    result.append(InstallState(watch, new, state.installed_fingerprint))
                else:
                    result.append(state)
            return result

        described = ", ".join(s.watch.describe() for s in todo) or "the overflow table"
        result = self.runner.run(work, policy, f"install the trigger for {described}", deadline)
        ovf.ready.update(overflow)
        return result

    def statements(
        self, watch: Watch, entry: dict[str, Any] | None, replace_trigger: bool
    ) -> list[str]:
        """Only what differs from ``entry`` (the installed function's record, if any)."""
        d = self.triggers
        meta = entry["meta"] if entry is not None else {}
        schema = watch.effective_schema or "public"
        attached = entry is not None and (schema, watch.table, watch.channel) in entry["triggers"]
        function_sql, trigger_sql = d.function_sql(watch), d.trigger_sql(watch)
        out = []
        if watch.durable:
            out.append(journal_ddl(d.journal_schema_name()))
        if entry is None or meta.get("ffp") != part_fingerprint(function_sql):
            out.append(function_sql)
        out.append(
            COMMENT_FUNCTION_SQL.format(
                function=d.function_ref(watch), comment=quote_literal(d.comment(watch))
            )
        )
        if not attached or meta.get("tfp") != part_fingerprint(trigger_sql):
            if replace_trigger:
                out.append(trigger_sql.replace(*REPLACE_TRIGGER, 1))
            else:
                table = d.table_ref(watch)
                out.append(DROP_TRIGGER_SQL.format(trigger=quote_ident(watch.channel), table=table))
                out.append(trigger_sql)
        return out

    # -- the registry -------------------------------------------------------------
    def _touch(self, conn: sa.Connection, watches: Sequence[Watch], policy: Policy) -> None:
        registry = Registry(conn)
        by_schema: dict[str, list[str]] = {}
        for w in watches:
            by_schema.setdefault(w.effective_schema or "public", []).append(w.channel)
        for schema, channels in sorted(by_schema.items()):
            registry.ensure(schema)
            registry.touch(schema, channels, policy)

    def touch(self, watches: Sequence[Watch], policy: Policy) -> None:
        if watches:
            self.runner.run(
                lambda conn: self._touch(conn, watches, policy),
                policy,
                "refresh this notifier's rows in the trigger registry",
            )

    # -- removal ------------------------------------------------------------------
    def remove(
        self,
        policy: Policy,
        *,
        channels: set[str] = frozenset(),  # type: ignore[assignment]
        tables: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
        keep: set[str] = frozenset(),  # type: ignore[assignment]
        forget: set[str] = frozenset(),  # type: ignore[assignment]
        forget_schemas: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> int:
        """Drop the sqlnotify triggers named in ``channels`` or on ``tables`` that nobody uses.

        ``forget``: channels ``policy.user`` stops using first.
        """

        def work(conn: sa.Connection) -> int:
            registry = Registry(conn)
            for schema in sorted(forget_schemas):
                registry.forget(schema, forget, policy.user)
            live = registry.locked_channels()
            dropped = 0
            for (fschema, fname), entry in sorted(installed(conn).items()):
                meta = entry["meta"]
                channel = meta.get("channel", fname)
                on = {(s, t) for s, t, _ in entry["triggers"]}
                on.add((meta.get("schema"), meta.get("table")))
                if channel in keep or not (channel in channels or on & tables):
                    continue
                if channel_lock(channel)[1] in live or registry.in_use(fschema, channel, policy):
                    continue
                if self._journal_retained(conn, meta, channel):
                    continue
                execute_plain(conn, drop_sql(fschema, fname))
                registry.drop(fschema, channel)
                dropped += 1
            return dropped

        return self.runner.run(work, policy, "remove unused sqlnotify triggers")

    @staticmethod
    def _journal_retained(conn: sa.Connection, meta: dict[str, Any], channel: str) -> bool:
        """Whether a durable watch's consumers still have journal rows of ``channel``."""
        if not meta.get("durable"):
            return False
        journal = qualified(meta.get("journal"), JOURNAL_TABLE)
        if conn.execute(sa.text(REGCLASS_SQL), {"n": journal}).scalar() is None:
            return False
        sql = JOURNAL_HAS_CHANNEL_SQL.format(journal=journal.replace("%", "%%"))
        return bool(conn.exec_driver_sql(sql, (channel,)).scalar())

    # -- status ---------------------------------------------------------------------
    def users(
        self, conn: sa.Connection, schemas: set[str]
    ) -> tuple[dict[str, list[dict[str, Any]]], set[int]]:
        """Registry rows by channel, and the keys of the channel locks held now.

        Each schema's registry is read in a transaction of its own (see
        :func:`brief_read`); one that stays locked past the bound is left out,
        with a warning.
        """
        registry = Registry(conn)
        out: dict[str, list[dict[str, Any]]] = {}
        for schema in sorted(schemas):
            try:
                with brief_read(conn):
                    found = registry.users(schema)
            except sa.exc.OperationalError as exc:
                if not is_lock_timeout(exc):
                    raise
                self.log.warning("status: the registry of schema %r is locked; left out", schema)
                continue
            for channel, users in found.items():
                out.setdefault(channel, []).extend(users)
        with brief_read(conn):
            return out, registry.locked_channels()
