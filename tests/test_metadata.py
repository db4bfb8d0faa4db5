"""SHOW / DESCRIBE / EXPLAIN / information_schema, and SQL type names, through every
client: Python, `fedsql query` and `fedsql catalog` (subprocess), the shell (pexpect),
Flight SQL (ADBC). Expectations come from the analyst's catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flight_sql
import pexpect
import pyarrow as pa
import pytest
from adbc_driver_flightsql import DatabaseOptions
from conftest import PASSWORDS
from helpers import LocalService
from test_shell import PROMPT, spawn

import fedsql
from fedsql import metadata
from fedsql.errors import CatalogError, PlanError
from fedsql.local import LocalFederation
from fedsql.sqltypes import sql_type, xdbc_data_type

INFO_COLUMNS = (
    "SELECT table_catalog, table_name, column_name, data_type FROM information_schema.columns"
)


def expected_columns(fed: fedsql.Federation) -> set[tuple[str, str, str, str]]:
    return {
        (t.agency, t.name, f.name, sql_type(f.type))
        for t in fed.catalog.tables
        for f in t.arrow_schema
    }


def rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True))


def test_sql_type_names() -> None:
    cases = {
        pa.string(): "VARCHAR",
        pa.large_string(): "VARCHAR",
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
        pa.int16(): "SMALLINT",
        pa.float64(): "DOUBLE",
        pa.bool_(): "BOOLEAN",
        pa.date32(): "DATE",
        pa.decimal128(10, 2): "DECIMAL(10,2)",
        pa.timestamp("us"): "TIMESTAMP",
        pa.timestamp("ns", "Europe/Berlin"): "TIMESTAMP WITH TIME ZONE",
        pa.binary(): "BLOB",
        pa.list_(pa.string()): "VARCHAR[]",
        pa.map_(pa.string(), pa.int64()): "MAP(VARCHAR, BIGINT)",
        pa.dictionary(pa.int32(), pa.string()): "VARCHAR",
    }
    assert {t: sql_type(t) for t in cases} == cases
    assert [xdbc_data_type(t) for t in (pa.string(), pa.date32(), pa.int64())] == [12, 91, -5]


def test_statement_recognition() -> None:
    st = metadata.statement("show tables in trade.main like 'ord%' ;")
    assert st is not None and (st.kind, st.what, st.scope, st.like) == (
        "show",
        "tables",
        ("trade", "main"),
        "ord%",
    )
    assert metadata.statement('DESC "trade"."orders"').scope == ("trade", "orders")  # type: ignore[union-attr]
    assert metadata.statement("DESCRIBE (SELECT 1)").kind == "describe_query"  # type: ignore[union-attr]
    assert metadata.statement("SELECT 'information_schema' AS x") is None
    assert metadata.statement("SELECT count(*) FROM orders") is None
    with pytest.raises(PlanError, match="SHOW CATALOGS"):
        metadata.statement("SHOW FUNCTIONS")


def test_show_statements_list_the_catalog(fed: fedsql.Federation) -> None:
    cat = fed.catalog
    assert fed.sql("SHOW CATALOGS").column("Catalog").to_pylist() == sorted(cat.agencies)
    schemas = sorted({(t.agency, t.schema_key) for t in cat.tables})
    assert rows(fed.sql("SHOW SCHEMAS")) == schemas
    assert rows(fed.sql("show schemas from TRADE")) == [s for s in schemas if s[0] == "trade"]
    every = sorted((t.agency, t.schema_key, t.name) for t in cat.tables)
    assert rows(fed.sql("SHOW TABLES")) == every
    assert rows(fed.sql("SHOW TABLES FROM trade.main")) == [r for r in every if r[0] == "trade"]
    assert rows(fed.sql("SHOW TABLES LIKE 'part%'")) == [
        r for r in every if r[2].startswith("part")
    ]
    with pytest.raises(CatalogError, match="unknown catalog 'nope'.*trade"):
        fed.sql("SHOW TABLES FROM nope")


def test_describe_table_and_query(fed: fedsql.Federation) -> None:
    orders = fed.catalog.resolve(["trade", "orders"])
    got = fed.sql("DESCRIBE trade.orders")
    assert got.column_names == ["Column", "Type", "Null", "Extra"]
    want = [(f.name, sql_type(f.type)) for f in orders.arrow_schema]
    assert list(zip(got["Column"].to_pylist(), got["Type"].to_pylist(), strict=True)) == want
    assert "DECIMAL(15,2)" in got["Type"].to_pylist() and "DATE" in got["Type"].to_pylist()
    assert rows(fed.sql("SHOW COLUMNS FROM orders")) == rows(got)
    with pytest.raises(CatalogError, match="did you mean trade.orders"):
        fed.sql("DESCRIBE trade.ordrs")
    # DESCRIBE SELECT: the result's types without running it, as running it gives them
    q = (
        "SELECT n_name, count(*) AS n, sum(c_acctbal) AS total, min(o_orderdate) AS first "
        "FROM customer JOIN nation ON c_nationkey = n_nationkey "
        "JOIN orders ON o_custkey = c_custkey GROUP BY n_name"
    )
    described = fed.sql(f"DESCRIBE {q}")
    result = fed.sql(q).schema
    assert described["Column"].to_pylist() == result.names
    assert described["Type"].to_pylist() == [sql_type(f.type) for f in result]


def test_information_schema_over_the_catalog(fed: fedsql.Federation) -> None:
    got = fed.sql(INFO_COLUMNS)
    assert set(rows(got)) == expected_columns(fed) and got.num_rows == len(expected_columns(fed))
    # filters, aggregates, joins and CTEs, answered at the coordinator
    c_tables = fed.sql(
        "SELECT DISTINCT table_name FROM information_schema.columns "
        "WHERE column_name LIKE 'c_%' ORDER BY 1"
    )
    assert c_tables.column(0).to_pylist() == sorted(
        {
            t.name
            for t in fed.catalog.tables
            if any(n.startswith("c_") for n in t.arrow_schema.names)
        }
    )
    joined = fed.sql(
        "WITH t AS (SELECT * FROM information_schema.tables WHERE table_catalog = 'trade') "
        "SELECT t.table_name, count(*) AS n FROM t JOIN information_schema.columns c "
        "USING (table_catalog, table_schema, table_name) GROUP BY 1 ORDER BY 1"
    )
    trade = sorted((t.name, len(t.arrow_schema)) for t in fed.catalog.tables if t.agency == "trade")
    assert rows(joined) == trade
    one = fed.sql("SELECT DISTINCT table_catalog FROM registry.information_schema.columns")
    assert one.column(0).to_pylist() == ["registry"]
    schemata = fed.sql("SELECT catalog_name, schema_name FROM information_schema.schemata")
    assert sorted(rows(schemata)) == sorted({(t.agency, t.schema_key) for t in fed.catalog.tables})
    assert fed.last_stats is not None and fed.last_stats.fragments == ()  # no agency asked


@pytest.mark.parametrize(
    "sql, error",
    [
        ("SELECT * FROM information_schema.columns, trade.orders", "not an information_sch"),
        ("SELECT * FROM information_schema.tables t, pg_catalog.pg_tables", "not an inform"),
        ("SELECT * FROM information_schema.views", "schemata, tables, columns"),
        ("SELECT * FROM nope.information_schema.tables", "unknown agency 'nope'"),
        ("SELECT current_setting('threads') FROM information_schema.tables", "current_setting"),
        ("SELECT * FROM information_schema.tables, duckdb_settings()", "not in the fragment"),
    ],
)
def test_information_schema_refuses(fed: fedsql.Federation, sql: str, error: str) -> None:
    with pytest.raises((PlanError, CatalogError), match=error):
        fed.sql(sql)


def test_explain_and_explain_analyze(fed: fedsql.Federation) -> None:
    q = "SELECT count(*) FROM orders JOIN customer ON o_custkey = c_custkey"
    plan = "\n".join(fed.sql(f"EXPLAIN {q}").column("Query Plan").to_pylist())
    assert "-> trade" in plan and "-> registry" in plan and "residual" in plan
    analyzed = "\n".join(fed.sql(f"EXPLAIN ANALYZE {q}").column(0).to_pylist())
    assert "agency trade: 1 fragment(s), 15000 rows" in analyzed
    assert "agency registry: 1 fragment(s), 1500 rows" in analyzed
    st = fed.last_stats
    assert st is not None and st["trade"].rows == 15000  # it ran


def test_masks_shown_as_the_user_gets_them(tpch_local: LocalFederation, tmp_path: Path) -> None:
    config = tmp_path / "masked.toml"
    config.write_text(
        tpch_local.config_path.read_text()
        + '\n[[mask]]\ntable = "registry.customer"\ncolumn = "c_phone"\n'
        + 'rule = "partial"\nunless_role = ["auditor"]\n'
    )
    with fedsql.connect(config, user="alice") as alice, fedsql.connect(config, user="bob") as bob:
        extra = dict(rows(alice.sql("DESCRIBE registry.customer").select(["Column", "Extra"])))
        assert extra["c_phone"] == "masked (partial)" and extra["c_name"] == ""
        extra = dict(rows(bob.sql("DESCRIBE registry.customer").select(["Column", "Extra"])))
        assert extra["c_phone"] == ""  # an auditor sees the raw value


# -- the CLI, as a user runs it ---------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedsql", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_cli_query_and_catalog_show_sql_types(
    tpch_local: LocalFederation, fed: fedsql.Federation
) -> None:
    config = str(tpch_local.config_path)
    r = cli("query", "-c", config, "--user", "alice", "--format", "json", INFO_COLUMNS)
    assert r.returncode == 0, r.stderr
    got = {tuple(json.loads(line).values()) for line in r.stdout.splitlines()}
    assert got == expected_columns(fed)
    r = cli("query", "-c", config, "--user", "alice", "SHOW TABLES FROM registry")
    assert r.returncode == 0, r.stderr
    assert "Catalog  | Schema | Table" in r.stdout and "registry | main   | nation" in r.stdout
    r = cli("catalog", "-c", config, "--user", "alice")
    assert r.returncode == 0, r.stderr
    assert "o_totalprice    | DECIMAL(15,2)" in r.stdout and "date32" not in r.stdout


# -- the shell, in its pseudo-terminal ----------------------------------------------


@pytest.fixture
def shell(tpch_local: LocalFederation, tmp_path: Path) -> Iterator[pexpect.spawn]:
    child = spawn(["shell", "-c", str(tpch_local.config_path), "--user", "alice"], tmp_path)
    yield child
    child.close(force=True)


def test_shell_metadata_statements(shell: pexpect.spawn) -> None:
    shell.sendline("SHOW TABLES FROM registry;")
    shell.expect(r"registry \| main\s+\| customer")
    shell.expect_exact("(3 rows)")
    shell.expect(PROMPT)
    shell.sendline("DESCRIBE trade.orders;")
    shell.expect(r"o_totalprice\s+\| DECIMAL\(15,2\)")
    shell.expect(PROMPT)
    shell.sendline("SELECT count(*) AS n FROM information_schema.tables;")
    shell.expect(r"\n\s*8\s*\r?\n")
    shell.expect(PROMPT)
    shell.sendline(".describe registry.nation")
    shell.expect(r"n_nationkey\s+\| BIGINT")
    shell.expect(PROMPT)


# -- Flight SQL, with the ADBC driver -----------------------------------------------


@pytest.fixture(scope="module")
def adbc_alice(service: LocalService) -> Iterator[Any]:
    kwargs = {"username": "alice", "password": PASSWORDS["alice"]}
    if service.ca is not None:
        kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = service.ca.read_text()
    con = flight_sql.connect(service.url, db_kwargs=kwargs, autocommit=True)
    yield con
    con.close()


def test_flight_sql_metadata_statements(adbc_alice: Any, fed: fedsql.Federation) -> None:
    with adbc_alice.cursor() as cur:
        cur.execute("SHOW CATALOGS")
        assert [r[0] for r in cur.fetchall()] == sorted(fed.catalog.agencies)
        cur.execute(INFO_COLUMNS)
        assert set(cur.fetchall()) == expected_columns(fed)
        cur.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'n_name'"
        )
        assert cur.fetchall() == [("nation",)]
        cur.execute("DESCRIBE registry.nation")
        assert [r[:2] for r in cur.fetchall()] == [
            ("n_nationkey", "BIGINT"),
            ("n_name", "VARCHAR"),
            ("n_regionkey", "BIGINT"),
            ("n_comment", "VARCHAR"),
        ]
        cur.execute("EXPLAIN SELECT count(*) FROM nation")
        assert any("-> registry" in r[0] for r in cur.fetchall())


def test_flight_sql_xdbc_type_names(adbc_alice: Any, fed: fedsql.Federation) -> None:
    objects = adbc_alice.adbc_get_objects(depth="columns").read_all().to_pylist()
    got = {
        (c["catalog_name"], t["table_name"], col["column_name"]): (
            col["xdbc_type_name"],
            col["xdbc_data_type"],
        )
        for c in objects
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
        for col in t["table_columns"]
    }
    want = {
        (t.agency, t.name, f.name): (sql_type(f.type), xdbc_data_type(f.type))
        for t in fed.catalog.tables
        for f in t.arrow_schema
    }
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in want.items()}
    assert got[("trade", "orders", "o_totalprice")][0] == "DECIMAL(15,2)"
