"""Trigger management on PostgreSQL: install, fingerprints, cleanup, concurrent installs."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import mapped_column
from support.pg import (
    TIMEOUT,
    execute,
    make_notifier,
    model,
    sqlnotify_functions,
    triggers,
)
from support.watching import Watch

from sqlnotify import Notifier
from sqlnotify.testing import EventRecorder, wait_until


@pytest.fixture
def Base(pg_engine: sa.Engine, schema: str) -> Any:
    Order = model(
        pg_engine,
        schema,
        "Order",
        "orders",
        status=mapped_column(sa.String, server_default="new", nullable=False),
        total=mapped_column(sa.Integer, server_default="0", nullable=False),
    )
    Base = Order.__bases__[0]
    Base.Order = Order
    return Base


def function_xmins(engine: sa.Engine, schema: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT p.proname, p.xmin::text FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = :s AND p.proname LIKE 'sqlnotify%'"
            ),
            {"s": schema},
        )
        return dict(rows.all())


def test_second_start_with_nothing_changed_does_no_ddl(
    Base: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    Order = Base.Order

    def configure(n: Notifier) -> Notifier:
        n.watch(Order, "insert", extra_columns=["status"])
        n.watch(Order, "update", trigger_columns=["status"])
        return n

    first = configure(make_notifier(notifiers, pg_engine))
    first.start()
    assert [s.state for s in first.install_states] == ["installed", "installed"]
    before = function_xmins(pg_engine, schema)
    assert len(before) == 2
    first.stop()
    assert len(triggers(pg_engine, schema, "orders")) == 2  # stop() leaves them
    second = configure(make_notifier(notifiers, pg_engine))
    second.start()
    assert [s.state for s in second.install_states] == ["unchanged", "unchanged"]
    assert function_xmins(pg_engine, schema) == before
    # Restarting the same notifier is as cheap.
    second.stop()
    second.start()
    assert [s.state for s in second.install_states] == ["unchanged", "unchanged"]
    assert function_xmins(pg_engine, schema) == before
    rec = EventRecorder()
    second.stop()
    second.subscribe(Order, "insert")(rec)
    second.start()
    execute(pg_engine, f'INSERT INTO "{schema}".orders (id) VALUES (1)')
    assert rec.wait_for(1, TIMEOUT)[0].extra_columns == {"status": "new"}


def _retyped_orders(engine: sa.Engine, schema: str) -> sa.Table:
    """The model changed: ``total`` became a numeric column (the same watch spec)."""
    execute(engine, f'ALTER TABLE "{schema}".orders ALTER COLUMN total TYPE numeric(10, 2)')
    return sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.String),
        sa.Column("total", sa.Numeric(10, 2)),
        schema=schema,
    )


def test_changed_spec_is_a_trigger_of_its_own(
    Base: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, watched: Watch
) -> None:
    Order = Base.Order
    old = make_notifier(notifiers, pg_engine)
    old.watch(Order, "insert", extra_columns=["status"])
    old.install()
    new, rec = watched(
        pg_engine,
        Order,
        options=dict(revoke_on_model_change=True),
        extra_columns=["status", "total"],
    )
    (state,) = new.install_states
    assert state.state == "installed"
    assert state.watch.channel != old.install_states[0].watch.channel
    execute(pg_engine, f'INSERT INTO "{schema}".orders (id, total) VALUES (1, 5)')
    assert dict(rec.wait_for(1, TIMEOUT)[0].extra_columns) == {"status": "new", "total": 5}
    assert len(triggers(pg_engine, schema, "orders")) == 2  # the old spec's stays


def installed_with_total(notifiers: list[Notifier], engine: sa.Engine, model: Any) -> Notifier:
    """A notifier that installed its INSERT trigger on ``model`` with ``total``, not started."""
    old = make_notifier(notifiers, engine)
    old.watch(model, "insert", extra_columns=["total"])
    old.install()
    return old


def test_changed_model_is_replaced_with_revoke(
    Base: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, watched: Watch
) -> None:
    old = installed_with_total(notifiers, pg_engine, Base.Order)
    before = old.install_states[0].watch
    table = _retyped_orders(pg_engine, schema)
    new, rec = watched(
        pg_engine, table, options=dict(revoke_on_model_change=True), extra_columns=["total"]
    )
    (state,) = new.install_states
    assert state.state == "replaced"
    assert state.watch.channel == before.channel  # same spec, same names, new definition
    execute(pg_engine, f'INSERT INTO "{schema}".orders (id, total) VALUES (1, 5.25)')
    assert str(rec.wait_for(1, TIMEOUT)[0].extra_columns["total"]) == "5.25"
    assert len(triggers(pg_engine, schema, "orders")) == 1


def test_changed_model_is_left_outdated_without_revoke(
    Base: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, caplog: Any
) -> None:
    installed_with_total(notifiers, pg_engine, Base.Order)
    before = function_xmins(pg_engine, schema)
    table = _retyped_orders(pg_engine, schema)
    keep = make_notifier(notifiers, pg_engine, revoke_on_model_change=False)
    keep.watch(table, "insert", extra_columns=["total"])
    with caplog.at_level("WARNING", logger="sqlnotify"):
        keep.start()
    (state,) = keep.install_states
    assert state.state == "outdated"
    assert state.installed_fingerprint is not None
    assert any("left in place" in r.getMessage() for r in caplog.records)
    assert function_xmins(pg_engine, schema) == before


def _user_objects(engine: sa.Engine, schema: str) -> None:
    execute(
        engine,
        f'CREATE FUNCTION "{schema}".my_audit() RETURNS trigger LANGUAGE plpgsql'
        " AS $$ BEGIN RETURN NEW; END $$",
    )
    execute(
        engine,
        f'CREATE TRIGGER my_audit AFTER INSERT ON "{schema}".orders'
        f' FOR EACH ROW EXECUTE FUNCTION "{schema}".my_audit()',
    )
    # Named like sqlnotify's objects, but not created by it (no marker comment).
    execute(
        engine,
        f'CREATE FUNCTION "{schema}".sqlnotify_lookalike() RETURNS trigger LANGUAGE plpgsql'
        " AS $$ BEGIN RETURN NEW; END $$",
    )
    execute(
        engine,
        f'CREATE TRIGGER sqlnotify_lookalike AFTER UPDATE ON "{schema}".orders'
        f' FOR EACH ROW EXECUTE FUNCTION "{schema}".sqlnotify_lookalike()',
    )


@pytest.fixture
def user_orders(Base: Any, pg_engine: sa.Engine, schema: str) -> Any:
    """The ``Order`` model, its table also holding a trigger and a function of the user's."""
    _user_objects(pg_engine, schema)
    return Base.Order


def test_cleanup_on_start_removes_only_sqlnotify_objects(
    user_orders: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    Order = user_orders
    old = make_notifier(notifiers, pg_engine)
    old.watch(Order, "delete")
    old.watch(Order, "update", channel_label="old-label")
    old.install()
    assert len(triggers(pg_engine, schema, "orders")) == 4
    # Nobody uses the old triggers any more (no grace period): the
    # maintenance thread removes them soon after start.
    fresh = make_notifier(notifiers, pg_engine, cleanup_on_start=True, cleanup_grace=0)
    fresh.watch(Order, "insert")
    fresh.start()
    wait_until(lambda: len(triggers(pg_engine, schema, "orders")) == 3, TIMEOUT, "the cleanup")
    names = triggers(pg_engine, schema, "orders")
    assert "my_audit" in names and "sqlnotify_lookalike" in names
    assert sorted(sqlnotify_functions(pg_engine, schema)) == sorted(
        ["sqlnotify_lookalike", fresh.watches[0].channel]
    )
    assert len(names) == 3
    # A second start with cleanup_on_start keeps its own trigger and still spares the others.
    fresh.stop()
    fresh.start()
    assert [s.state for s in fresh.install_states] == ["unchanged"]
    wait_until(lambda: fresh._owners is not None and fresh._owners.cleaned, TIMEOUT, "cleanup")
    assert len(triggers(pg_engine, schema, "orders")) == 3


def test_cleanup_and_uninstall(
    user_orders: Any, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    Order = user_orders
    n = make_notifier(notifiers, pg_engine)
    n.watch(Order, "insert").watch(Order, "update")
    n.install()
    assert len(sqlnotify_functions(pg_engine, schema)) == 3
    assert n.uninstall() == 2
    assert n.uninstall() == 0
    n.install()
    other = make_notifier(notifiers, pg_engine)
    other.watch(Order, "delete")  # cleanup() covers every unused sqlnotify object on the table
    assert other.cleanup() == 0, "n used them just now: within the grace period"
    other = make_notifier(notifiers, pg_engine, cleanup_grace=0)
    other.watch(Order, "delete")
    assert other.cleanup() == 2
    assert sorted(triggers(pg_engine, schema, "orders")) == ["my_audit", "sqlnotify_lookalike"]


def test_stop_with_cleanup_removes_triggers(
    Base: Any, pg_engine: sa.Engine, schema: str, notifiers: Any, watched: Watch
) -> None:
    Order = Base.Order
    n = watched(pg_engine, Order, record=False).notifier
    n.stop(cleanup=True)
    assert triggers(pg_engine, schema, "orders") == []
    assert sqlnotify_functions(pg_engine, schema) == []
    auto = make_notifier(notifiers, pg_engine, cleanup_on_stop=True)
    auto.watch(Order, "update")
    auto.start()
    assert len(triggers(pg_engine, schema, "orders")) == 1
    auto.stop()
    assert triggers(pg_engine, schema, "orders") == []
    auto.start()
    auto.stop(cleanup=False)  # the argument wins over the option
    assert len(triggers(pg_engine, schema, "orders")) == 1


def test_ddl_is_what_install_runs(Base: Any, pg_engine: sa.Engine, schema: str) -> None:
    n = Notifier(pg_engine)
    n.watch(Base.Order, "update", extra_columns=["status"], trigger_columns=["total"])
    statements = n.ddl()
    assert len(statements) == 4
    text = "\n".join(statements)
    assert "pg_notify" in text and "IS DISTINCT FROM" in text and "COMMENT ON FUNCTION" in text
    assert f'"{schema}"."orders"' in text
    with pg_engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    n.install()
    assert [s.state for s in n.install_states] == ["unchanged"]
    (row,) = [r for r in n.dialect.status() if r["schema"] == schema]  # type: ignore[attr-defined]
    assert (row["table"], row["operation"], row["state"]) == ("orders", "update", "installed")


def _install_in_child(url: str, schema: str, cleanup: bool, barrier: Any) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass  # connected and imported: the barrier then releases all ten together
        barrier.wait(60)
        notifier = Notifier(engine, cleanup_on_start=cleanup)
        for op in ("insert", "update", "delete"):
            notifier.watch(f"{schema}.orders", op, extra_columns=["status"])
        if cleanup:
            notifier.start()
            notifier.stop()
            return [s.state for s in notifier.install_states]
        return [s.state for s in notifier.install()]
    finally:
        engine.dispose()


def test_ten_processes_install_at_once(
    Base: Any, pg_url: str, pg_engine: sa.Engine, schema: str, notifiers: Any
) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(10) as pool:
        barrier = manager.Barrier(10)
        args = [(pg_url, schema, i % 3 == 0, barrier) for i in range(10)]
        results = pool.starmap(_install_in_child, args, chunksize=1)
    assert len(results) == 10
    for states in results:
        assert len(states) == 3
        assert set(states) <= {"installed", "unchanged", "replaced"}
    assert len(triggers(pg_engine, schema, "orders")) == 3
    n = make_notifier(notifiers, pg_engine)
    n.watch(f"{schema}.orders", "insert", extra_columns=["status"])
    rec = EventRecorder()
    n.subscribe(f"{schema}.orders", "insert")(rec)
    n.start()
    assert [s.state for s in n.install_states] == ["unchanged"]
    execute(pg_engine, f'INSERT INTO "{schema}".orders (id) VALUES (1)')
    assert rec.wait_for(1, TIMEOUT)[0].id == 1


def test_partitioned_table(pg_engine: sa.Engine, schema: str, notifiers: Any) -> None:
    execute(
        pg_engine,
        f'CREATE TABLE "{schema}".events (id int, day date, PRIMARY KEY (id, day))'
        " PARTITION BY RANGE (day)",
    )
    for year in (2023, 2024):
        execute(
            pg_engine,
            f'CREATE TABLE "{schema}".events_{year} PARTITION OF "{schema}".events'
            f" FOR VALUES FROM ('{year}-01-01') TO ('{year + 1}-01-01')",
        )
    n = make_notifier(notifiers, pg_engine)
    n.watch(f"{schema}.events", "insert")
    rec = EventRecorder()
    n.subscribe(f"{schema}.events", "insert")(rec)
    n.start()
    execute(
        pg_engine, f"INSERT INTO \"{schema}\".events VALUES (1, '2023-05-01'), (2, '2024-05-01')"
    )
    events = rec.wait_for(2, TIMEOUT)
    assert [(e.table, e.id[0]) for e in events] == [("events", 1), ("events", 2)]
    n.stop()
    again = make_notifier(notifiers, pg_engine, cleanup_grace=0)  # n stopped: not live
    again.watch(f"{schema}.events", "insert")
    assert [s.state for s in again.install()] == ["unchanged"]
    assert again.cleanup() == 1
    assert triggers(pg_engine, schema, "events_2023") == []
