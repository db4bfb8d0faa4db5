"""The peers fedsql is measured against, on the same PostgreSQL agencies.

- ``attach``: DuckDB 1.4 attaching each agency's database with its postgres
  extension (the PyPI wheel ``duckdb-ext-postgres`` ships the extension file for
  ``duckdb==1.4.4``; both live in their own virtualenv under
  ``~/.cache/fedsql/peers``, made on first use), one view per table so the
  queries run unchanged.
- ``fdw``: postgres_fdw from a coordinator database on the same server, one
  foreign server per agency (``fetch_size`` 10000, foreign tables ANALYZEd so its
  planner has statistics), queried over the server's Unix socket.

Each peer's time is the median of the timed runs, which connect directly; its
bytes are the PostgreSQL wire bytes of one extra run through a
:class:`~fedsql.bench.meter.ByteMeter`, whose result is the one checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fedsql.bench.compare import median_time
from fedsql.bench.meter import ByteMeter
from fedsql.errors import FedSQLError
from fedsql.pgserver import PostgresServer

PEER_DIR = Path.home() / ".cache" / "fedsql" / "peers" / "duckdb-1.4.4"
ATTACH_PACKAGES = ("duckdb==1.4.4", "duckdb-ext-postgres")
FDW_DB = "fedsql_fdw_coordinator"
SLOW_SECONDS = 10.0  # a peer query slower than this is timed once, not `runs` times


@dataclass
class PeerRun:
    seconds: float  # median of the timed runs; NaN when the query failed
    bytes: int  # PostgreSQL wire bytes sent to the peer (one metered run)
    ok: bool
    error: str | None = None
    timed_runs: int = 0


def attach_python(progress: Callable[[str], None]) -> tuple[Path, Path]:
    """(python, extension file) of the DuckDB-attach peer's virtualenv, made if missing."""
    python = PEER_DIR / "bin" / "python"
    stamp = PEER_DIR / ".installed"
    if not stamp.exists():
        progress(f"installing the DuckDB-attach peer ({', '.join(ATTACH_PACKAGES)}) in {PEER_DIR}")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(PEER_DIR)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *ATTACH_PACKAGES],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise FedSQLError(
                f"could not install the DuckDB-attach peer: {detail.strip()[-300:]}"
            ) from e
        stamp.touch()
    found = sorted(PEER_DIR.glob("lib/python*/site-packages/duckdb_ext/**/postgres_scanner*"))
    if not found:
        raise FedSQLError(
            f"the postgres extension file is missing from {PEER_DIR}; remove that "
            "directory to reinstall the peer"
        )
    return python, found[0]


def run_attach(
    pg: PostgresServer,
    agencies: dict[str, tuple[str, ...]],
    queries: dict[int, str],
    runs: int,
    work: Path,
    progress: Callable[[str], None],
) -> Iterator[tuple[int, PeerRun, pa.Table | None]]:
    """Yield (query, run, result) for the DuckDB-attach peer, one query at a time."""
    python, extension = attach_python(progress)
    out_dir = work / "peer-attach"
    out_dir.mkdir(exist_ok=True)
    args = {
        "extension": str(extension),
        "pg_port": pg.port,
        "agencies": {a: list(t) for a, t in agencies.items()},
        "queries": {str(n): sql for n, sql in queries.items()},
        "runs": runs,
        "out_dir": str(out_dir),
    }
    script = Path(__file__).with_name("peer_attach.py")
    proc = subprocess.Popen(
        [str(python), str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(args))
    proc.stdin.close()
    seen = set()
    try:
        for line in proc.stdout:
            row = json.loads(line)
            n = int(row["query"])
            seen.add(n)
            if "error" in row:
                yield n, PeerRun(float("nan"), 0, False, row["error"]), None
                continue
            result = pq.read_table(row["result"])
            yield n, PeerRun(row["seconds"], int(row["bytes"]), True, None, runs), result
    except BaseException:  # interrupted: the peer must not run on
        proc.kill()
        raise
    finally:
        proc.wait(timeout=60)
    if proc.returncode != 0:
        err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
        for n in queries:
            if n not in seen:
                yield n, PeerRun(float("nan"), 0, False, (err or ["peer exited"])[-1][:300]), None


def setup_fdw(pg: PostgresServer, agencies: dict[str, tuple[str, ...]]) -> str:
    """A coordinator database with postgres_fdw foreign tables for every agency table;
    returns its DSN (over the server's Unix socket, so only the fdw's own traffic is TCP)."""
    import adbc_driver_postgresql.dbapi as pgdb

    pg.create_database(FDW_DB)
    dsn = f"postgresql:///{FDW_DB}?host={pg.root}&port={pg.port}&user=postgres"
    with pgdb.connect(dsn) as con:
        con.adbc_connection.set_autocommit(True)
        with con.cursor() as cur:
            cur.execute("CREATE EXTENSION postgres_fdw")
            for agency, tables in agencies.items():
                cur.execute(
                    f"CREATE SERVER {agency} FOREIGN DATA WRAPPER postgres_fdw OPTIONS "
                    f"(host '127.0.0.1', port '{pg.port}', dbname '{agency}', fetch_size '10000')"
                )
                cur.execute(
                    f"CREATE USER MAPPING FOR postgres SERVER {agency} OPTIONS (user 'postgres')"
                )
                listed = ", ".join(f'"{t}"' for t in tables)
                cur.execute(
                    f"IMPORT FOREIGN SCHEMA public LIMIT TO ({listed}) FROM SERVER {agency} "
                    "INTO public"
                )
            cur.execute("ANALYZE")
    return dsn


def run_fdw(
    pg: PostgresServer,
    agencies: dict[str, tuple[str, ...]],
    queries: dict[int, str],
    runs: int,
    progress: Callable[[str], None],
    timeout_s: float = 300.0,
) -> Iterator[tuple[int, PeerRun, pa.Table | None]]:
    """Yield (query, run, result) for postgres_fdw. The first, metered run gives the
    checked result and the bytes; queries slower than :data:`SLOW_SECONDS` are then
    timed once, the rest ``runs`` times."""
    import adbc_driver_postgresql.dbapi as pgdb

    progress("postgres_fdw: creating the coordinator database and ANALYZE-ing foreign tables")
    dsn = setup_fdw(pg, agencies)
    with ByteMeter(pg.port) as meter, pgdb.connect(dsn) as con:
        con.adbc_connection.set_autocommit(True)
        with con.cursor() as cur:
            cur.execute(f"SET statement_timeout = '{int(timeout_s * 1000)}'")

            def route(port: int) -> None:
                for agency in agencies:
                    cur.execute(f"ALTER SERVER {agency} OPTIONS (SET port '{port}')")

            def fetch(sql: str) -> pa.Table:
                cur.execute(sql)
                return cur.fetch_arrow_table()

            for n, text in queries.items():
                sql = text.strip().rstrip(";")  # ADBC wraps it in COPY (...)
                try:
                    route(meter.port)
                    meter.reset()
                    first, result = median_time(fetch, sql, 1)
                    nbytes = meter.reset()
                    route(pg.port)
                    k = 1 if first > SLOW_SECONDS else runs
                    secs, _ = median_time(fetch, sql, k)
                    yield n, PeerRun(secs, nbytes, True, None, k), result
                except pgdb.Error as e:
                    msg = str(e).splitlines()[0][:300]
                    if "statement timeout" in msg:
                        msg = f"over the {timeout_s:.0f} s statement timeout"
                    try:
                        route(pg.port)
                    except pgdb.Error:
                        pass
                    yield n, PeerRun(float("nan"), 0, False, msg), None


def conform_result(got: pa.Table, want: pa.Table) -> pa.Table:
    """A peer's result with the oracle's column names (PostgreSQL names unaliased
    expressions its own way) and, where the cast is exact, its types."""
    if got.num_columns != want.num_columns:
        return got
    got = got.rename_columns(want.column_names)
    cols = []
    for col, field in zip(got.columns, want.schema, strict=True):
        try:
            cols.append(col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cols.append(col)
    return pa.Table.from_arrays(cols, names=want.column_names)
