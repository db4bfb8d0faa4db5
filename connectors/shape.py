"""The result schema a fragment would have on DuckDB, from empty copies of the tables.

Non-DuckDB backends return their own types; each batch they produce is cast to
this schema (see ``backend.conform``), so results are typed as a central
DuckDB would type them.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from fedsql.lockdown import open_locked
from fedsql.policy.masks import register_hash
from fedsql.wire import RemoteTable


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ShapeMirror:
    def __init__(self, tables: tuple[RemoteTable, ...]) -> None:
        def setup(con: duckdb.DuckDBPyConnection) -> None:
            # Same name and types as the real masking function; never called on data.
            register_hash(con, b"shape-only, never hashes data")
            for t in tables:
                con.register("__empty", t.arrow_schema.empty_table())
                if t.schema:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(t.schema)}")
                    name = f"{_q(t.schema)}.{_q(t.name)}"
                else:
                    name = _q(t.name)
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM __empty")
                con.unregister("__empty")

        self._con = open_locked(setup=setup, memory_limit="256MB")
        self._lock = threading.Lock()

    def schema_of(self, sql: str) -> pa.Schema:
        """Arrow schema of the fragment's result (DuckDB dialect); raises duckdb.Error."""
        with self._lock:
            cur = self._con.cursor()
        try:
            return cur.sql(sql).to_arrow_table().schema
        finally:
            cur.close()
