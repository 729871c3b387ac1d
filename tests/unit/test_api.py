"""The public surface: exports, imports without drivers, ChangeEvent, Operation, exceptions."""

from __future__ import annotations
import __future__

import datetime as dt
import os
import pickle
import subprocess
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from support.events import EVENT_KEYS

import sqlnotify
from sqlnotify import ChangeEvent, Operation, exceptions, signals
from sqlnotify.exceptions import (
    SQLNotifyConfigurationError,
    SQLNotifyException,
    SQLNotifyIdentifierSizeError,
    SQLNotifyListenerError,
    SQLNotifyPayloadSizeError,
    SQLNotifyUnSupportedDatabaseProviderError,
)


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout


def test_importing_sqlnotify_imports_no_driver() -> None:
    drivers = [
        "psycopg2",
        "psycopg",
        "asyncpg",
        "pg8000",
        "sqlite3",
        "_sqlite3",
        "pysqlite3",
        "aiosqlite",
        "pymysql",
    ]
    out = _run(
        "import sys, sqlnotify, sqlnotify.testing, sqlnotify.signals, sqlnotify.exceptions;"
        f"print(sorted(m for m in {drivers!r} if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_the_base_install_works_without_greenlet(tmp_path: Any) -> None:
    # greenlet comes only with the asyncio extra; a sync notifier must not need it.
    db = os.path.join(os.fspath(tmp_path), "base.db")
    code = f"""
import sys
sys.modules["greenlet"] = None  # import greenlet now raises ImportError
import sqlalchemy as sa
import sqlnotify
from sqlnotify.testing import EventRecorder
engine = sa.create_engine("sqlite:///{db}")
with engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
n = sqlnotify.Notifier(engine)
n.watch("t", "insert")
rec = EventRecorder()
n.subscribe("t", "insert")(rec)
with n:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (7)")
    print([e.id for e in rec.wait_for(1, 10)], sys.modules.get("greenlet", "absent"))
"""
    assert _run(code).split() == ["[7]", "None"]  # still blocked: nothing imported it


def test_all_matches_the_public_names() -> None:
    public = {
        name
        for name in vars(sqlnotify)
        if not name.startswith("_")
        and not isinstance(getattr(sqlnotify, name), (type(sys), __future__._Feature))
    }
    assert set(sqlnotify.__all__) - {"__version__"} == public
    for name in sqlnotify.__all__:
        assert hasattr(sqlnotify, name), name
    for module in (signals, exceptions):
        assert sorted(module.__all__) == sorted(
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and n not in ("annotations", "Namespace")
        )
    assert isinstance(sqlnotify.__version__, str)


def test_exception_tree() -> None:
    for cls in (
        SQLNotifyConfigurationError,
        SQLNotifyPayloadSizeError,
        SQLNotifyIdentifierSizeError,
        SQLNotifyListenerError,
        SQLNotifyUnSupportedDatabaseProviderError,
    ):
        assert issubclass(cls, SQLNotifyException)
    assert issubclass(SQLNotifyUnSupportedDatabaseProviderError, SQLNotifyConfigurationError)
    err = SQLNotifyPayloadSizeError("too big", size=9000, limit=7999)
    assert (err.size, err.limit, str(err)) == (9000, 7999, "too big")
    assert exceptions.ConfigurationError is SQLNotifyConfigurationError
    assert exceptions.PayloadSizeError is SQLNotifyPayloadSizeError


def test_operation_accepts_members_and_strings() -> None:
    assert Operation.coerce("insert") is Operation.INSERT
    assert Operation.coerce(" UPDATE ") is Operation.UPDATE
    assert Operation.coerce(Operation.DELETE) is Operation.DELETE
    assert Operation.INSERT == "insert" and str(Operation.INSERT) == "insert"
    assert Operation.coerce("truncate") is Operation.TRUNCATE
    with pytest.raises(SQLNotifyConfigurationError, match=r"'upsert'.*'truncate'"):
        Operation.coerce("upsert")
    with pytest.raises(SQLNotifyConfigurationError):
        Operation.coerce(3)  # type: ignore[arg-type]


def make_event(**overrides: object) -> ChangeEvent:
    fields: dict[str, object] = {
        "schema": "shop",
        "table": "order_items",
        "operation": Operation.UPDATE,
        "row": {"order_id": 1, "item_id": 2, "quantity": 3},
        "primary_keys": ("order_id", "item_id"),
        "epoch": 1_700_000_000.25,
        "channel": "sqlnotify_shop_order_items_update",
    }
    fields.update(overrides)
    return ChangeEvent(**fields)  # type: ignore[arg-type]


def test_change_event_fields_and_mapping_access() -> None:
    event = make_event()
    assert event.id == (1, 2)
    assert event.extra_columns == {"quantity": 3}
    assert isinstance(event.extra_columns, MappingProxyType)
    assert event.timestamp == dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=dt.timezone.utc)
    assert event["id"] == (1, 2)
    assert event["table"] == "order_items"
    assert isinstance(event, Mapping)
    as_dict = dict(event)
    assert set(as_dict) == set(EVENT_KEYS[:7])  # schema ... channel
    assert as_dict["operation"] is Operation.UPDATE
    assert "id" in event and "quantity" not in event
    with pytest.raises(KeyError):
        event["quantity"]
    assert (event.custom, event.status, event.position) == (False, "complete", None)
    assert dict(event.row) == {"order_id": 1, "item_id": 2, "quantity": 3}
    single = make_event(primary_keys=("order_id",))
    assert single.id == 1
    assert single.extra_columns == {"item_id": 2, "quantity": 3}
    assert "order_items" in repr(event) and "(1, 2)" in repr(event)


def test_change_event_is_immutable() -> None:
    event = make_event()
    with pytest.raises(AttributeError):
        event.id = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.table = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.anything = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        event["id"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        event.extra_columns["quantity"] = 4  # type: ignore[index]
    with pytest.raises(TypeError):
        event.row["quantity"] = 4  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(event)


def test_change_event_pickles() -> None:
    event = make_event(custom=True, position=17, status="keys_only")
    copy = pickle.loads(pickle.dumps(event))
    assert copy == event
    assert copy is not event
    assert (copy.id, copy.custom, copy.position, copy.status) == ((1, 2), True, 17, "keys_only")
    assert copy.timestamp == event.timestamp
    assert copy.primary_keys == ("order_id", "item_id")
    assert copy != make_event(row={"order_id": 1, "item_id": 9, "quantity": 3})


@pytest.mark.parametrize(
    ("text", "expected", "parse"),
    [
        ("23:59:58.5+00", "23:59:58.500000+00:00", dt.time.fromisoformat),
        (
            "2024-01-01T00:00:00.12+05",
            "2024-01-01T00:00:00.120000+05:00",
            dt.datetime.fromisoformat,
        ),
        ("2024-01-01T00:00:00", "2024-01-01T00:00:00", dt.datetime.fromisoformat),
        ("2024-01-01", "2024-01-01", dt.date.fromisoformat),
    ],
)
def test_postgresql_iso_forms_are_rewritten_for_python_310(
    text: str, expected: str, parse: Any
) -> None:
    from sqlnotify._values import _py310_iso

    assert _py310_iso(text) == expected
    parse(expected)  # a form Python 3.10's fromisoformat accepts too


def test_the_version_sorts_above_the_index_package_of_the_same_name() -> None:
    # Another project publishes "sqlnotify" 0.1.1 on the package index: a lower
    # version here would let `pip install -U sqlnotify` replace this one with it.
    from packaging.version import Version

    assert Version(sqlnotify.__version__) > Version("0.1.1")
