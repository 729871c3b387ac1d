"""What the private MariaDB and MySQL servers of the tests share: waiting for one to
answer, its admin connection, stopping it, removing it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from typing import IO, Any

__all__ = ["PrivateServer"]


class PrivateServer:
    """A server process of the tests' own in ``dir``, on ``port``, logging to ``log_path``."""

    #: The server program's name, for messages.
    program = "mysqld"
    dir: str
    port: int
    log_path: str
    proc: subprocess.Popen[bytes] | None
    _log: IO[bytes]

    def _wait_ready(self, timeout: float) -> None:
        import pymysql

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.program} exited with {self.proc.returncode} while starting;"
                    f" see {self.log_path}"
                )
            try:
                pymysql.connect(
                    host="127.0.0.1", port=self.port, user="root", connect_timeout=1
                ).close()
                return
            except pymysql.err.Error as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.program} did not answer on 127.0.0.1:{self.port} within"
                        f" {timeout:g}s ({exc}); see {self.log_path}"
                    ) from exc
                time.sleep(0.05)  # polling a starting server, not a timed assertion

    def admin(self) -> Any:
        """A PyMySQL connection as ``root``, autocommit."""
        import pymysql

        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", autocommit=True, connect_timeout=5
        )

    def stop(self) -> None:
        """Shut the server down (SIGTERM: a clean shutdown), killing it after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        with contextlib.suppress(OSError):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
