"""Metadata statements, answered at the coordinator from the analyst's catalog.

``SHOW CATALOGS``, ``SHOW SCHEMAS [FROM catalog]``, ``SHOW TABLES [FROM
catalog[.schema]]`` (each with ``LIKE 'pattern'``), ``SHOW COLUMNS FROM t``,
``DESCRIBE t``, ``DESCRIBE SELECT ...``, ``EXPLAIN [ANALYZE] q`` and queries
over ``information_schema`` (``schemata``, ``tables``, ``columns``; also
``agency.information_schema.*``, that agency's part), as Trino names things:
a catalog is an agency. Nothing here reaches an agency: the answers come from
the catalog the agencies gave this analyst (already cut to their grants), so
a listing shows exactly what the analyst may query; ``EXPLAIN ANALYZE`` runs
its query as any query runs.

information_schema queries may filter, join and aggregate: the info tables
are built as Arrow and the query runs in a locked DuckDB of its own
(lockdown.py) after the planner's own check (bounded, in the fragment language,
so no table functions or settings); every table it names must be an info
table or one of its CTEs, and each is renamed to the Arrow table it reads, so
DuckDB's own catalog is never what it sees.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from sqlglot import exp

from fedsql.catalog import Catalog, TableRef
from fedsql.errors import CatalogError, PlanError
from fedsql.lockdown import open_locked
from fedsql.planner import Fragment, Plan
from fedsql.planner.parse import parse
from fedsql.sqltypes import precision_scale, sql_type

INFO_SCHEMA = "information_schema"
INFO_TABLES = ("schemata", "tables", "columns")
_PREFIX = "__fedsql_info_"
TABLE_TYPE = "BASE TABLE"

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT}){{0,2}}"
_LIKE = r"(?:\s+LIKE\s+(?P<like>'(?:[^']|'')*'))?"
_SHOW = re.compile(
    r"SHOW\s+(?P<what>CATALOGS|DATABASES|SCHEMAS|TABLES)"
    rf"(?:\s+(?:FROM|IN)\s+(?P<scope>{_NAME}))?{_LIKE}\s*",
    re.IGNORECASE | re.DOTALL,
)
_COLUMNS = re.compile(rf"SHOW\s+COLUMNS\s+(?:FROM|IN)\s+(?P<name>{_NAME})\s*", re.I | re.S)
_DESCRIBE = re.compile(r"(?:DESCRIBE|DESC)\s+(?P<rest>.+)", re.IGNORECASE | re.DOTALL)
_EXPLAIN = re.compile(r"EXPLAIN(?P<analyze>\s+ANALYZE)?\s+(?P<rest>.+)", re.I | re.S)
_FIRST = re.compile(r"\s*([A-Za-z]+)")
_QUERY_START = re.compile(r"\s*\(*\s*(SELECT|WITH|FROM|VALUES|TABLE)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Statement:
    """A metadata statement: ``kind`` is show, describe, describe_query, explain or info."""

    kind: str
    what: str = ""  # show: catalogs | schemas | tables
    scope: tuple[str, ...] = ()  # show: the FROM name's parts; describe: the table's
    like: str | None = None
    sql: str = ""  # describe_query, explain, info: the query
    analyze: bool = False


def statement(sql: str) -> Statement | None:
    """The metadata statement ``sql`` is, or None for an ordinary query.

    >>> statement("SHOW TABLES FROM trade LIKE 'o%';")
    Statement(kind='show', what='tables', scope=('trade',), like='o%', sql='', analyze=False)
    >>> statement("DESCRIBE registry.nation").scope
    ('registry', 'nation')
    >>> statement("EXPLAIN ANALYZE SELECT 1").analyze, statement("SELECT 1") is None
    (True, True)
    """
    first = _FIRST.match(sql)
    word = first.group(1).upper() if first else ""
    if word not in ("SHOW", "DESCRIBE", "DESC", "EXPLAIN"):  # an ordinary query, most often
        named = INFO_SCHEMA in sql.lower() and _names_info_schema(sql)  # parse only then
        return Statement("info", sql=sql) if named else None
    text = sql.strip().rstrip(";").strip()
    if word == "SHOW":
        m = _COLUMNS.fullmatch(text)
        if m:
            return Statement("describe", scope=_parts(m.group("name")))
        m = _SHOW.fullmatch(text)
        if m is None:
            raise PlanError(
                "unknown SHOW statement; fedsql knows SHOW CATALOGS, SHOW SCHEMAS [FROM "
                "catalog], SHOW TABLES [FROM catalog[.schema]] (each with LIKE 'pattern') "
                "and SHOW COLUMNS FROM table"
            )
        what = m.group("what").lower()
        what = "catalogs" if what == "databases" else what
        scope = _parts(m.group("scope")) if m.group("scope") else ()
        if what == "catalogs" and scope or len(scope) > (1 if what == "schemas" else 2):
            raise PlanError(f"SHOW {what.upper()} FROM takes a {_SCOPE[what]}")
        like = m.group("like")
        return Statement("show", what, scope, like[1:-1].replace("''", "'") if like else None)
    if word in ("DESCRIBE", "DESC"):
        m = _DESCRIBE.fullmatch(text)
        rest = m.group("rest") if m else ""
        if _QUERY_START.match(rest):
            return Statement("describe_query", sql=rest)
        if not re.fullmatch(_NAME, rest.strip()):
            raise PlanError(
                "usage: DESCRIBE agency.table (or agency.schema.table), or DESCRIBE SELECT ..."
            )
        return Statement("describe", scope=_parts(rest))
    m = _EXPLAIN.fullmatch(text)  # EXPLAIN, the one word left
    if m is None:
        raise PlanError("usage: EXPLAIN [ANALYZE] SELECT ...")
    return Statement("explain", sql=m.group("rest"), analyze=bool(m.group("analyze")))


_SCOPE = {"catalogs": "nothing", "schemas": "catalog", "tables": "catalog or catalog.schema"}


def _parts(name: str) -> tuple[str, ...]:
    return tuple(
        p[1:-1].replace('""', '"') if p.startswith('"') else p for p in re.findall(_IDENT, name)
    )


def _names_info_schema(sql: str) -> bool:
    try:
        tree = parse(sql)
    except PlanError:
        return False  # planned as a query, whose error says what is wrong
    return any(t.db.lower() == INFO_SCHEMA for t in tree.find_all(exp.Table))


# -- the info tables ------------------------------------------------------------

INFO_SCHEMAS = {
    "schemata": pa.schema([("catalog_name", pa.string()), ("schema_name", pa.string())]),
    "tables": pa.schema(
        [
            ("table_catalog", pa.string()),
            ("table_schema", pa.string()),
            ("table_name", pa.string()),
            ("table_type", pa.string()),
        ]
    ),
    "columns": pa.schema(
        [
            ("table_catalog", pa.string()),
            ("table_schema", pa.string()),
            ("table_name", pa.string()),
            ("column_name", pa.string()),
            ("ordinal_position", pa.int64()),
            ("column_default", pa.string()),
            ("is_nullable", pa.string()),
            ("data_type", pa.string()),
            ("numeric_precision", pa.int64()),
            ("numeric_scale", pa.int64()),
        ]
    ),
}


def _sorted(tables: list[TableRef]) -> list[TableRef]:
    return sorted(tables, key=lambda t: (t.agency, t.schema_key, t.name))


def info_tables(catalog: Catalog, agency: str | None = None) -> dict[str, pa.Table]:
    """information_schema's tables over ``catalog`` (one agency's part if given)."""
    tables = _sorted([t for t in catalog.tables if agency is None or t.agency == agency])
    schemata = sorted({(t.agency, t.schema_key) for t in tables})
    cols: dict[str, list[object]] = {n: [] for n in INFO_SCHEMAS["columns"].names}
    for t in tables:
        for i, f in enumerate(t.arrow_schema, start=1):
            precision, scale = precision_scale(f.type)
            nullable = "YES" if f.nullable else "NO"
            row: tuple[object, ...] = (t.agency, t.schema_key, t.name, f.name, i, None)
            row += (nullable, sql_type(f.type), precision, scale)
            for name, v in zip(cols, row, strict=True):
                cols[name].append(v)
    return {
        "schemata": pa.table(
            [[a for a, _ in schemata], [s for _, s in schemata]], schema=INFO_SCHEMAS["schemata"]
        ),
        "tables": pa.table(
            [
                [t.agency for t in tables],
                [t.schema_key for t in tables],
                [t.name for t in tables],
                [TABLE_TYPE] * len(tables),
            ],
            schema=INFO_SCHEMAS["tables"],
        ),
        "columns": pa.table(cols, schema=INFO_SCHEMAS["columns"]),
    }


class InfoEngine:
    """The DuckDB that answers information_schema queries: locked, small, and
    holding nothing; each query registers the info tables on its own cursor."""

    def __init__(self) -> None:
        self._db = open_locked(memory_limit="256MB", threads=1)
        self._lock = threading.Lock()

    def run(
        self, sql: str, tables: dict[str, pa.Table], params: list[object] | None = None
    ) -> pa.Table:
        with self._lock:
            con = self._db.cursor()
        try:
            for name, table in tables.items():
                con.register(name, table)
            return con.sql(sql, params=params or None).to_arrow_table()
        except duckdb.Error as e:
            first = str(e).splitlines()[0]
            raise PlanError(f"the information_schema query failed: {first}") from None
        finally:
            con.close()

    def close(self) -> None:
        self._db.close()


def info_query(sql: str, catalog: Catalog, engine: InfoEngine) -> pa.Table:
    """An analyst's query over information_schema, answered from ``catalog``."""
    tree = parse(sql)  # bounded, one SELECT, in the fragment language
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    registered: dict[str, pa.Table] = {}
    for t in list(tree.find_all(exp.Table)):
        if not t.db and t.name.lower() in ctes:
            continue
        if t.db.lower() != INFO_SCHEMA:
            raise PlanError(
                f"'{t.sql(dialect='duckdb')}' is not an information_schema table: a query "
                "over information_schema reads its tables only; query agencies' tables in a "
                "query of their own"
            )
        name = t.name.lower()
        if name not in INFO_TABLES:
            raise CatalogError(
                f"unknown table information_schema.{t.name}; fedsql's information_schema "
                f"has {', '.join(INFO_TABLES)}"
            )
        agency = None
        if t.catalog:
            agency = next((a for a in catalog.agencies if a.lower() == t.catalog.lower()), None)
            if agency is None:
                raise CatalogError(
                    f"unknown agency '{t.catalog}' in {t.sql(dialect='duckdb')}; "
                    f"agencies: {', '.join(catalog.agencies)}"
                )
        key = f"{_PREFIX}{name}" + (f"_{len(registered)}" if agency else "")
        if key not in registered:
            registered[key] = info_tables(catalog, agency)[name]
        t.replace(exp.alias_(exp.to_table(key), t.alias or t.name, table=True))
    return engine.run(tree.sql(dialect="duckdb"), registered)


# -- SHOW and DESCRIBE ---------------------------------------------------------


def show(st: Statement, catalog: Catalog, engine: InfoEngine) -> pa.Table:
    """SHOW CATALOGS / SCHEMAS / TABLES, Trino's column names, sorted."""
    tables = info_tables(catalog)
    where: list[str] = []
    params: list[object] = []
    if st.what == "catalogs":
        tables = {"names": pa.table({"Catalog": sorted(catalog.agencies)})}
        sql = 'SELECT "Catalog" FROM names'
    elif st.what == "schemas":
        sql = 'SELECT catalog_name AS "Catalog", schema_name AS "Schema" FROM schemata'
        if st.scope:
            where.append("catalog_name = ?")
            params.append(_agency(catalog, st.scope[0]))
    else:
        sql = (
            'SELECT table_catalog AS "Catalog", table_schema AS "Schema", '
            'table_name AS "Table" FROM tables'
        )
        if st.scope:
            where.append("table_catalog = ?")
            params.append(_agency(catalog, st.scope[0]))
        if len(st.scope) == 2:
            where.append("lower(table_schema) = lower(?)")
            params.append(st.scope[1])
    column = {"catalogs": '"Catalog"', "schemas": '"Schema"', "tables": '"Table"'}[st.what]
    if st.like is not None:
        where.append(f"{column} LIKE ?")
        params.append(st.like)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ALL"
    return engine.run(sql, tables, params)


def _agency(catalog: Catalog, name: str) -> str:
    for a in catalog.agencies:
        if a.lower() == name.lower():
            return a
    known = ", ".join(catalog.agencies)
    raise CatalogError(f"unknown catalog '{name}'; catalogs (agencies): {known}")


def describe(table: TableRef, masks: dict[str, str]) -> pa.Table:
    """DESCRIBE table: each column's SQL type, nullability and the mask you get."""
    fields = list(table.arrow_schema)
    return pa.table(
        {
            "Column": [f.name for f in fields],
            "Type": [sql_type(f.type) for f in fields],
            "Null": ["YES" if f.nullable else "NO" for f in fields],
            "Extra": [f"masked ({masks[f.name]})" if f.name in masks else "" for f in fields],
        }
    )


def describe_schema(schema: pa.Schema) -> pa.Table:
    """DESCRIBE SELECT ...: the result's columns and their SQL types."""
    return pa.table(
        {
            "Column": schema.names,
            "Type": [sql_type(f.type) for f in schema],
            "Null": ["YES" if f.nullable else "NO" for f in schema],
        }
    )


def query_schema(
    p: Plan, fragment_schema: Callable[[Fragment], pa.Schema], run_empty: Callable[..., pa.Table]
) -> pa.Schema:
    """A plan's result schema, without running it: each fragment's result typed over
    the catalog's empty tables, the residual run over those empty results."""
    empties = {f.id: fragment_schema(f).empty_table() for f in p.fragments}
    if p.residual is None:
        (only,) = empties.values()
        schema = only.schema
    else:
        schema = run_empty(p.residual, empties).schema
    names = list(p.output_names)
    if names and len(names) == len(schema):
        schema = pa.schema([f.with_name(n) for f, n in zip(schema, names, strict=True)])
    return schema


def explain_table(text: str) -> pa.Table:
    """EXPLAIN's answer: one row per line of the plan (Trino's column name)."""
    return pa.table({"Query Plan": text.splitlines()})


__all__ = [
    "INFO_TABLES",
    "InfoEngine",
    "Statement",
    "describe",
    "describe_schema",
    "explain_table",
    "info_query",
    "info_tables",
    "query_schema",
    "show",
    "statement",
]
