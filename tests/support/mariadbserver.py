"""A private MariaDB server with the binary log on, in a temporary directory.

The binlog source's tests need a server whose settings (``binlog_format``,
purged logs) they may change without disturbing the shared server, so
:class:`ThrowawayMariaDB` installs one with ``mariadb-install-db`` and runs
``mariadbd`` on a free port.  Skipped when the binaries are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

from .mysqlprivate import PrivateServer
from .pgserver import free_port

__all__ = ["ThrowawayMariaDB", "have_mariadb"]


def have_mariadb() -> bool:
    return bool(shutil.which("mariadb-install-db") and shutil.which("mariadbd"))


def _mariadbd() -> str:
    return shutil.which("mariadbd") or "/usr/sbin/mariadbd"


class ThrowawayMariaDB(PrivateServer):
    """A private ``mariadbd`` (binlog on, ROW format); :meth:`destroy` removes it all."""

    program = "mariadbd"

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="sqlnotify-mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.port = free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.dir, "server.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115
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
