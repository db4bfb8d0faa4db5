"""Files backend: a directory of Parquet/CSV files, each file one table.

The files are queried through an in-memory DuckDB with one view per file.
Only the exposed files are readable (``allowed_paths``: an unexposed file in
the same directory is not), everything else external is disabled and the
configuration locked. Fragments name the views, never the files: a path is not
a table name the fragment language binds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from fedsql.connectors.duckdb import DuckDBEngine, catalog_of
from fedsql.lockdown import Setup, open_locked, quote_string
from fedsql.wire import RemoteTable

_READERS = {".parquet": "read_parquet", ".csv": "read_csv_auto"}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_files(
    directory: Path, tables: tuple[str, ...] | None, setup: Setup | None = None, **limits: Any
) -> DuckDBEngine:
    if not directory.is_dir():
        raise FileNotFoundError(f"files backend: {directory} is not a directory")
    directory = directory.resolve()
    files = {
        f.stem: f
        for f in sorted(directory.iterdir())
        if f.suffix.lower() in _READERS and f.is_file()
    }
    if not files:
        raise FileNotFoundError(f"files backend: no *.parquet or *.csv files in {directory}")
    found: list[tuple[RemoteTable, ...]] = []

    def prepare(con: duckdb.DuckDBPyConnection) -> None:
        row_counts: dict[str, int] = {}
        for name, f in files.items():
            reader = _READERS[f.suffix.lower()]
            con.execute(
                f"CREATE VIEW {_quote_ident(name)} AS "
                f"SELECT * FROM {reader}({quote_string(str(f))})"
            )
            if f.suffix.lower() == ".parquet":
                row_counts[name] = pq.read_metadata(f).num_rows
        cat = catalog_of(con, tables, row_counts)
        exposed = [files[t.name] for t in cat]
        for name in files.keys() - {t.name for t in cat}:
            con.execute(f"DROP VIEW {_quote_ident(name)}")  # not exposed: not there at all
        paths = ", ".join(quote_string(str(f)) for f in exposed)
        con.execute(f"SET allowed_paths = [{paths}]")
        found.append(cat)
        if setup is not None:
            setup(con)

    con = open_locked(":memory:", setup=prepare, **limits)
    return DuckDBEngine(con, found[0], "files")
