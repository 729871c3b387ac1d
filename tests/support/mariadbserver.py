"""A private MariaDB server with the binary log on, in a temporary directory.

The binlog source's tests need a server whose settings (``binlog_format``,
purged logs) they may change without disturbing the shared server, so
:class:`ThrowawayMariaDB` installs one with ``mariadb-install-db`` and runs
``mariadbd`` on a free port.  Skipped when the binaries are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence

from .pgserver import free_port

__all__ = ["ThrowawayMariaDB", "have_mariadb"]


def have_mariadb() -> bool:
    return bool(shutil.which("mariadb-install-db") and shutil.which("mariadbd"))


def _mariadbd() -> str:
    return shutil.which("mariadbd") or "/usr/sbin/mariadbd"


class ThrowawayMariaDB:
    """A private ``mariadbd`` (binlog on, ROW format); :meth:`destroy` removes it all."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="sqlnotify-mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.port = free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = open(os.path.join(self.dir, "server.log"), "wb")  # noqa: SIM115
        root = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *root,
            ],
            check=True,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
        self.start()

    @property
    def url(self) -> str:
        return f"mariadb+pymysql://root@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        root = ["--user=root"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [
                _mariadbd(),
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={os.path.join(self.dir, 'mysqld.pid')}",
                f"--log-bin={os.path.join(self.datadir, 'binlog')}",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--server-id=1",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=8M",
                "--performance-schema=OFF",
                *root,
                *self.extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(60.0)
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS test")

    def _wait_ready(self, timeout: float) -> None:
        import pymysql

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited; see {self.dir}/server.log")
            try:
                pymysql.connect(
                    host="127.0.0.1", port=self.port, user="root", connect_timeout=1
                ).close()
                return
            except pymysql.err.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling a starting server, not a timed assertion

    def admin(self):  # type: ignore[no-untyped-def]
        import pymysql

        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", autocommit=True, connect_timeout=5
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
