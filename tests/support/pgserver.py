"""The one way the tests start a throwaway PostgreSQL server.

The binaries are found through ``pg_config --bindir``, else in the newest
``/usr/lib/postgresql/<version>/bin``; no version is written down here.
:class:`ThrowawayPostgres` runs a private server in a temporary directory:
the session fixture ``pg_url`` starts one when no server answers, and the
tests that restart or stop a server start their own.  initdb refuses to run
as root, so under root the server runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile

#: Under CI a missing PostgreSQL is an error, not a reason to skip.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has_server(bindir: str) -> bool:
    return all(os.path.exists(os.path.join(bindir, name)) for name in ("initdb", "pg_ctl"))


def _version(bindir: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir))


def pg_bindir() -> str | None:
    """The folder of the local PostgreSQL server binaries, or ``None`` when there are none."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            )
            if _has_server(done.stdout.strip()):
                return done.stdout.strip()
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if _has_server(d)]
    return max(found, key=_version) if found else None


def _as_root() -> bool:
    return os.geteuid() == 0


class ThrowawayPostgres:
    """A private PostgreSQL server in a temporary directory, removed by :meth:`destroy`."""

    def __init__(self, *, standby: bool = False) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (pg_config --bindir)")
        self.bindir = bindir
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sqlnotify-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        try:
            if _as_root():
                os.chmod(self.dir, 0o755)
                shutil.chown(self.dir, "postgres", "postgres")
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
            with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
                conf.write(
                    f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.dir}'\nfsync = off\n"
                    "synchronous_commit = off\nfull_page_writes = off\n"
                )
            if standby:
                signal_file = os.path.join(self.data, "standby.signal")
                open(signal_file, "w").close()
                if _as_root():
                    shutil.chown(signal_file, "postgres", "postgres")
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @staticmethod
    def available() -> bool:
        """Whether a server can be started here: binaries, and a way not to run as root."""
        if pg_bindir() is None:
            return False
        return not _as_root() or bool(shutil.which("runuser"))

    def _run(self, program: str, *args: str) -> None:
        argv = [os.path.join(self.bindir, program), *args]
        if _as_root():
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(
            argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
