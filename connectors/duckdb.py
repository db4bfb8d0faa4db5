"""DuckDB backend: a database file opened read-only, the embedded default.

Defense in depth beside the fragment check: the database is opened read-only,
external access (files, network, extensions) is disabled and the configuration
is locked, so even a fragment that slipped past the check could not read a
file or change a setting (DuckDB docs, "Securing DuckDB").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from fedsql.capabilities import Capabilities
from fedsql.connectors.backend import (
    BackendError,
    GuardedReader,
    Interrupter,
    Running,
    check_listed,
)
from fedsql.connectors.keys import in_list
from fedsql.connectors.kind import BackendConfig, BackendKind, database_file, no_options
from fedsql.lockdown import Setup, open_locked
from fedsql.sqltypes import sql_type
from fedsql.wire import RemoteTable

DEFAULT_BATCH_ROWS = 122_880  # DuckDB's row-group size: batches come out whole


class DuckDBEngine:
    """Runs fragments on one DuckDB database; each fragment gets its own cursor."""

    kind = "duckdb"
    dialect = "duckdb"
    runs_as_written = True  # the fragment language is DuckDB's SQL
    default_schemas = ("", "main")
    capabilities = Capabilities()  # it is DuckDB: everything
    max_scans = 64
    per_row_subqueries: frozenset[str] = frozenset()  # DuckDB decorrelates them all

    def __init__(
        self, con: duckdb.DuckDBPyConnection, tables: tuple[RemoteTable, ...], kind: str
    ) -> None:
        self._con = con
        self._tables = tables
        self.kind = kind

    def tables(self) -> tuple[RemoteTable, ...]:
        return self._tables

    def execute(
        self,
        sql: str,
        batch_rows: int,
        tables: dict[str, pa.Table] | None = None,
        interrupter: Interrupter | None = None,
    ) -> Running:
        cur = self._con.cursor()
        for name, table in (tables or {}).items():
            cur.register(name, table)  # this cursor's alone
        if interrupter is not None:
            interrupter.arm(cur.interrupt, repeat=True)
        try:
            rel = cur.sql(sql)
            # The query starts here (up to its first batch: all of it, for an
            # aggregate); the interrupter armed above can stop it meanwhile. Asking
            # for the schema first (a LIMIT 0 run) cost 1.7 ms a fragment, more than
            # a small fragment's whole run.
            stream = rel.to_arrow_reader(batch_rows or DEFAULT_BATCH_ROWS)
            # Names from the relation: it de-duplicates repeated ones, a stream does not.
            schema = pa.schema(
                [f.with_name(n) for f, n in zip(stream.schema, rel.columns, strict=True)],
                stream.schema.metadata,
            )
        except duckdb.Error as e:
            cur.close()
            raise backend_error(e) from None

        def renamed() -> Iterator[pa.RecordBatch]:
            for batch in stream:
                yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)

        reader = (
            stream
            if schema.equals(stream.schema, check_metadata=True)
            else pa.RecordBatchReader.from_batches(schema, renamed())
        )
        return Running(
            reader=GuardedReader(reader, backend_error, (duckdb.Error, pa.ArrowException)),
            cancel=cur.interrupt,
            close=cur.close,
        )

    def key_condition(self, probe: exp.Expr, values: list[Any]) -> exp.Expr:
        return in_list(probe, values)  # not used: key sets are joined as Arrow tables

    def close(self) -> None:
        self._con.close()


_USER_ERRORS = tuple(
    getattr(duckdb, n)
    for n in (
        "BinderException",
        "ParserException",
        "CatalogException",
        "ConversionException",
        "InvalidInputException",
        "OutOfRangeException",
        "NotImplementedException",
        "PermissionException",
        "SyntaxException",
        "TypeMismatchException",
    )
    if hasattr(duckdb, n)
)


_DATA_ERRORS = tuple(
    getattr(duckdb, n)
    for n in (
        "ConversionException",
        "OutOfRangeException",
        "InvalidInputException",
        "ConstraintException",
        "TypeMismatchException",
    )
    if hasattr(duckdb, n)
)
_LITERAL = re.compile(r"'(?:[^']|'')*'")


def backend_error(e: Exception) -> BackendError:
    """First line of the backend's message; for errors raised by a *value* (a failed
    cast, an overflow) the quoted value is cut out: it may come from a masked column
    or a row the caller may not see, and must not leave the agency."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, duckdb.OutOfMemoryException):
        return BackendError(first, user_error=False, limit="max_memory")
    if isinstance(e, _DATA_ERRORS):
        first = _LITERAL.sub("'…'", first)
    return BackendError(first, user_error=isinstance(e, _USER_ERRORS))


def catalog_of(
    con: duckdb.DuckDBPyConnection,
    only: tuple[str, ...] | None,
    row_counts: dict[str, int] | None = None,
) -> tuple[RemoteTable, ...]:
    """Tables and views of the open database, with Arrow schemas and estimates."""
    rows = con.execute(
        """
        SELECT schema_name, table_name, estimated_size FROM duckdb_tables()
        WHERE NOT internal AND NOT temporary
        UNION ALL
        SELECT schema_name, view_name, NULL FROM duckdb_views()
        WHERE NOT internal AND NOT temporary
        ORDER BY 1, 2
        """
    ).fetchall()
    wanted = {t.lower() for t in only} if only is not None else None
    out = []
    seen = set()
    for schema, name, est in rows:
        shown_schema = "" if schema == "main" else schema
        full = f"{shown_schema}.{name}" if shown_schema else name
        if wanted is not None and full.lower() not in wanted and name.lower() not in wanted:
            continue
        qname = f'"{schema}"."{name}"'
        arrow_schema = con.sql(f"SELECT * FROM {qname} LIMIT 0").to_arrow_table().schema
        if row_counts and name in row_counts:
            est = row_counts[name]
        out.append(RemoteTable(shown_schema, name, arrow_schema, -1 if est is None else int(est)))
        seen.add(full.lower())
        seen.add(name.lower())
    check_listed(wanted, seen)
    return tuple(out)


def open_duckdb(
    path: Path, tables: tuple[str, ...] | None, setup: Setup | None = None, **limits: Any
) -> DuckDBEngine:
    """Open a DuckDB database file read-only and lock it down.

    ``setup`` runs before the lock (it registers the node's own functions);
    ``limits``: memory and spill limits for :func:`fedsql.lockdown.open_locked`.
    """
    if not path.exists():
        raise FileNotFoundError(f"DuckDB database {path} does not exist")
    found: list[tuple[RemoteTable, ...]] = []

    def prepare(con: duckdb.DuckDBPyConnection) -> None:
        found.append(catalog_of(con, tables))
        if setup is not None:
            setup(con)

    con = open_locked(path, read_only=True, setup=prepare, **limits)
    return DuckDBEngine(con, found[0], "duckdb")


def write_database(path: Path, tables: dict[str, Path]) -> Path:
    """A DuckDB file at ``path`` holding each ``name -> parquet file`` as a table
    (written next to it, then moved, so a reader never sees half of it)."""
    import pyarrow.parquet as pq

    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)

    def load(con: duckdb.DuckDBPyConnection) -> None:
        for name, src in tables.items():
            con.register("__fedsql_sample", pq.read_table(src))
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM __fedsql_sample')
            con.unregister("__fedsql_sample")

    open_locked(tmp, setup=load).close()
    tmp.replace(path)
    return path


def _open(cfg: BackendConfig, setup: Setup | None, limits: dict[str, Any]) -> DuckDBEngine:
    assert cfg.path is not None
    return open_duckdb(cfg.path, cfg.tables, setup, **limits)


KIND = BackendKind(
    name="duckdb",
    what="a DuckDB database file, opened read-only",
    keys={"path": str},
    required=("path",),
    options=no_options,
    open=_open,
    sql_type=sql_type,
    sample=database_file(".duckdb", write_database),
)
