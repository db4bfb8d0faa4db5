"""Bind a query in DuckDB against empty copies of the federation's tables.

This learns the result's column names exactly as a single DuckDB holding the
same tables would name them (``sum(l_quantity)``, ``count_star()``...), and
gives the analyst DuckDB's own binder errors before anything is sent to an
agency.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from fedsql.catalog import Catalog
from fedsql.errors import CatalogError, PlanError
from fedsql.lockdown import open_locked


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ShapeBinder:
    """An in-memory DuckDB with one empty table per federated table."""

    def __init__(self, catalog: Catalog) -> None:
        unique: dict[str, int] = {}
        for t in catalog.tables:
            unique[t.name.lower()] = unique.get(t.name.lower(), 0) + 1

        def setup(con: duckdb.DuckDBPyConnection) -> None:
            for agency in catalog.agencies:
                con.execute(f"ATTACH ':memory:' AS {_q(agency)}")
            for t in catalog.tables:
                empty = t.arrow_schema.empty_table()
                con.register("__fedsql_empty", empty)
                schema = t.schema_key
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(t.agency)}.{_q(schema)}")
                full = f"{_q(t.agency)}.{_q(schema)}.{_q(t.name)}"
                con.execute(f"CREATE TABLE {full} AS SELECT * FROM __fedsql_empty")
                con.unregister("__fedsql_empty")
                if unique[t.name.lower()] == 1:
                    con.execute(f"CREATE VIEW main.{_q(t.name)} AS SELECT * FROM {full}")
            # agency.table names a table of any schema, as fedsql resolves it (the
            # default schema first): DuckDB looks for it in the agency's "main".
            mains = {(t.agency, t.name.lower()) for t in catalog.tables if t.schema_key == "main"}
            for t in sorted(catalog.tables, key=lambda t: t.schema != ""):
                if (t.agency, t.name.lower()) in mains:
                    continue
                mains.add((t.agency, t.name.lower()))
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(t.agency)}.main")
                full = f"{_q(t.agency)}.{_q(t.schema_key)}.{_q(t.name)}"
                con.execute(f"CREATE VIEW {_q(t.agency)}.main.{_q(t.name)} AS SELECT * FROM {full}")

        # It binds analysts' queries: locked like every other engine (no files, no
        # settings), and small (its tables are empty).
        self._con = open_locked(setup=setup, memory_limit="256MB")
        self._lock = threading.Lock()

    def output_names(self, sql: str) -> list[str]:
        """The result's column names; raises PlanError/CatalogError on binder errors."""
        with self._lock:
            cur = self._con.cursor()
        try:
            return list(cur.sql(sql).columns)
        except (duckdb.BinderException, duckdb.CatalogException) as e:
            raise CatalogError(_first(e)) from None
        except duckdb.ParserException as e:
            raise PlanError(f"cannot parse the query: {_first(e)}") from None
        except duckdb.Error as e:
            raise PlanError(_first(e)) from None
        finally:
            cur.close()

    def fragment_schema(self, agency: str, sql: str) -> pa.Schema:
        """The Arrow schema of a fragment's result (its SQL names tables as the
        agency's connector exposes them), bound over the empty tables."""
        with self._lock:
            cur = self._con.cursor()
        try:
            cur.execute(f"USE {_q(agency)}")
            return cur.sql(sql).limit(0).to_arrow_table().schema
        except duckdb.Error as e:
            raise PlanError(f"cannot bind a fragment for agency '{agency}': {_first(e)}") from None
        finally:
            cur.close()


def _first(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
