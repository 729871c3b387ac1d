"""The listener's pacing between checks, and the file watch."""

from __future__ import annotations

import os
import select

import pytest
from support.env import need_module

from sqlnotify._pacer import Pacer
from sqlnotify.dialects.sqlite.wake import FileWatch


def test_polling_backs_off_and_resets() -> None:
    pacer = Pacer(0.001, 0.05, watching=False)
    pauses = []
    for _ in range(8):
        pauses.append(pacer.pause(1.0))
        pacer.slept()
    assert pauses == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05]
    pacer.found()
    assert pacer.pause(1.0) == 0.001 and pacer.settled
    assert pacer.pause(0.0005) == 0.0005  # never beyond the caller's bound


def test_wake_steps_then_back_to_waiting() -> None:
    pacer = Pacer(0.001, 0.05, watching=True)
    assert pacer.pause(1.0) == 1.0
    pacer.woke()
    assert not pacer.settled
    steps = []
    while not pacer.settled:
        steps.append(pacer.pause(1.0))
        pacer.slept()
    assert steps == list(Pacer.WAKE_STEPS)
    assert pacer.pause(1.0) == 1.0


def test_after_a_read_with_a_file_watch() -> None:
    pacer = Pacer(0.001, 0.05, watching=True)
    pacer.found()
    steps = []
    while not pacer.settled:
        steps.append(pacer.pause(1.0))
        pacer.slept()
    assert steps == list(Pacer.AFTER_READ_STEPS)


def test_file_watch(tmp_path: os.PathLike[str]) -> None:
    need_module("inotify_simple")
    path = os.path.join(os.fspath(tmp_path), "f")
    with open(path, "w") as f:
        f.write("x")
    watch = FileWatch(path)
    try:
        assert select.select([watch.fd], [], [], 0)[0] == []
        with open(path, "a") as f:
            f.write("y")
        assert select.select([watch.fd], [], [], 5)[0] == [watch.fd]
        assert watch.drain() is True
        assert select.select([watch.fd], [], [], 0)[0] == []
        os.unlink(path)
        assert select.select([watch.fd], [], [], 5)[0] == [watch.fd]
        assert watch.drain() is False
    finally:
        watch.close()


def test_file_watch_missing_file(tmp_path: os.PathLike[str]) -> None:
    need_module("inotify_simple")
    with pytest.raises(OSError):
        FileWatch(os.path.join(os.fspath(tmp_path), "missing"))
