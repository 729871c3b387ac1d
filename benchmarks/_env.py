"""What every case needs: the database, worker processes, statistics, the machine."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pg_url() -> str:
    return os.environ.get("SQLNOTIFY_TEST_POSTGRES_URL", DEFAULT_PG_URL)


def pg_dsn(url: str) -> dict[str, Any]:
    """psycopg2 keywords for ``url`` (the same translation the listener uses)."""
    import sqlalchemy as sa

    from sqlnotify.dialects.postgresql import listener_dsn

    dsn = listener_dsn(sa.make_url(url))
    dsn["application_name"] = "sqlnotify-bench"
    return dsn


def pg_connect(url: str, autocommit: bool = True) -> Any:
    import psycopg2

    conn = psycopg2.connect(**pg_dsn(url))
    conn.autocommit = autocommit
    return conn


def pg_available(url: str) -> str | None:
    """``None`` when PostgreSQL answers at ``url``, else the reason it cannot be used."""
    try:
        conn = pg_connect(url)
    except Exception as exc:
        return f"no PostgreSQL at {url}: {str(exc).strip()}"
    conn.close()
    return None


@contextlib.contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A fresh schema, dropped with everything in it afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = pg_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{name}"')
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.close()


def schema_url(url: str, schema: str) -> str:
    """``url`` with ``search_path`` set to ``schema``."""
    import sqlalchemy as sa

    u = sa.make_url(url)
    return u.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def rss_bytes() -> int:
    """This process's resident set size (``VmRSS``), in bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process, from ``/proc/<pid>/stat``."""
    path = f"/proc/{pid or 'self'}/stat"
    with open(path, encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Worker:
    """A ``python -m benchmarks._worker`` child (or the ``spec["module"]`` one),
    talking JSON lines on its stdout."""

    def __init__(self, spec: dict[str, Any], timeout: float = 120.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.spec = spec
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", spec.get("module", "benchmarks._worker"), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
            cwd=ROOT,
        )
        self._buffer = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, key: str, timeout: float | None = None) -> Any:
        """Wait for the next message carrying ``key`` and return its value."""
        while True:
            message = self.next(timeout, waiting_for=key)
            if key in message:
                return message[key]

    def next(self, timeout: float | None = None, waiting_for: str = "a message") -> Any:
        """The next message (a dict); raises if the worker failed, ended or timed out."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        line = self._line(deadline)
        if line is None:
            code = self.proc.poll()
            self.kill()
            why = f"exited with {code}" if code is not None else "timed out"
            raise RuntimeError(f"worker {self.spec.get('role')} {why} waiting for {waiting_for!r}")
        message = json.loads(line)
        if "error" in message:
            self.kill()
            raise RuntimeError(f"worker {self.spec.get('role')} failed: {message['error']}")
        return message

    def _line(self, deadline: float) -> str | None:
        # Read the pipe's descriptor directly: a buffered reader would hold
        # lines that select() can no longer see.
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while "\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk.decode("utf-8")
        line, self._buffer = self._buffer.split("\n", 1)
        return line

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def machine() -> dict[str, Any]:
    """The machine a run measured: cores, CPU model, Python, PostgreSQL, packages."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def pg_version(url: str) -> str | None:
    try:
        conn = pg_connect(url)
    except Exception:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
            return str(row[0]).split()[0] if row else None
    finally:
        conn.close()


def _pg_binaries() -> tuple[str, str] | None:
    import glob
    import shutil

    for folder in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        pg_ctl = shutil.which("pg_ctl", path=folder)
        initdb = shutil.which("initdb", path=folder)
        if pg_ctl and initdb:
            return pg_ctl, initdb
    return None


@contextlib.contextmanager
def throwaway_pg() -> Iterator[str]:
    """A temporary PostgreSQL server from the local binaries, stopped and removed afterwards."""
    import shutil
    import socket
    import tempfile

    found = _pg_binaries()
    if found is None:
        raise RuntimeError("no PostgreSQL binaries (pg_ctl, initdb) on this machine")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise RuntimeError("initdb refuses to run as root")
    pg_ctl, initdb = found
    folder = tempfile.mkdtemp(prefix="sqlnotify-bench-pg-")
    data = os.path.join(folder, "data")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        subprocess.run(
            [initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [pg_ctl, "-D", data, "-o", options, "-l", os.path.join(folder, "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [pg_ctl, "-D", data, "-m", "fast", "-w", "stop"], check=False, capture_output=True
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
