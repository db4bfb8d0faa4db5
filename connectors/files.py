"""Files backend: a directory of Parquet/CSV files, each file one table.

The files are queried through an in-memory DuckDB with one view per file.
Only the exposed files are readable (``allowed_paths``: an unexposed file in
the same directory is not), everything else external is disabled and the
configuration locked. Fragments name the views, never the files: a path is not
a table name the fragment language binds.

Symlinks (issue 15, item 9): a file in the directory may be a symlink the agency
placed there (a common way to expose data kept elsewhere). The node follows
exactly those: each exposed file is resolved once, at start, to its real target,
and the view reads — and ``allowed_paths`` allows — those targets alone, so a
link re-pointed later changes nothing until a restart. An unexposed link is not
followed at all, and since DuckDB resolves a path before it checks
``allowed_paths``, no name (link or not) reaches a file that is not an exposed
target: listing the link's own path instead is what made DuckDB refuse exposed
symlinked files ("Permission Error: Cannot access file"). A
link that dangles, loops or ends at anything but a regular Parquet/CSV file
stops the connector at start, naming the link.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from fedsql.connectors.duckdb import DuckDBEngine, catalog_of
from fedsql.connectors.kind import BackendConfig, BackendKind, Sample, no_options
from fedsql.lockdown import Setup, open_locked, quote_string
from fedsql.sqltypes import sql_type
from fedsql.wire import RemoteTable

_READERS = {".parquet": "read_parquet", ".csv": "read_csv_auto"}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _target(link: Path) -> Path:
    """The regular Parquet/CSV file a symlink the agency placed ends at (resolved
    through every link on the way), or ValueError naming the link."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        raise ValueError(
            f"files backend: {link} is a symlink to {os.readlink(link)}, which does not "
            "exist; fix or remove the link"
        ) from None
    except (OSError, RuntimeError) as e:  # a loop of links
        raise ValueError(f"files backend: cannot follow the symlink {link}: {e}") from None
    if not target.is_file() or target.suffix.lower() not in _READERS:
        raise ValueError(
            f"files backend: {link} is a symlink to {target}, which is not a regular "
            "*.parquet or *.csv file; link to a file of one of those kinds"
        )
    return target


def open_files(
    directory: Path, tables: tuple[str, ...] | None, setup: Setup | None = None, **limits: Any
) -> DuckDBEngine:
    if not directory.is_dir():
        raise FileNotFoundError(f"files backend: {directory} is not a directory")
    directory = directory.resolve()
    files = {
        f.stem: f
        for f in sorted(directory.iterdir())
        if f.suffix.lower() in _READERS and (f.is_symlink() or f.is_file())
    }
    if not files:
        raise FileNotFoundError(f"files backend: no *.parquet or *.csv files in {directory}")
    found: list[tuple[RemoteTable, ...]] = []
    wanted = {t.lower() for t in tables or ()}

    def prepare(con: duckdb.DuckDBPyConnection) -> None:
        row_counts: dict[str, int] = {}
        for name, f in list(files.items()):
            if f.is_symlink() and (tables is None or name.lower() in wanted):
                files[name] = f = _target(f)
            elif f.is_symlink():
                del files[name]  # not exposed: not followed
                continue
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


def _sample(s: Sample) -> str:
    """The parquet files themselves, linked (or copied) into a directory of their own."""
    d = s.work / f"{s.agency}-files"
    d.mkdir(parents=True, exist_ok=True)
    for t in s.tables:
        dst = d / f"{t}.parquet"
        if not dst.exists():
            try:
                os.link(s.parquet / f"{t}.parquet", dst)
            except OSError:
                shutil.copyfile(s.parquet / f"{t}.parquet", dst)
    return str(d)


def _open(cfg: BackendConfig, setup: Setup | None, limits: dict[str, Any]) -> DuckDBEngine:
    assert cfg.path is not None
    return open_files(cfg.path, cfg.tables, setup, **limits)


KIND = BackendKind(
    name="files",
    what="a directory of *.parquet and *.csv files, one table each",
    keys={"path": str},
    required=("path",),
    options=no_options,
    open=_open,
    sql_type=sql_type,  # read by DuckDB
    sample=_sample,
)
