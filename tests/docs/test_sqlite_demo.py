"""The README's first command: ``python -m sqlnotify demo``."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys

import pytest
from support.sqlite import ROOT

pytestmark = pytest.mark.sqlite


def demo(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-m", "sqlnotify", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_demo_runs_and_cleans_up() -> None:
    proc = demo("--seconds", "1.5", "--rate", "40")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    if importlib.util.find_spec("inotify_simple") is not None and sys.platform == "linux":
        assert "woken by file changes (inotify)" in out, out
    events = re.findall(r"^  (insert|update|delete) +id=(\d+) .* +(\d+\.\d\d) ms$", out, re.M)
    assert {op for op, _, _ in events} == {"insert", "update", "delete"}, out
    received = re.search(r"^received (\d+) of (\d+) changes$", out, re.M)
    assert received is not None, out
    assert int(received.group(1)) == int(received.group(2)) == len(events)
    assert re.search(r"^write to receipt: median \d+\.\d\d ms", out, re.M)
    pid = re.search(r"another process \(pid (\d+)\)", out)
    assert pid is not None and int(pid.group(1)) != proc.pid
    removed = re.search(r"^removed (.+)$", out, re.M)
    assert removed is not None and not os.path.exists(removed.group(1))


def test_demo_stops_on_ctrl_c() -> None:
    proc = demo("--seconds", "60")
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if re.match(r"^  (insert|update|delete) ", line):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    text = "".join(lines) + out
    assert "interrupted; received" in text
    removed = re.search(r"^removed (.+)$", text, re.M)
    assert removed is not None and not os.path.exists(removed.group(1))


def test_demo_says_when_it_polls() -> None:
    """Without inotify-simple (a base install), the demo says it polls and how to do better."""
    block = (
        "import runpy, sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'inotify_simple':\n"
        "            raise ModuleNotFoundError(name=name)\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "sys.argv = ['sqlnotify', 'demo', '--seconds', '0.5']\n"
        "runpy.run_module('sqlnotify', run_name='__main__')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("polling"))
    if sys.platform.startswith("linux"):
        assert line == (
            "polling every 50 ms: no file-change wake-ups here; install '.[sqlite]'"
            " (inotify-simple) for file-change wake-ups, ~1 ms"
        )
