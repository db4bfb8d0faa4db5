"""A throwaway PostgreSQL server on loopback, for tests, the demo and benchmarks.

``initdb`` + ``pg_ctl`` in a temporary directory on a free port; stopped and
removed by :meth:`PostgresServer.stop`. PostgreSQL refuses to run as root, so
as root every server command runs as the ``postgres`` OS user (``runuser``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from fedsql.errors import FedSQLError

PG_BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found; install them "
    "with `apt-get install postgresql-15` (Debian) or set FEDSQL_PG_BIN to their "
    "directory"
)


def pg_bin() -> Path:
    env = os.environ.get("FEDSQL_PG_BIN")
    candidates = [Path(env)] if env else []
    candidates += [Path(d) for d in PG_BIN_DIRS]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).parent)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    raise FedSQLError(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, port: int | None = None) -> None:
        self.bin = pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="fedsql-pg-"))
        self.data = self.root / "data"
        self.port = port or free_port()
        self.as_postgres = os.geteuid() == 0
        self._started = False
        if self.as_postgres:
            self.root.chmod(0o755)
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        log = self.root / "server.log"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200",
            "start",
        )
        self._started = True

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise FedSQLError(f"{tool} failed: {(r.stderr or r.stdout).strip()[-500:]}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import adbc_driver_postgresql.dbapi as pg

        with pg.connect(self.dsn()) as con:
            con.adbc_connection.set_autocommit(True)  # CREATE DATABASE cannot run in a txn
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if self._started:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            except FedSQLError:
                pass
            self._started = False
        for _ in range(3):
            try:
                shutil.rmtree(self.root)
                break
            except OSError:
                time.sleep(0.2)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
