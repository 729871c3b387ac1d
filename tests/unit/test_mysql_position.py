"""The MySQL change log's position: holes below the high mark, filled late or settled."""

from __future__ import annotations

from sqlnotify.dialects.mysql.position import LogPosition


def test_rows_in_order_leave_no_hole() -> None:
    pos = LogPosition(0).after(1, 10.0).after(2, 10.0)
    assert (pos.high, pos.pending, pos.last, pos.low) == (2, (), 2, 2)


def test_a_skipped_id_stays_pending_and_holds_low() -> None:
    pos = LogPosition(3).after(7, 10.0)
    assert pos.pending == ((4, 6, 10.0),)
    assert (pos.high, pos.low, pos.last) == (7, 3, 7)
    assert pos.params() == [7, 4, 6]


def test_a_late_row_splits_its_hole() -> None:
    pos = LogPosition(3).after(7, 10.0).after(5, 11.0)
    assert pos.pending == ((4, 4, 10.0), (6, 6, 10.0))
    assert (pos.high, pos.last) == (7, 5)
    pos = pos.after(4, 12.0).after(6, 12.0)
    assert (pos.pending, pos.low) == ((), 7)


def test_settle_drops_holes_noticed_before_a_time() -> None:
    pos = LogPosition(0).after(2, 10.0).after(5, 20.0)
    assert pos.pending == ((1, 1, 10.0), (3, 4, 20.0))
    assert pos.settle(15.0).pending == ((3, 4, 20.0),)
    assert pos.settle(5.0) is pos


def test_trim_keeps_the_newest_ranges() -> None:
    pos = LogPosition(0).after(2, 1.0).after(4, 2.0).after(6, 3.0)
    trimmed, dropped = pos.trim(1)
    assert (trimmed.pending, dropped) == (((5, 5, 3.0),), 2)
    assert pos.trim(5) == (pos, 0)


def test_json_round_trip() -> None:
    pos = LogPosition(0).after(3, 1.5).after(9, 2.5)
    again = LogPosition.loads(pos.dumps())
    assert (again.high, again.pending, again.last) == (pos.high, pos.pending, pos.high)
