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
from urllib.parse import quote

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
    """``locale``: what ``initdb --locale`` gets; ``"C"`` (the default: byte order,
    as DuckDB sorts text, for benchmarks) or ``None`` for initdb's default, the
    environment's locale (``C.UTF-8`` here), as agencies' servers run.

    Authentication is ``trust`` on loopback, except for roles given to
    :meth:`require_password`.
    """

    def __init__(self, port: int | None = None, locale: str | None = "C") -> None:
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
            *([f"--locale={locale}"] if locale is not None else []),
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

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{quote(user, safe='')}@127.0.0.1:{self.port}/{quote(database)}"

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser, each in its own transaction (autocommit:
        CREATE DATABASE cannot run inside one)."""
        import adbc_driver_postgresql.dbapi as pg

        with pg.connect(self.dsn(database)) as con:
            con.adbc_connection.set_autocommit(True)
            with con.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def create_reader(
        self, database: str, tables: tuple[str, ...] | list[str], role: str | None = None
    ) -> str:
        """A least-privilege LOGIN role for a connector (as the README tells agencies):
        CONNECT on ``database``, USAGE on the schemas of ``tables`` (``name`` or
        ``schema.name``) and SELECT on exactly those; returns its DSN (no password:
        the server trusts loopback). ``role`` defaults to ``<database>_reader``.

        PUBLIC's default CONNECT and TEMPORARY on the database are revoked: every
        agency of a local federation shares this server, and one agency's role has
        no business in another's database. (TEMPORARY would be harmless to the
        connector, whose sessions are read-only and so cannot create temporary
        tables, which is why the connector's role check does not flag it.)
        """
        role = role or f"{database}_reader"
        schemas = sorted({t.split(".", 1)[0] if "." in t else "public" for t in tables})
        names = ", ".join(_qualified(t) for t in tables)
        self.execute(
            f"DO $$ BEGIN CREATE ROLE {_ident(role)} LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC",
            f"GRANT CONNECT ON DATABASE {_ident(database)} TO {_ident(role)}",
        )
        self.execute(
            *(f"GRANT USAGE ON SCHEMA {_ident(s)} TO {_ident(role)}" for s in schemas),
            *([f"GRANT SELECT ON {names} TO {_ident(role)}"] if tables else []),
            database=database,
        )
        return self.dsn(database, role)

    def require_password(self, role: str) -> None:
        """Make ``role`` authenticate with its password (scram-sha-256) on loopback
        TCP; other roles keep ``trust``. pg_hba.conf is read top down, first match
        wins (PostgreSQL docs, 21.1 The pg_hba.conf File)."""
        hba = self.data / "pg_hba.conf"
        lines = "".join(
            f"host all {_ident(role)} {net} scram-sha-256\n" for net in ("127.0.0.1/32", "::1/128")
        )
        hba.write_text(lines + hba.read_text())
        self._run("pg_ctl", "-D", str(self.data), "reload")
        # The postmaster re-reads pg_hba.conf on SIGHUP, a moment later: wait until
        # the role is asked for its password.
        import adbc_driver_postgresql.dbapi as pg

        end = time.monotonic() + 10
        while True:
            try:
                pg.connect(self.dsn(user=role)).close()
            except Exception as e:
                if "password" in str(e):
                    return
                raise FedSQLError(f"cannot connect as {role}: {str(e).splitlines()[0]}") from None
            if time.monotonic() > end:
                raise FedSQLError(f"the server did not start asking {role} for a password")
            time.sleep(0.05)

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


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(table: str) -> str:
    return ".".join(_ident(part) for part in table.split(".", 1))
