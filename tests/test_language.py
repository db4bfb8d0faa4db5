"""The fragment language (fedsql.lang): limits, the allow-list, binding by scope,
the round trip, its document, and every DuckDB the project opens locked down."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot

from fedsql import lang
from fedsql.capabilities import Capabilities
from fedsql.connectors.guard import check_fragment
from fedsql.errors import RefusedFragment
from fedsql.lang.__main__ import markdown
from fedsql.lockdown import is_locked, open_locked

ROOT = Path(__file__).resolve().parent.parent
EXPOSED = {("", "people"), ("", "visits"), ("hr", "staff")}

# -- the allow-list: each refused construct is named ------------------------------

REFUSED = {
    "SELECT region FROM people UNPIVOT (region FOR name IN (name, region))": "PIVOT/UNPIVOT",
    "SELECT * FROM people PIVOT (count(*) FOR region IN ('a'))": "PIVOT/UNPIVOT",
    "SELECT * FROM people TABLESAMPLE 10%": "TABLESAMPLE",
    "SELECT * FROM people USING SAMPLE 10": "USING SAMPLE",
    "SELECT * FROM people AT (VERSION => 1)": "time travel",
    "SELECT * FROM (people JOIN visits ON true)": "a parenthesized table or join",
    "SELECT * FROM (people)": "parenthesized table",
    "SELECT * FROM people POSITIONAL JOIN visits": "POSITIONAL JOIN",
    "SELECT * FROM people ASOF JOIN visits ON people.id >= visits.id": "ASOF JOIN",
    "SELECT * FROM people NATURAL JOIN visits": "NATURAL JOIN",
    "SELECT * FROM people, LATERAL (SELECT 1)": "LATERAL",
    "SELECT * FROM read_csv('/etc/passwd')": "table function read_csv",
    "SELECT * FROM range(10)": "table function",
    "SELECT generator(5)": "function generator",
    "SELECT range(5)": "function generate_series",
    "SELECT repeat('x', 400000000)": "function repeat",
    "SELECT lpad(name, 100000, 'x') FROM people": "size argument",
    "SELECT printf('%0100000d', 1)": "function printf",
    "SELECT current_setting('threads')": "function current_setting",
    "SELECT getenv('HOME')": "function getenv",
    "SELECT current_user": "function current_user",
    "SELECT version()": "function current_version",
    "SELECT list_transform([1], x -> x + 1)": "function transform",
    "SELECT [x FOR x IN [1, 2]]": "list comprehension",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r) SELECT * FROM r": (
        "WITH RECURSIVE"
    ),
    "SELECT * FROM people LIMIT 10%": "PERCENT",
    "SELECT * FROM people LIMIT (SELECT 1)": "LIMIT must be a whole number literal",
    "SELECT CAST(name AS INT[]) FROM people": "the type",
    "SELECT CAST(name AS JSON) FROM people": "the type",
    "SELECT $1": "placeholder",
    "SELECT fedsql_hash(name) FROM people": "function fedsql_hash",
    "SELECT * FROM people; SELECT 1": "exactly one statement",
    "DROP TABLE people": "only a SELECT query",
    "SELECT a.b.c.d FROM people": "column name",
}


@pytest.mark.parametrize("sql", list(REFUSED))
def test_refused_constructs_are_named(sql: str) -> None:
    with pytest.raises(RefusedFragment) as info:
        check_fragment(sql, EXPOSED)
    assert REFUSED[sql] in str(info.value), str(info.value)


ACCEPTED = [
    "SELECT p.name, count(*) AS n FROM people AS p JOIN visits AS v ON p.id = v.id "
    "WHERE v.region <> 'x' GROUP BY p.name HAVING count(*) > 1 ORDER BY n DESC LIMIT 5",
    "WITH a AS (SELECT id FROM people), b AS (SELECT id FROM a) SELECT * FROM b",
    "SELECT id, row_number() OVER (PARTITION BY region ORDER BY id ROWS BETWEEN "
    "UNBOUNDED PRECEDING AND CURRENT ROW) AS r FROM people QUALIFY r = 1",
    "SELECT * EXCLUDE (name) FROM people",
    "SELECT COLUMNS('n.*') FROM people",
    "SELECT struct_pack(a := name) AS s, [1, 2][1] AS l FROM people",
    "SELECT CASE WHEN salary > 10 THEN 'hi' ELSE 'lo' END, extract(year FROM birth), "
    "date_trunc('month', birth), substr(name, 1, 2), lpad(name, 8, '0') FROM people",
    "SELECT id FROM people WHERE id IN (SELECT id FROM visits) AND EXISTS "
    "(SELECT 1 FROM hr.staff AS s WHERE s.id = people.id)",
    "SELECT id FROM people UNION ALL SELECT id FROM visits EXCEPT SELECT 1",
    "SELECT count(*) FILTER (WHERE salary > 1), string_agg(name, ',' ORDER BY id) FROM people",
    "SELECT * FROM main.people",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_ordinary_sql_is_accepted(sql: str) -> None:
    check_fragment(sql, EXPOSED)


def test_every_tpch_query_is_in_the_language() -> None:
    from fedsql.bench.compare import tpch_query
    from fedsql.local import TPCH_TABLES

    for n in range(1, 23):
        check_fragment(tpch_query(n), {("", t) for t in TPCH_TABLES})


# -- binding by scope ---------------------------------------------------------------

BIND_REFUSED = {
    'WITH z AS (WITH "salaries" AS (SELECT 1) SELECT 1) SELECT * FROM "salaries"': (
        "table salaries is not exposed"
    ),
    'WITH z AS (WITH "/tmp/x.csv" AS (SELECT 1) SELECT 1) SELECT * FROM "/tmp/x.csv"': (
        "table /tmp/x.csv is not exposed"
    ),
    "SELECT * FROM (WITH c AS (SELECT 1) SELECT * FROM c) AS d, c": "table c is not exposed",
    "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a": "table b is not exposed",
    "WITH a AS (SELECT * FROM a) SELECT * FROM a": "table a is not exposed",
    "WITH people AS (SELECT 1) SELECT * FROM people": "may not be named like the table",
    "WITH a AS (SELECT 1), a AS (SELECT 2) SELECT * FROM a": "defined twice",
    "WITH __fedsql_scan0 AS (SELECT 1) SELECT * FROM __fedsql_scan0": "reserved",
    "SELECT * FROM duckdb_settings": "not exposed",
    "SELECT * FROM sqlite_master": "not exposed",
    "SELECT * FROM information_schema.tables": "not exposed",
    "SELECT * FROM pg_catalog.pg_roles": "not exposed",
    "SELECT * FROM memory.main.people": "catalog-qualified",
    "SELECT * FROM __fedsql_keys0": "not exposed",  # no key set was shipped
}


@pytest.mark.parametrize("sql", list(BIND_REFUSED))
def test_names_bind_by_scope(sql: str) -> None:
    with pytest.raises(RefusedFragment) as info:
        check_fragment(sql, EXPOSED)
    assert BIND_REFUSED[sql] in str(info.value), str(info.value)


def test_ctes_in_scope_and_exposed_tables_bind() -> None:
    tree = sqlglot.parse_one(
        "WITH a AS (SELECT * FROM people) SELECT * FROM a, (WITH b AS (SELECT 1) "
        "SELECT * FROM b) AS d WHERE EXISTS (SELECT 1 FROM a AS a2)",
        read="duckdb",
    )

    def lookup(t: sqlglot.exp.Table) -> str:
        assert t.name == "people", t.name
        return "people"

    got = sorted((b.kind, str(b.target)) for b in lang.bind(tree, lookup))
    assert got == [("cte", "a"), ("cte", "a"), ("cte", "b"), ("table", "people")]


def test_key_sets_bind_only_when_shipped() -> None:
    sql = "SELECT id FROM people WHERE EXISTS (SELECT 1 FROM __fedsql_keys0 AS k WHERE k.k = id)"
    check_fragment(sql, EXPOSED, key_sets=frozenset({"__fedsql_keys0"}))
    with pytest.raises(RefusedFragment, match="not exposed"):
        check_fragment(sql, EXPOSED)
    probe = (
        "SELECT id FROM people WHERE EXISTS (SELECT 1 FROM __fedsql_keys0 WHERE "
        "__fedsql_keys0.k = (SELECT max(name) FROM salaries))"
    )
    with pytest.raises(RefusedFragment, match="table salaries is not exposed"):
        check_fragment(probe, EXPOSED, key_sets=frozenset({"__fedsql_keys0"}))


# -- limits before parsing, and the round trip ---------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT " + "(" * 10_000 + "1" + ")" * 10_000,
        "SELECT " + "(SELECT " * 6_000 + "1" + ")" * 6_000,
        "SELECT " + "[" * 1_000 + "1" + "]" * 1_000,
        "SELECT " + "CASE WHEN true THEN " * 1_000 + "1" + " END" * 1_000,
        "SELECT 1 WHERE " + "NOT " * 10_000 + "true",
        "SELECT " + " + ".join(["1"] * 5_000),
        "SELECT 1 " + "x" * (2 << 20),
    ],
    ids=["parens", "subqueries", "brackets", "case", "not", "plus-chain", "size"],
)
def test_deep_or_huge_input_is_refused_quickly(sql: str) -> None:
    t0 = time.process_time()
    with pytest.raises(RefusedFragment) as info:
        check_fragment(sql, EXPOSED)
    assert time.process_time() - t0 < 2.0
    assert re.search(r"deep|nests|bytes|prefix operators|tokens", str(info.value)), str(info.value)


def test_what_is_written_back_must_parse_to_the_same_tree() -> None:
    with pytest.raises(lang.NotInLanguage, match="written back"):
        tree = sqlglot.parse_one("SELECT a FROM t", read="duckdb")
        tree.expressions[0].replace(sqlglot.exp.Generator(rowcount=sqlglot.exp.Literal.number(5)))
        lang.round_trip(tree, "fragment")


def test_comments_are_dropped() -> None:
    # Comments carry no meaning, and one written back could end somewhere else.
    tree = check_fragment("SELECT 1 /* a */ FROM people -- c", EXPOSED)
    assert "/*" not in tree.sql(dialect="postgres")


# -- the document is the allow-list ---------------------------------------------------


def test_language_document_is_generated_from_the_spec() -> None:
    doc = (ROOT / "docs" / "fragment-language.md").read_text()
    assert doc == markdown(), "regenerate it: python -m fedsql.lang > docs/fragment-language.md"


def test_language_module_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedsql.lang"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith(f"# The fragment language, version {lang.VERSION}")


# -- every DuckDB locked down ---------------------------------------------------------

# Harness code that builds data sets (tests, demo, benchmarks), never reached by an
# analyst's or a coordinator's SQL.
_HARNESS = {"local.py", "scenario.py", "demo.py"}


def test_every_duckdb_is_opened_locked() -> None:
    opened = []
    for path in [*(ROOT / "src" / "fedsql").rglob("*.py"), *(ROOT / "connectors").glob("*.py")]:
        if path.name == "lockdown.py" or path.name in _HARNESS or "bench" in path.parts:
            continue
        if re.search(r"duckdb\.connect\(", path.read_text()):
            opened.append(str(path.relative_to(ROOT)))
    assert opened == [], f"open DuckDB through fedsql.lockdown.open_locked: {opened}"


def test_each_engine_is_locked(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from fedsql.catalog import Catalog
    from fedsql.connectors.duckdb import open_duckdb
    from fedsql.connectors.execution import FragmentRunner
    from fedsql.connectors.files import open_files
    from fedsql.connectors.shape import ShapeMirror
    from fedsql.execute import MergeEngine
    from fedsql.planner.shape import ShapeBinder
    from fedsql.wire import RemoteCatalog, RemoteTable

    (tmp_path / "files").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "files" / "t.parquet")
    con = open_locked(tmp_path / "db.duckdb")
    con.close()
    table = RemoteTable("", "t", pa.schema([("a", pa.int64())]), 1)
    engines = {
        "duckdb backend": open_duckdb(tmp_path / "db.duckdb", None)._con,
        "files backend": open_files(tmp_path / "files", None)._con,
        "shape mirror": ShapeMirror((table,))._con,
        "merge": MergeEngine()._db,
        "shape binder": ShapeBinder(
            Catalog({"a": RemoteCatalog("a", "0", "duckdb", (table,))})
        )._con,
    }

    class _Fake:
        dialect = "sqlite"
        runs_as_written = False
        default_schemas = ("",)
        capabilities = Capabilities()
        max_scans = 4
        per_row_subqueries: frozenset[str] = frozenset()

        def tables(self) -> tuple[RemoteTable, ...]:
            return (table,)

    engines["node's local engine"] = FragmentRunner(_Fake(), None)._localized._engine()  # type: ignore[arg-type]
    secret = tmp_path / "secret.csv"
    secret.write_text("a\ncnry_host_file\n")
    for name, con in engines.items():
        assert is_locked(con), name
        with pytest.raises(Exception, match="disabled by configuration|Permission"):
            con.execute(f"SELECT * FROM read_csv('{secret}')").fetchall()
        with pytest.raises(Exception, match="lock"):
            con.execute("SET enable_external_access = true")
