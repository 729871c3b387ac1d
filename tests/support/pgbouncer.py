"""A private PgBouncer in transaction mode, in front of the test server.

:class:`Bouncer` writes its own ini and userlist in a temporary directory,
starts ``pgbouncer`` on a free port (no daemon, no system service) and
stops it with :meth:`stop`.  Every database name is forwarded to the test
server (``* = host=... port=...``), so a test's URL only changes its port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from .env import unavailable
from .pgserver import free_port


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` executable, or ``None`` when it is not installed."""
    found = shutil.which("pgbouncer")
    if found is None and os.path.exists("/usr/sbin/pgbouncer"):
        found = "/usr/sbin/pgbouncer"
    return found


def _answers(port: int) -> bool:
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Bouncer:
    """One PgBouncer process in ``pool_mode`` (default ``transaction``) before ``server``.

    :param server: the URL of the PostgreSQL server it forwards to.
    """

    def __init__(self, server: sa.URL, *, pool_mode: str = "transaction") -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.server = server
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sqlnotify-pgbouncer-")
        user = server.username or "postgres"
        ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(os.path.join(self.dir, "userlist.txt"), "w") as users:
            users.write(f'"{user}" ""\n')
        with open(ini, "w") as conf:
            conf.write(
                "[databases]\n"
                f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
                "[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
                f"unix_socket_dir = {self.dir}\n"
                "auth_type = trust\n"
                f"auth_file = {os.path.join(self.dir, 'userlist.txt')}\n"
                f"pool_mode = {pool_mode}\n"
                "default_pool_size = 4\nmax_client_conn = 200\n"
                f"logfile = {os.path.join(self.dir, 'pgbouncer.log')}\n"
                f"pidfile = {os.path.join(self.dir, 'pgbouncer.pid')}\n"
                "ignore_startup_parameters = extra_float_digits\n"
            )
        args = [binary, ini]
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root: run it as the postgres user.
            shutil.chown(self.dir, "postgres", "postgres")
            for name in os.listdir(self.dir):
                shutil.chown(os.path.join(self.dir, name), "postgres", "postgres")
            args = [binary, "-u", "postgres", ini]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15.0
        while not _answers(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                self.stop()
                raise RuntimeError(f"pgbouncer did not start: {err or self.log()}")
            time.sleep(0.05)  # polling a port that is not open yet

    def url(self) -> sa.URL:
        """The server's URL, through this pooler."""
        return self.server.set(host="127.0.0.1", port=self.port)

    def log(self) -> str:
        """What pgbouncer logged so far."""
        try:
            with open(os.path.join(self.dir, "pgbouncer.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the process (bounded) and remove its directory."""
        proc = self._proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10.0)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module", name="bouncer")
def bouncer_fixture(pg_url: str) -> Iterator[Bouncer]:
    """A private PgBouncer in transaction mode before the test server (one per module)."""
    if pgbouncer_binary() is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        unavailable(message)
    pooler = Bouncer(sa.make_url(pg_url))
    yield pooler
    pooler.stop()


@pytest.fixture(name="pooled_engine")
def pooled_engine_fixture(bouncer: Bouncer) -> Iterator[sa.Engine]:
    """An engine whose every connection goes through the ``bouncer`` fixture."""
    engine = sa.create_engine(bouncer.url(), pool_size=2, max_overflow=4)
    yield engine
    engine.dispose()
