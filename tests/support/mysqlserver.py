"""A private MySQL server (not MariaDB), run from a Debian root in a chroot.

Debian 12 packages no MySQL; ``.ci/run`` (``install_mysql``) debootstraps
Debian sid with ``mysql-server-core`` into ``SQLNOTIFY_TEST_MYSQL_ROOT``
(default ``/opt/sqlnotify-mysql/root``).  :class:`ThrowawayMySQL`
initializes a data directory inside that root under a unique name
(``--initialize-insecure``: ``root`` without a password) and runs
``mysqld`` in it on a free port, with the binary log and GTIDs as the
server ships them (on), ``binlog_row_metadata=FULL`` added for the binlog
source.  ``chroot`` needs root: elsewhere the server is unavailable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

from .mysqlprivate import PrivateServer
from .pgserver import free_port

__all__ = ["DEFAULT_MYSQL_ROOT", "ThrowawayMySQL", "mysql_missing", "mysql_root"]

DEFAULT_MYSQL_ROOT = "/opt/sqlnotify-mysql/root"
_MYSQLD = "/usr/sbin/mysqld"


def mysql_root() -> str:
    return os.environ.get("SQLNOTIFY_TEST_MYSQL_ROOT", DEFAULT_MYSQL_ROOT)


def mysql_missing() -> str | None:
    """Why no private MySQL can run here (``None``: it can)."""
    root = mysql_root()
    if not os.access(root + _MYSQLD, os.X_OK):
        return (
            f"no MySQL server at {root}{_MYSQLD} (SQLNOTIFY_TEST_MYSQL_ROOT; .ci/run's"
            " install_mysql debootstraps Debian sid with mysql-server-core there)"
        )
    if os.geteuid() != 0 or shutil.which("chroot") is None:
        return f"running MySQL from {root} needs chroot as root (user id {os.geteuid()})"
    return None


class ThrowawayMySQL(PrivateServer):
    """A private ``mysqld`` (binlog on, ROW format, GTIDs on); :meth:`destroy` removes it all."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.root = os.path.abspath(mysql_root())
        os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="sqlnotify-mysql-", dir=os.path.join(self.root, "tmp"))
        #: The directory as the server sees it, inside the root.
        self.inner = "/" + os.path.relpath(self.dir, self.root)
        self.datadir = f"{self.inner}/data"
        self.log_path = os.path.join(self.dir, "server.log")
        self.port = free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        try:
            subprocess.run(
                [
                    "chroot",
                    self.root,
                    _MYSQLD,
                    "--no-defaults",
                    "--initialize-insecure",
                    "--user=root",
                    f"--datadir={self.datadir}",
                ],
                check=True,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.destroy()
            raise RuntimeError(
                f"mysqld --initialize-insecure failed ({exc}); see {self.log_path}"
            ) from exc
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "chroot",
                self.root,
                _MYSQLD,
                "--no-defaults",
                "--user=root",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.inner}/mysqld.sock",
                f"--pid-file={self.inner}/mysqld.pid",
                "--mysqlx=OFF",
                "--server-id=1",
                "--secure-file-priv=",
                "--binlog-row-metadata=FULL",
                "--innodb-buffer-pool-size=32M",
                "--performance-schema=OFF",
                # A throwaway server: commits need not reach the disk.
                "--sync-binlog=0",
                "--innodb-flush-log-at-trx-commit=0",
                *self.extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(60.0)
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS test")
