"""The change-log reader shared by every dialect that reads a log table."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pytest

from sqlnotify._journal import JournalReader, with_position


class Log:
    """An in-memory log with the same contract as a dialect's ``fetch``."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str]] = []
        self.calls: list[tuple[int, int]] = []
        self.fail_after: int | None = None

    def add(self, seq: int, channel: str = "a") -> None:
        self.rows.append((seq, channel, json.dumps({"ts": 1.0, "row": {"id": seq}})))

    def fetch(self, after: int, limit: int) -> Sequence[tuple[int, str, str]]:
        self.calls.append((after, limit))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise OSError("connection lost")
        return [r for r in self.rows if r[0] > after][:limit]


def test_with_position() -> None:
    assert json.loads(with_position('{"ts":1,"row":{}}', 7)) == {"ts": 1, "row": {}, "pos": 7}
    assert json.loads(with_position("{}", 3)) == {"pos": 3}
    assert json.loads(with_position('{"a": 1}  \n', 3)) == {"a": 1, "pos": 3}
    assert with_position("not json", 3) == "not json"


def test_reads_in_batches_and_filters_channels() -> None:
    log = Log()
    for seq in range(1, 26):
        log.add(seq, "a" if seq % 2 else "b")
    reader = JournalReader(0, ["a"], batch_size=10)
    got = reader.read(log.fetch)
    assert [json.loads(n.payload)["pos"] for n in got] == list(range(1, 26, 2))
    assert {n.channel for n in got} == {"a"}
    assert reader.position == 25 and not reader.more
    assert log.calls == [(0, 10), (10, 10), (20, 10)]
    assert reader.read(log.fetch) == []
    log.add(26, "b")
    assert reader.read(log.fetch) == [] and reader.position == 26


def test_row_limit_leaves_more() -> None:
    log = Log()
    for seq in range(1, 31):
        log.add(seq)
    reader = JournalReader(0, None, batch_size=10)
    assert len(reader.read(log.fetch, max_rows=20)) == 20 and reader.more
    assert len(reader.read(log.fetch, max_rows=20)) == 10 and not reader.more


def test_gap_is_reported_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    log = Log()
    for seq in (1, 2, 6, 7, 9):
        log.add(seq)
    gaps: list[tuple[int, int]] = []
    reader = JournalReader(0, None, contiguous=True, on_gap=lambda a, b: gaps.append((a, b)))
    with caplog.at_level(logging.WARNING, logger="sqlnotify"):
        got = reader.read(log.fetch)
    assert len(got) == 5
    assert gaps == [(3, 5), (8, 8)]
    assert reader.missed == 4 and reader.gaps == 2
    assert "positions 3 to 5 (3 rows)" in caplog.text


def test_holes_are_normal_when_not_contiguous() -> None:
    log = Log()
    for seq in (1, 5, 9):
        log.add(seq)
    reader = JournalReader(0, None, contiguous=False)
    assert len(reader.read(log.fetch)) == 3 and reader.missed == 0


def test_failing_gap_handler_does_not_stop_reading(caplog: pytest.LogCaptureFixture) -> None:
    log = Log()
    log.add(5)

    def broken(first: int, last: int) -> None:
        raise RuntimeError("handler bug")

    reader = JournalReader(0, None, contiguous=True, on_gap=broken)
    assert len(reader.read(log.fetch)) == 1
    assert "gap handler failed" in caplog.text


def test_error_keeps_what_was_read() -> None:
    log = Log()
    for seq in range(1, 16):
        log.add(seq)
    reader = JournalReader(0, None, batch_size=10)
    log.fail_after = 1
    # The first batch is handed out; the error waits for the next read.
    assert len(reader.read(log.fetch)) == 10 and reader.more and reader.position == 10
    with pytest.raises(OSError):
        reader.read(log.fetch)
    assert reader.position == 10
    log.fail_after = None
    assert [json.loads(n.payload)["pos"] for n in reader.read(log.fetch)] == list(range(11, 16))


@pytest.mark.parametrize("channels", [None, ["a"]])
def test_rows_are_handed_out_as_read(channels: list[str] | None) -> None:
    log = Log()
    for seq in range(1, 13):
        log.add(seq, "a" if seq % 3 else "b")
    # A row without a payload only moves the position (the end of a window).
    log.rows.append((13, "a", None))  # type: ignore[arg-type]
    reader = JournalReader(0, channels, batch_size=5, rows=True)
    got = reader.read(log.fetch)
    wanted = [r for r in log.rows[:12] if channels is None or r[1] in channels]
    assert got == wanted
    assert all(type(r) is tuple for r in got)
    assert reader.position == 13 and not reader.more
    assert log.calls == [(0, 5), (5, 5), (10, 5)]


def test_rows_of_a_contiguous_log_still_report_holes(caplog: pytest.LogCaptureFixture) -> None:
    log = Log()
    for seq in (1, 2, 5):
        log.add(seq)
    holes: list[tuple[int, int]] = []
    reader = JournalReader(
        0, None, contiguous=True, on_gap=lambda a, b: holes.append((a, b)), rows=True
    )
    with caplog.at_level(logging.WARNING):
        got = reader.read(log.fetch)
    assert [r[0] for r in got] == [1, 2, 5]
    assert holes == [(3, 4)] and reader.missed == 2
