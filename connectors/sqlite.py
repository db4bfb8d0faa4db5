"""SQLite backend: a database file opened read-only (``mode=ro`` URI), read through ADBC.

SQLite has no DATE or DECIMAL type and its LIKE ignores case, so the planner
is told not to push what SQLite would compute differently from DuckDB
(arithmetic on decimals, date functions, LIKE ...); results are cast back to
the declared column types.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlglot import exp

from fedsql.capabilities import Capabilities
from fedsql.connectors.backend import (
    BackendError,
    Interrupter,
    Running,
    adbc_running,
    arrow_type_of_declared,
    check_listed,
    plain_strings,
)
from fedsql.connectors.keys import in_list
from fedsql.connectors.kind import BackendConfig, BackendKind, database_file, no_options
from fedsql.lockdown import Setup
from fedsql.sqltypes import sql_type  # declared as is; typemap reads them back
from fedsql.wire import RemoteTable

# SQLite has no DATE or DECIMAL type (dates are ISO text, decimals binary doubles),
# its LIKE ignores case, it lacks or names differently several functions: what it
# would compute otherwise than DuckDB is not declared, so it is not pushed here.
CAPABILITIES = Capabilities(frozenset({"text_ordering", "correlated_subqueries"}))


# Rows the ADBC driver reads before it fixes the result's column types (see execute).
TYPED_ROWS = 262_144
_BATCH_ROWS = "adbc.sqlite.query.batch_rows"


class SQLiteBackend:
    kind = "sqlite"
    dialect = "sqlite"
    runs_as_written = False  # transpiled; key sets as IN lists
    default_schemas = ("", "main")
    capabilities = CAPABILITIES
    max_scans = 64  # a connection per query
    # Every correlated subquery runs once per outer row (no decorrelation).
    per_row_subqueries = frozenset({"scalar", "exists", "in"})
    transpiled_kinds = (exp.Date,)  # CAST(x AS DATE) is written DATE(x)

    def __init__(self, path: Path, only: tuple[str, ...] | None) -> None:
        import adbc_driver_sqlite.dbapi as sqlite

        if not path.exists():
            raise FileNotFoundError(f"SQLite database {path} does not exist")
        self._sqlite = sqlite
        self._uri = f"file:{path.resolve()}?mode=ro"
        con = self._connect()
        try:
            self._tables = self._catalog(con, only)
        finally:
            con.close()

    def _connect(self) -> Any:
        con = self._sqlite.connect(self._uri)
        with con.cursor() as cur:
            cur.execute("PRAGMA query_only = 1")
        return con

    @staticmethod
    def _catalog(con: Any, only: tuple[str, ...] | None) -> tuple[RemoteTable, ...]:
        with con.cursor() as cur:
            cur.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
            names = [r[0] for r in cur.fetchall()]
            wanted = {t.lower() for t in only} if only is not None else None
            out = []
            for name in names:
                if wanted is not None and name.lower() not in wanted:
                    continue
                quoted = '"' + name.replace('"', '""') + '"'
                cur.execute(f"PRAGMA table_info({quoted})")
                fields = [
                    pa.field(col, arrow_type_of_declared(typ or "TEXT"), nullable=not nn)
                    for _, col, typ, nn, _, _ in cur.fetchall()
                ]
                cur.execute(f"SELECT count(*) FROM {quoted}")
                count = cur.fetchone()[0]
                out.append(RemoteTable("", name, pa.schema(fields), int(count)))
        check_listed(wanted, {t.name.lower() for t in out})
        return tuple(out)

    def tables(self) -> tuple[RemoteTable, ...]:
        return self._tables

    def execute(
        self,
        sql: str,
        batch_rows: int,
        tables: dict[str, pa.Table] | None = None,
        interrupter: Interrupter | None = None,
    ) -> Running:
        con = self._connect()

        def release(_: bool) -> None:
            with contextlib.suppress(Exception):
                con.close()

        # The driver types each column from its first batch, and SQLite is typed per
        # value: a computed column NULL (or INTEGER) in the first batch and TEXT later
        # aborts the stream. One large first batch types from all its rows (NULLs
        # first, then text: text), so results up to TYPED_ROWS rows always conform.
        rows = str(max(batch_rows, TYPED_ROWS))
        return adbc_running(
            con, sql, interrupter, _backend_error, release, options={_BATCH_ROWS: rows}
        )

    def key_condition(self, probe: exp.Expr, values: list[Any]) -> exp.Expr:
        return in_list(probe, values)

    def close(self) -> None:
        pass


def _backend_error(e: Exception) -> BackendError:
    text = str(e).strip().splitlines()
    msg = text[0] if text else type(e).__name__
    low = msg.lower()
    # A column whose values change type past the first TYPED_ROWS rows: table scans
    # (the coordinator's retry for an unsupported fragment) read declared columns.
    unsupported = (
        "no such function" in low
        or "syntax error" in low
        or "near " in low
        or "type mismatch in column" in low
    )
    return BackendError(
        f"SQLite: {msg.split('] ', 1)[-1]}", user_error=True, unsupported=unsupported
    )


def _values(col: pa.Array) -> list[object]:
    if pa.types.is_decimal(col.type):
        return [None if v is None else float(v) for v in col.to_pylist()]
    if pa.types.is_date(col.type) or pa.types.is_timestamp(col.type):
        return [
            None if v is None else v.isoformat(sep=" ") if hasattr(v, "hour") else v.isoformat()
            for v in col.to_pylist()
        ]
    return list(col.to_pylist())


def write_database(path: Path, tables: dict[str, Path]) -> Path:
    """A SQLite file at ``path`` holding each ``name -> parquet file``, with the column
    types of :func:`sql_type`."""
    import sqlite3

    import pyarrow.parquet as pq

    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        for name, src in tables.items():
            t = plain_strings(pq.read_table(src))
            cols = ", ".join(f'"{f.name}" {sql_type(f.type)}' for f in t.schema)
            con.execute(f'CREATE TABLE "{name}" ({cols})')
            marks = ", ".join("?" for _ in t.schema)
            for batch in t.to_batches(50_000):
                rows = zip(*(_values(c) for c in batch.columns), strict=True)
                con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
        con.commit()
    finally:
        con.close()
    tmp.replace(path)
    return path


def _open(cfg: BackendConfig, setup: Setup | None, limits: dict[str, Any]) -> SQLiteBackend:
    assert cfg.path is not None
    return SQLiteBackend(cfg.path, cfg.tables)


KIND = BackendKind(
    name="sqlite",
    what="a SQLite database file, opened read-only",
    keys={"path": str},
    required=("path",),
    options=no_options,
    open=_open,
    sql_type=sql_type,
    sample=database_file(".sqlite", write_database),
)
