"""Files backend: a directory of Parquet/CSV files, each file one table.

The files are queried through an in-memory DuckDB with one view per file.
Only that directory is readable (``allowed_directories``); everything else
external is disabled and the configuration locked.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from fedsql.connectors.duckdb import DuckDBEngine, Setup, catalog_of, lock_down

_READERS = {".parquet": "read_parquet", ".csv": "read_csv_auto"}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def open_files(
    directory: Path, tables: tuple[str, ...] | None, setup: Setup | None = None
) -> DuckDBEngine:
    if not directory.is_dir():
        raise FileNotFoundError(f"files backend: {directory} is not a directory")
    directory = directory.resolve()
    con = duckdb.connect(":memory:")
    row_counts: dict[str, int] = {}
    found = 0
    for f in sorted(directory.iterdir()):
        reader = _READERS.get(f.suffix.lower())
        if reader is None or not f.is_file():
            continue
        name = f.stem
        con.execute(
            f"CREATE VIEW {_quote_ident(name)} AS SELECT * FROM {reader}({_quote_str(str(f))})"
        )
        if f.suffix.lower() == ".parquet":
            row_counts[name] = pq.read_metadata(f).num_rows
        found += 1
    if not found:
        raise FileNotFoundError(f"files backend: no *.parquet or *.csv files in {directory}")
    con.execute(f"SET allowed_directories = [{_quote_str(str(directory) + '/')}]")
    cat = catalog_of(con, tables, row_counts)
    if setup is not None:
        setup(con)
    lock_down(con)
    return DuckDBEngine(con, cat, "files")
