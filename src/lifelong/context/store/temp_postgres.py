"""A throw-away PostgreSQL server on loopback, for tests and ``lifelong bench store``.

Uses the server binaries of Debian's ``postgresql`` package
(``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root,
so under uid 0 the server runs as the ``postgres`` user via ``runuser``, with
a data directory owned by that user. The socket lives in the temp dir, the
port is a free one, and ``stop()`` removes everything.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from lifelong.errors import ConfigError, StoreError


def find_pg_bin() -> Path:
    """The newest installed server's bin dir; a clear error if there is none."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise ConfigError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found",
            hint="run `make test` (it installs Debian's `postgresql` package), "
            "or `apt-get install postgresql`",
        )
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempPostgres:
    """``with TempPostgres() as pg: pg.url`` or ``start()``/``stop()``; ``new_database()`` per test."""

    def __init__(self, *, fsync: bool = True) -> None:
        self.fsync = fsync
        self.bin = find_pg_bin()
        self.root: Path | None = None
        self.port = 0
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise StoreError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}",
                hint="check the PostgreSQL installation (`make test` installs it)",
            )
        return proc

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> TempPostgres:
        # Our own mkdtemp in the system temp dir: the postgres user must be able
        # to reach it, which a root-only pytest tmp dir would not allow.
        self.root = Path(tempfile.mkdtemp(prefix="lifelong-pg-"))
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        if self._as_postgres:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        last: Exception | None = None
        for _ in range(5):  # a port picked free can be taken before the server binds it
            self.port = _free_port()
            opts = (f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1"
                    f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=50")
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", opts,
                          "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
                return self
            except StoreError as exc:
                last = exc
        self.stop()
        raise StoreError(f"could not start a temporary PostgreSQL server: {last}")

    def new_database(self) -> str:
        """Create an empty database and return its URL (a clean slate per test)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return self.database_url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(StoreError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
