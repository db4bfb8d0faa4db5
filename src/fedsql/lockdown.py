"""Every DuckDB fedsql opens, opened one way: external access off, configuration locked.

Agency backends, the node's own engine for SQLite/PostgreSQL agencies, the
schema-only copies used to type results, the coordinator's merge engine and the
service all open DuckDB through :func:`open_locked` (a test keeps it so). Beside
the fragment language, this is the second wall (DuckDB docs, "Securing
DuckDB"): even SQL that slipped past the checks cannot read a file, a URL or an
environment variable, load an extension, see Python objects by name, or change
a setting — ``lock_configuration`` freezes them all, the memory limit included.

>>> con = open_locked()
>>> con.sql("SELECT 42").fetchall()
[(42,)]
>>> con.sql("SELECT * FROM read_csv('/etc/passwd')")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
_duckdb.PermissionException: Permission Error: Cannot access file "/etc/passwd" - ...
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb

Setup = Callable[[duckdb.DuckDBPyConnection], None]


def quote_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def open_locked(
    database: str | Path = ":memory:",
    *,
    read_only: bool = False,
    setup: Setup | None = None,
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
    max_temp_size: str | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with external access off and its configuration locked.

    ``setup`` runs before the lock (it creates the backend's views, registers the
    node's own functions). Spilling goes to ``temp_directory`` (a private
    directory under the system temp by default), at most ``max_temp_size``.
    No file is readable afterwards unless ``setup`` allowed it (``SET
    allowed_paths``: the files backend lists its exposed files, nothing else).
    """
    con = duckdb.connect(str(database), read_only=read_only)
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET allow_community_extensions = false")
        con.execute("SET python_enable_replacements = false")
        spill = temp_directory or _private_temp()
        con.execute(f"SET temp_directory = {quote_string(str(spill))}")
        if max_temp_size:
            con.execute(f"SET max_temp_directory_size = {quote_string(max_temp_size)}")
        if memory_limit:
            con.execute(f"SET memory_limit = {quote_string(memory_limit)}")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        if setup is not None:
            setup(con)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _private_temp() -> Path:
    """Where this process's DuckDBs spill: one directory per user, not shared."""
    path = Path(tempfile.gettempdir()) / f"fedsql-spill-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def is_locked(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con`` has external access off and its configuration locked."""
    rows = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() "
            "WHERE name IN ('enable_external_access', 'lock_configuration')"
        ).fetchall()
    )
    return (
        rows.get("enable_external_access") == "false" and rows.get("lock_configuration") == "true"
    )


__all__ = ["Setup", "is_locked", "open_locked", "quote_string"]
