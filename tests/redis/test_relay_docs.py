"""The example of docs/relay.rst, run as printed against PostgreSQL and Redis."""

from __future__ import annotations

import decimal
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from sqlnotify.testing import EventRecorder, wait_until

PAGE = Path(__file__).resolve().parents[2] / "docs" / "relay.rst"


def example() -> str:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(".. sqlnotify-run-by: tests/redis/test_relay_docs.py")
    block = text[text.index(".. code-block:: python", start) :].split("\n")[2:]
    body = []
    for line in block:
        if line.strip() and not line.startswith("    "):
            break
        body.append(line)
    return textwrap.dedent("\n".join(body))


def test_the_relay_page_example_runs(
    pg_schema_engine: sa.Engine, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    orders = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("total", sa.Numeric(10, 2)),
    )
    orders.create(pg_schema_engine)
    monkeypatch.setenv("DATABASE_URL", pg_schema_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("REDIS_URL", redis_url)
    code = example()
    assert re.search(r"Notifier\.from_redis\(", code)
    ns: dict[str, Any] = {"__name__": "relay_example"}
    exec(compile(code, str(PAGE), "exec"), ns)
    relay, app = ns["relay"], ns["app"]
    events = EventRecorder()
    app.subscribe("orders", "insert")(events)
    client = redis.Redis.from_url(redis_url)
    try:
        app.start()
        wait_until(lambda: relay.active, timeout=20, message="the relay to become active")
        with pg_schema_engine.begin() as conn:
            conn.execute(orders.insert().values(id=7, total=decimal.Decimal("12.50")))
        (event,) = events.wait_for(1, timeout=20)
        assert event.extra_columns["total"] == decimal.Decimal("12.50")
        wait_until(
            lambda: "order 7 12.50" in capsys.readouterr().out or None,
            timeout=5,
            message="the example's receiver to print",
        )
    finally:
        app.stop()
        relay.stop()
        for watch in app.watches:
            client.delete("sqlnotify:" + watch.channel)
        client.close()
