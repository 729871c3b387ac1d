"""Running the ``sqlnotify`` command line as a real process, and reading what it prints."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from support.procs import next_line

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def cli() -> list[str]:
    """The installed console script, else ``python -m sqlnotify``."""
    exe = shutil.which("sqlnotify", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "sqlnotify"]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # This checkout's package wins over any installed copy.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=cli_env(**env),
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


class Running:
    """A ``sqlnotify`` process whose output lines are read by two threads."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*cli(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=cli_env(),
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.threads = []
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            thread = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _pump(stream: IO[str], sink: queue.Queue[str]) -> None:
        for line in stream:
            sink.put(line)

    def wait_stderr(self, fragment: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = next_line(
                self.stderr,
                deadline,
                lambda: f"no {fragment!r} on stderr within {timeout}s: {self.err_lines}",
            )
            self.err_lines.append(line)
            if fragment in line:
                return line

    def json_lines(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < count:
            line = next_line(self.stdout, deadline, lambda: f"expected {count} lines, got {out}")
            out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
            for thread in self.threads:
                thread.join(TIMEOUT)  # EOF once the process is gone
            while not self.stderr.empty():
                self.err_lines.append(self.stderr.get())
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


#: An application module for ``--app``: one watch on ``APP_TABLE`` of ``APP_URL``.
APP = """\
import os

import sqlalchemy as sa

from click.testing import CliRunner

from sqlnotify import Notifier
from sqlnotify.cli import main

engine = sa.create_engine(os.environ["APP_URL"])
notifier = Notifier(engine)
notifier.watch(os.environ["APP_TABLE"], "insert", extra_columns=["item"])


def make_notifier():
    return notifier


not_a_notifier = 42
"""
