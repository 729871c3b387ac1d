"""health() details: the listener's periodic queue check, its warning, option checks."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from support.watching import make_table

from sqlnotify import Notifier, SQLNotifyConfigurationError
from sqlnotify.dialects.postgresql import PostgresSource
from sqlnotify.testing import wait_until


def test_listener_reads_the_server_queue_usage_and_warns_past_half(
    pg_schema_engine: sa.Engine,
    notifiers: list[Notifier],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(PostgresSource, "QUEUE_CHECK_INTERVAL", 0.05)
    table = make_table(pg_schema_engine)
    n = Notifier(pg_schema_engine).watch(table, "insert")
    notifiers.append(n)
    n.start()
    source = n._intake.source if n._intake else None
    assert isinstance(source, PostgresSource)
    # The listener asks on its own connection, between waits.
    wait_until(lambda: source.queue_usage is not None, timeout=10, message="a queue check")
    assert 0.0 <= source.queue_usage < 0.5  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        source._queue_checked((0.62,))  # what the probe would read from a filling queue
        source._queue_checked((0.63,))  # warned once a minute at most
    warnings = [r for r in caplog.records if "notification queue is 62% full" in r.message]
    assert len(warnings) == 1 and "63%" not in caplog.text


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_queue": 0}, "max_queue must be a positive integer"),
        ({"consumer": ".hidden"}, "invalid consumer name"),
        ({"consumer": "a b"}, "invalid consumer name"),
        ({"journal_retention": -1}, "journal_retention must be"),
        ({"pg_journal_per_statement": "yes"}, "pg_journal_per_statement must be True or False"),
    ],
)
def test_bad_options_are_refused(
    pg_engine: sa.Engine, options: dict[str, object], match: str
) -> None:
    with pytest.raises(SQLNotifyConfigurationError, match=match):
        Notifier(pg_engine, **options)  # type: ignore[arg-type]
