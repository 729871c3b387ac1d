"""Helpers for tests that run a real process (a script, a worker, a server)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this checkout first on the path."""
    env = dict(os.environ)
    path = [ROOT, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def next_line(lines: Any, deadline: float, failure: Callable[[], str]) -> Any:
    """The next item of the queue ``lines``, waiting until ``deadline`` (``time.monotonic()``).

    Raises ``AssertionError(failure())`` when none came by then.
    """
    try:
        return lines.get(timeout=max(deadline - time.monotonic(), 0.001))
    except queue.Empty:
        raise AssertionError(failure()) from None


class Proc:
    """A child process whose output lines are collected by a reader thread."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.popen = subprocess.Popen(
            list(args),
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name="proc-reader", daemon=True)
        self._reader.start()

    @classmethod
    def python(cls, *args: str, env: dict[str, str], cwd: str | None = None) -> Proc:
        return cls([sys.executable, *args], env, cwd)

    @classmethod
    def run(
        cls, *args: str, env: dict[str, str], cwd: str | None = None, timeout: float = 60.0
    ) -> tuple[Proc, int]:
        """Run a child Python to its end (killed if still running after ``timeout``).

        Returns the process, whose output is in ``lines``, and its exit code.
        """
        proc = cls.python(*args, env=env, cwd=cwd)
        try:
            return proc, proc.wait(timeout)
        finally:
            proc.kill()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, text: str, timeout: float = 30.0, count: int = 1) -> str:
        """Wait until ``count`` output lines contain ``text``; return the last of them."""
        found = [line for line in self.lines if text in line]
        if len(found) >= count:
            return found[count - 1]
        deadline = time.monotonic() + timeout
        while True:
            line = next_line(
                self._queue,
                deadline,
                lambda: (
                    f"no output line with {text!r} within {timeout:g}s; output so far:\n"
                    + self.output
                ),
            )
            if line is None:
                raise AssertionError(
                    f"the process exited ({self.popen.poll()}) before printing {text!r}:\n"
                    + self.output
                )
            self.lines.append(line)
            if text in line:
                found.append(line)
                if len(found) >= count:
                    return line

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit and for the rest of the output; return the exit code."""
        code = self.popen.wait(timeout)
        self._reader.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._reader.join(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
