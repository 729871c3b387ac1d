"""The JSON form of a ChangeEvent: ``to_dict()`` / ``to_json()``, field by field."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import json
import uuid

import sqlalchemy as sa
from support.events import EVENT_KEYS
from support.sqlite import file_engine

from sqlnotify import ChangeEvent, Notifier, Operation
from sqlnotify.testing import EventRecorder

KEYS = list(EVENT_KEYS)


class Colour(enum.Enum):
    RED = "r"
    BLUE = "b"


def make_event(**overrides: object) -> ChangeEvent:
    fields: dict[str, object] = {
        "schema": "shop",
        "table": "orders",
        "operation": Operation.UPDATE,
        "row": {"id": 7},
        "primary_keys": ("id",),
        "epoch": 1_767_225_600.25,  # 2026-01-01T00:00:00.25Z
        "channel": "sqlnotify_orders_update",
    }
    fields.update(overrides)
    return ChangeEvent(**fields)  # type: ignore[arg-type]


def test_every_value_type_has_a_json_form() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    event = make_event(
        row={
            "id": 7,
            "total": decimal.Decimal("12.3400"),
            "token": ident,
            "blob": b"\x00\xffhi",
            "at": dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc),
            "day": dt.date(2026, 1, 2),
            "clock": dt.time(3, 4, 5),
            "took": dt.timedelta(minutes=1, milliseconds=500),
            "colour": Colour.BLUE,
            "doc": {"n": [1, decimal.Decimal("2.5")], "ok": True, "none": None},
            "name": "Zoë",
            "ratio": 0.5,
            "flag": False,
        },
        position=42,
        status="hydrated",
    )
    data = event.to_dict()
    assert list(data) == KEYS
    assert data["schema"] == "shop"
    assert data["table"] == "orders"
    assert data["operation"] == "update"
    assert data["id"] == 7
    assert data["timestamp"] == "2026-01-01T00:00:00.250000+00:00"
    assert data["channel"] == "sqlnotify_orders_update"
    assert data["position"] == 42
    assert data["status"] == "hydrated"
    assert data["custom"] is False
    extra = data["extra_columns"]
    assert extra["total"] == "12.3400"  # no precision lost
    assert extra["token"] == "12345678-1234-5678-1234-567812345678"
    assert base64.b64decode(extra["blob"]) == b"\x00\xffhi"
    assert extra["at"] == "2026-01-02T03:04:05.600000+00:00"
    assert extra["day"] == "2026-01-02"
    assert extra["clock"] == "03:04:05"
    assert extra["took"] == 60.5
    assert extra["colour"] == "BLUE"
    assert extra["doc"] == {"n": [1, "2.5"], "ok": True, "none": None}
    assert extra["name"] == "Zoë"
    assert extra["ratio"] == 0.5
    assert extra["flag"] is False
    # to_json is to_dict through json, non-ASCII kept.
    text = event.to_json()
    assert "Zoë" in text
    assert json.loads(text) == data
    assert json.loads(event.to_json(indent=2, sort_keys=True)) == data


def test_composite_key_custom_and_missing_timestamp() -> None:
    event = make_event(
        schema=None,
        operation=Operation.INSERT,
        row={"a": 1, "b": uuid.UUID(int=5), "note": "x"},
        primary_keys=("a", "b"),
        epoch=None,
        custom=True,
    )
    data = event.to_dict()
    assert data["schema"] is None
    assert data["id"] == [1, "00000000-0000-0000-0000-000000000005"]
    assert data["extra_columns"] == {"note": "x"}
    assert data["timestamp"] is None
    assert data["position"] is None
    assert data["custom"] is True
    assert data["status"] == "complete"
    assert json.loads(event.to_json()) == data


def test_an_event_from_the_database_serialises(sqlite_path: str) -> None:
    engine = file_engine(sqlite_path)
    table = sa.Table(
        "payments",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("ref", sa.Uuid),
        sa.Column("raw", sa.LargeBinary),
        sa.Column("paid_at", sa.DateTime(timezone=True)),
        sa.Column("colour", sa.Enum(Colour)),
    )
    table.metadata.create_all(engine)
    notifier = Notifier(engine)
    extra = ["amount", "ref", "raw", "paid_at", "colour"]
    notifier.watch(table, "insert", extra_columns=extra)
    recorder = EventRecorder()
    notifier.subscribe(table, "insert")(recorder)
    ref = uuid.uuid4()
    paid = dt.datetime(2026, 3, 4, 5, 6, 7)
    with notifier:
        with engine.begin() as conn:
            conn.execute(
                table.insert().values(
                    id=1,
                    amount=decimal.Decimal("9.99"),
                    ref=ref,
                    raw=b"\x01\x02",
                    paid_at=paid,
                    colour=Colour.RED,
                )
            )
        (event,) = recorder.wait_for(1)
    engine.dispose()
    data = json.loads(event.to_json())
    assert list(data) == KEYS
    assert data["schema"] is None
    assert data["table"] == "payments"
    assert data["operation"] == "insert"
    assert data["id"] == 1
    assert data["extra_columns"] == {
        "amount": "9.99",
        "ref": str(ref),
        "raw": base64.b64encode(b"\x01\x02").decode(),
        "paid_at": paid.isoformat(),
        "colour": "RED",
    }
    assert dt.datetime.fromisoformat(data["timestamp"]).tzinfo is not None
    assert data["channel"] == event.channel
    assert data["position"] == event.position
    assert isinstance(data["position"], int)
    assert data["status"] == "complete"
    assert data["custom"] is False
