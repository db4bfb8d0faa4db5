"""Fuzzing the connector's fragment check (connectors/guard.py) with hypothesis.

Inputs: the 22 TPC-H queries mutated (tokens deleted, duplicated, swapped,
replaced, dangerous statements and functions spliced in), and SQL generated
from a small grammar mixing allowed and forbidden tables and functions.

Properties: ``check_fragment`` only ever raises ``RefusedFragment``, answers
within a time bound, and whatever it accepts is — according to DuckDB's own
parser, an oracle independent of sqlglot, run on the SQL the connector would
actually execute — exactly one SELECT that reads only exposed tables (or its
own CTEs / shipped key sets) and calls no table function and no function
outside the allowed set.

``make test`` runs about 2,600 cases (plus the fixed ones) deterministically; set
``FEDSQL_FUZZ_EXAMPLES=100000`` (per property) for a long randomized run.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsql.bench.compare import tpch_query
from fedsql.connectors.guard import check_fragment
from fedsql.errors import RefusedFragment
from fedsql.local import TPCH_TABLES

LONG = int(os.environ.get("FEDSQL_FUZZ_EXAMPLES", "0"))
EXPOSED = {("", t) for t in TPCH_TABLES}
KEY_SETS = frozenset({"__fedsql_keys0"})
# CPU seconds per check (typical: a few milliseconds); CPU time, not wall time, so
# that a machine busy with other work does not fail the property.
MAX_SECONDS = 2.0

FUZZ = settings(
    max_examples=LONG or 1200,
    deadline=None,  # timed in the property itself, against MAX_SECONDS
    derandomize=not LONG,
    database=None,
    suppress_health_check=list(HealthCheck),
)

QUERIES = [tpch_query(n) for n in range(1, 23)]
_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z_0-9]*|\d+(?:\.\d+)?|'(?:[^']|'')*'|.", re.S)
TOKENS = [_TOKEN.findall(q) for q in QUERIES]

# Spliced into queries: statements, clauses, functions and tables that must never pass.
DANGEROUS = [
    "; DROP TABLE orders",
    "; ATTACH '/tmp/x.db' AS x",
    " read_csv('/etc/passwd') ",
    " read_parquet('/etc/x.parquet') ",
    " (SELECT * FROM read_text('/etc/passwd')) ",
    " getenv('HOME') ",
    " current_setting('threads') ",
    " glob('/etc/*') ",
    " query('SELECT 1') ",
    " query_table('orders') ",
    " duckdb_settings() ",
    " pragma_database_list() ",
    " sql_auto_complete('SEL') ",
    " json_execute_serialized_sql('x') ",
    " '/etc/passwd' ",
    ' "/etc/passwd" ',
    " 'https://example.org/x.csv' ",
    " main.secret_table ",
    " system.main.orders ",
    " information_schema.tables ",
    " pg_catalog.pg_class ",
    " sqlite_master ",
    " range(10) ",
    " generate_series(1, 3) ",
    " unnest([1, 2]) ",
    " COPY orders TO '/tmp/out.csv' ",
    " INSERT INTO orders VALUES (1) ",
    " CREATE TABLE x AS SELECT 1 ",
    " CREATE MACRO m(a) AS a ",
    " PRAGMA threads=1 ",
    " SET threads = 1 ",
    " INSTALL httpfs ",
    " LOAD httpfs ",
    " EXPORT DATABASE '/tmp/x' ",
    " CALL pragma_version() ",
    " DESCRIBE orders ",
    " SUMMARIZE orders ",
    " SHOW TABLES ",
    " EXPLAIN ANALYZE SELECT 1 ",
    " INTO x ",
    " USE x ",
    " CHECKPOINT ",
    " DETACH x ",
    " VACUUM ",
    " UPDATE orders SET o_orderkey = 1 ",
    " DELETE FROM orders ",
    " x -> x ",
    " list_transform([1], x -> getenv('HOME')) ",
    " COLUMNS('o_.*') ",
    " nextval('s') ",
    " setseed(0.5) ",
    " which_secret('s3://x', 's3') ",
    " current_user ",
    " version() ",
    " __fedsql_keys0 ",
    " __fedsql_keys1 ",
    " FROM 'orders.csv' ",
    " WITH orders AS (SELECT 1) ",
    " /* comment */ ",
    " -- trailing comment\n",
    " $$ string $$ ",
    " E'\\x41' ",
    " 1e309 ",
    " ' unterminated ",
    " ( ",
    " ) ",
    " , ",
    " UNION ALL SELECT * FROM read_csv('/etc/passwd') ",
    " LATERAL (SELECT getenv('HOME')) ",
    " TABLESAMPLE 10% ",
    " QUALIFY row_number() OVER () = 1 ",
    " PIVOT orders ON o_orderstatus USING count(*) ",
    " MAP {'a': 1} ",
    " {'a': 1} ",
    " [1, 2][1] ",
    " ?::INT ",
    " $1 ",
    " :name ",
]
VOCAB = [
    "SELECT", "FROM", "WHERE", "GROUP", "BY", "ORDER", "HAVING", "LIMIT", "JOIN", "ON",
    "LEFT", "UNION", "ALL", "WITH", "AS", "AND", "OR", "NOT", "IN", "EXISTS", "CASE",
    "WHEN", "THEN", "ELSE", "END", "(", ")", ",", ";", "*", "=", "<", ">", "'x'", "1",
    "NULL", "orders", "lineitem", "nation", "o_orderkey", "l_quantity", "sum", "count",
    "substring", "extract", "interval", "date", "cast", "::", ".", "\"", "'", "/*", "*/",
    "--", "\n", "read_csv", "getenv", "glob", "ATTACH", "COPY", "PRAGMA", "SET",
]  # fmt: skip

# -- the independent oracle: DuckDB's own parser on what the connector would run --

_DUCK = duckdb.connect(":memory:")
_TABLE_FUNCS = (
    {
        r[0].lower()
        for r in _DUCK.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type IN ('table', 'table_macro', 'pragma')"
        ).fetchall()
    }
    - {  # also plain scalar/aggregate functions (e.g. unnest, range as list functions)
        r[0].lower()
        for r in _DUCK.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type IN ('scalar', 'aggregate', 'macro')"
        ).fetchall()
    }
    - {"unnest"}
)  # UNNEST in a select list: DuckDB's list-unnesting operator, reads nothing
# Scalar functions that read files, settings, the environment or the catalog, or
# run SQL: never callable from a fragment. Kept apart from guard.py on purpose.
_FORBIDDEN_SCALARS = re.compile(
    r"^(read_|glob|getenv|getvariable|current_setting|duckdb_|pragma_|sql_|json_execute|"
    r"query|parquet_|sniff_|load|install|export|import|checkpoint|which_secret|nextval|"
    r"currval|setseed|enable_|disable_|http|s3|icu_|has_|pg_|system|set_|version$|user$|"
    r"current_(user|database|schema|schemas|catalog|role)$|session_user$)"
)


def _walk(node: Any, out: dict[str, set[str]], ctes: set[str]) -> None:
    if isinstance(node, dict):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                ctes.add(str(entry.get("key", "")).lower())
        kind = node.get("type")
        if kind == "BASE_TABLE":
            out["tables"].add(
                f"{node.get('catalog_name', '')}|{node.get('schema_name', '')}|"
                f"{str(node.get('table_name', '')).lower()}"
            )
        elif kind == "TABLE_FUNCTION":
            out["table_functions"].add(str(node.get("function", {}).get("function_name")))
        if node.get("class") == "FUNCTION" and not node.get("is_operator"):
            out["functions"].add(str(node.get("function_name", "")).lower())
        for v in node.values():
            _walk(v, out, ctes)
    elif isinstance(node, list):
        for v in node:
            _walk(v, out, ctes)


def oracle_violations(sql: str) -> list[str]:
    """What DuckDB's parser finds wrong with ``sql`` as a fragment (empty: fine)."""
    doc = json.loads(_DUCK.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])  # type: ignore[index]
    if doc.get("error"):
        if doc.get("error_type") == "parser":
            return []  # DuckDB cannot parse it either: the backend refuses to run anything
        return [f"DuckDB does not read it as one SELECT: {doc.get('error_message')}"]
    if len(doc["statements"]) != 1:
        return [f"{len(doc['statements'])} statements"]
    found: dict[str, set[str]] = {"tables": set(), "table_functions": set(), "functions": set()}
    ctes: set[str] = set()
    _walk(doc["statements"], found, ctes)
    # UNNEST(list) in FROM reads only its (checked) argument; no other table function.
    bad = [f"table function {f}" for f in found["table_functions"] if f.lower() != "unnest"]
    for t in found["tables"]:
        catalog, schema, name = t.split("|")
        ok = not catalog and schema in ("", "main") and ("", name) in EXPOSED
        ok = ok or (not catalog and not schema and (name in ctes or name in KEY_SETS))
        if not ok:
            bad.append(f"table {t}")
    for f in found["functions"]:
        if f in _TABLE_FUNCS or _FORBIDDEN_SCALARS.match(f):
            bad.append(f"function {f}")
    return bad


def _check(sql: str) -> None:
    t0 = time.thread_time()
    try:
        tree = check_fragment(sql, EXPOSED, key_sets=KEY_SETS)
    except RefusedFragment as e:
        assert str(e), "a refusal says why"
        return
    finally:
        assert time.thread_time() - t0 < MAX_SECONDS, f"slow check: {sql!r}"
    runs = tree.sql(dialect="duckdb")  # exactly what the connector runs
    problems = oracle_violations(runs)
    assert not problems, f"accepted {sql!r}\n  runs as {runs!r}\n  problems: {problems}"


# -- strategies ----------------------------------------------------------------


@st.composite
def mutated_tpch(draw: st.DrawFn) -> str:
    tokens = list(draw(st.sampled_from(TOKENS)))
    for _ in range(draw(st.integers(1, 4))):
        n = len(tokens)
        i = draw(st.integers(0, n))
        op = draw(st.sampled_from(["splice", "splice", "vocab", "delete", "dup", "swap"]))
        if op == "splice":
            tokens.insert(i, draw(st.sampled_from(DANGEROUS)))
        elif op == "vocab":
            k = i + draw(st.integers(0, 1))
            tokens[i:k] = [f" {draw(st.sampled_from(VOCAB))} "]
        elif op == "delete" and n:
            k = i + draw(st.integers(1, 8))
            del tokens[i:k]
        elif op == "dup" and n:
            k = i + draw(st.integers(1, 12))
            tokens[i:i] = tokens[i:k]
        elif op == "swap" and n > 1:
            j = draw(st.integers(0, n - 1))
            i = min(i, n - 1)
            tokens[i], tokens[j] = tokens[j], tokens[i]
    return "".join(tokens)


_FUNCS = [
    "sum", "count", "min", "upper", "substring", "coalesce", "abs", "round", "length",
    "read_csv", "getenv", "glob", "current_setting", "query", "duckdb_tables", "range",
    "unnest", "list_transform", "json_execute_serialized_sql", "sql_auto_complete",
    "hash", "md5", "strftime", "date_trunc", "regexp_matches", "to_json", "from_json",
    "list_value", "struct_pack", "printf", "format", "repeat", "version", "current_user",
    "typeof", "nextval", "setseed", "random", "which_secret", "read_text", "load",
    "parquet_schema", "sniff_csv", "getvariable", "pragma_version", "icu_sort_key",
]  # fmt: skip
_TABLES = [
    "orders", "lineitem", "main.nation", "region", "secret", "main.secret",
    "other.orders", "system.main.orders", "'/etc/passwd'", "read_csv('/etc/passwd')",
    "range(5)", "__fedsql_keys0", "__fedsql_keys1", "information_schema.tables",
    "duckdb_settings()", "(SELECT 1 AS o_orderkey)", "(VALUES (1), (2))",
    "unnest([1, 2])", "glob('*')", "\"orders\"", "ORDERS", "\"/etc/passwd\"",
]  # fmt: skip


def _expr(draw: st.DrawFn, depth: int) -> str:
    choice = draw(st.integers(0, 5 if depth < 3 else 2))
    if choice == 0:
        return draw(st.sampled_from(["o_orderkey", "l_quantity", "n_name", "*", "1", "'a'"]))
    if choice == 1:
        return draw(st.sampled_from(["NULL", "x", "t.o_orderkey", "DATE '1995-01-01'"]))
    if choice == 2:
        return f"{_expr(draw, depth + 1)} {draw(st.sampled_from(['+', '=', '||', 'AND']))} 1"
    if choice == 3:
        args = ", ".join(_expr(draw, depth + 1) for _ in range(draw(st.integers(0, 2))))
        return f"{draw(st.sampled_from(_FUNCS))}({args})"
    if choice == 4:
        return f"(SELECT {_expr(draw, depth + 1)} FROM {draw(st.sampled_from(_TABLES))})"
    return f"CASE WHEN {_expr(draw, depth + 1)} THEN {_expr(draw, depth + 1)} END"


@st.composite
def generated(draw: st.DrawFn) -> str:
    cols = ", ".join(_expr(draw, 0) for _ in range(draw(st.integers(1, 3))))
    src = draw(st.sampled_from(_TABLES))
    sql = f"SELECT {cols} FROM {src} AS t"
    if draw(st.booleans()):
        sql += f" JOIN {draw(st.sampled_from(_TABLES))} AS u ON {_expr(draw, 1)}"
    if draw(st.booleans()):
        sql += f" WHERE {_expr(draw, 1)}"
    if draw(st.booleans()):
        name = draw(st.sampled_from(["c", "orders", "secret", "q"]))
        sql = f"WITH {name} AS (SELECT {_expr(draw, 1)} FROM {src}) {sql}"
    if draw(st.integers(0, 4)) == 0:
        sql += f" UNION ALL SELECT {_expr(draw, 1)} FROM {draw(st.sampled_from(_TABLES))}"
    if draw(st.integers(0, 4)) == 0:
        sql += draw(st.sampled_from(DANGEROUS))
    return sql


# -- properties ----------------------------------------------------------------


@FUZZ
@given(mutated_tpch())
def test_guard_on_mutated_tpch_queries(sql: str) -> None:
    _check(sql)


@settings(FUZZ, max_examples=LONG or 900)
@given(generated())
def test_guard_on_generated_sql(sql: str) -> None:
    _check(sql)


@settings(FUZZ, max_examples=LONG or 500)
@given(st.text(max_size=300))
def test_guard_on_arbitrary_text(sql: str) -> None:
    _check(sql)


def test_every_tpch_query_is_accepted_and_passes_the_oracle() -> None:
    for sql in QUERIES:
        _check(sql)
        check_fragment(sql, EXPOSED)  # accepted, not refused


@pytest.mark.parametrize("snippet", DANGEROUS)
def test_each_dangerous_snippet_in_a_select_is_refused_or_harmless(snippet: str) -> None:
    for sql in (f"SELECT {snippet} FROM orders", f"SELECT * FROM {snippet}"):
        _check(sql)


@pytest.mark.parametrize(
    "fn", ["current_user", "current_database()", "current_schema()", "version()", "session_user"]
)
def test_backend_identity_functions_are_refused(fn: str) -> None:
    """Found by this fuzzer: they passed the check and told who/where the backend is."""
    with pytest.raises(RefusedFragment, match="is not in the fragment language"):
        check_fragment(f"SELECT {fn} FROM orders", EXPOSED)
    assert check_fragment("SELECT current_date FROM orders", EXPOSED) is not None
