"""Sample data on PostgreSQL (the demo, benchmarks, the conformance suite): column
types in PostgreSQL's spelling, and a database per agency with a reader role."""

from __future__ import annotations

import pyarrow as pa

from fedsql.connectors.kind import Sample
from fedsql.sqltypes import sql_type as duckdb_sql_type

# DuckDB's type names (fedsql.sqltypes) that PostgreSQL spells otherwise; any other
# name PostgreSQL lacks is declared TEXT (sample data only).
_PG_NAMES = {
    "DOUBLE": "DOUBLE PRECISION",
    "FLOAT": "REAL",
    "TINYINT": "SMALLINT",
    "VARCHAR": "TEXT",
    "BLOB": "BYTEA",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "TIMESTAMP_S": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_NS": "TIMESTAMP",
}
_PG_SAME = frozenset({"BOOLEAN", "SMALLINT", "INTEGER", "BIGINT", "DATE", "TIMESTAMP"})


def sql_type(t: pa.DataType) -> str:
    """The PostgreSQL column type for an Arrow type (sample data).

    >>> sql_type(pa.decimal128(15, 2)), sql_type(pa.float64()), sql_type(pa.string())
    ('NUMERIC(15,2)', 'DOUBLE PRECISION', 'TEXT')
    """
    name = duckdb_sql_type(t)
    if name.startswith("DECIMAL("):
        return "NUMERIC" + name.removeprefix("DECIMAL")
    return name if name in _PG_SAME else _PG_NAMES.get(name, "TEXT")


def sample(s: Sample) -> str:
    """A database of its own on ``s.server``, loaded by its owner (binary COPY through
    ADBC, with ``s.indexes``), read by a least-privilege role ``<agency>_reader``
    (CONNECT, USAGE on ``public``, SELECT on exactly these tables): its DSN."""
    import adbc_driver_postgresql.dbapi as pgdb
    import pyarrow.parquet as pq

    from fedsql.connectors.backend import plain_strings

    if s.server is None:
        raise ValueError("a PostgreSQL agency's sample data needs a server")
    dsn = s.server.create_database(s.agency)
    with pgdb.connect(dsn) as con:
        with con.cursor() as cur:
            for name in s.tables:
                t = plain_strings(pq.read_table(s.parquet / f"{name}.parquet"))
                cols = ", ".join(
                    f'"{f.name}" {sql_type(f.type)}' + ("" if f.nullable else " NOT NULL")
                    for f in t.schema
                )
                cur.execute(f'CREATE TABLE "{name}" ({cols})')
                cur.adbc_ingest(name, t, mode="append")
                for i, ddl in enumerate((s.indexes or {}).get(name, [])):
                    if ddl.startswith("PRIMARY KEY"):
                        cur.execute(f'ALTER TABLE "{name}" ADD {ddl}')
                    else:
                        on = ddl.removeprefix("INDEX ")
                        cur.execute(f'CREATE INDEX "{name}_idx{i}" ON "{name}" {on}')
        con.commit()
        con.adbc_connection.set_autocommit(True)
        with con.cursor() as cur:
            cur.execute("ANALYZE")
    return s.server.create_reader(s.agency, s.tables)
