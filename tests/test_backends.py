"""PostgreSQL and SQLite agencies: the mixed federation, type round-trips,
capability-aware pushdown and fallback, read-only access at the source."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import adbc_driver_postgresql.dbapi as pgdb
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import start_error
from test_planner_results import QUERIES

import fedsql
from fedsql.bench.compare import diff_tables, has_order_by, tpch_query
from fedsql.config import load_agency
from fedsql.connectors.backend import BackendError
from fedsql.connectors.postgres import PostgresBackend
from fedsql.connectors.sqlite import SQLiteBackend
from fedsql.errors import ConfigError
from fedsql.local import LocalFederation, write_agency_toml
from fedsql.pgserver import PostgresServer


@pytest.mark.parametrize("n", range(1, 23), ids=lambda n: f"q{n:02d}")
def test_mixed_federation_tpch(n: int, mixed: fedsql.Federation, central) -> None:  # type: ignore[no-untyped-def]
    sql = tpch_query(n)
    want = central.sql(sql).to_arrow_table()
    got = mixed.sql(sql)
    assert diff_tables(got, want, has_order_by(sql)) is None
    assert got.schema.types == want.schema.types  # typed as one DuckDB would type it


# Planner features whose fragments PostgreSQL and SQLite must run as DuckDB would.
MIXED_QUERIES = {
    name: sql
    for name, sql in QUERIES.items()
    if name.startswith(("partial aggregates", "aggregates over a union", "eager aggregation:"))
    or "scalar subquer" in name
    or name.startswith("select distinct")
}
MIXED_QUERIES["distinct ordered by an expression (PostgreSQL refuses it: scans)"] = (
    "SELECT DISTINCT o_orderpriority FROM orders ORDER BY length(o_orderpriority), 1"
)


@pytest.mark.parametrize("sql", MIXED_QUERIES.values(), ids=MIXED_QUERIES.keys())
def test_planner_features_on_other_backends(sql: str, mixed: fedsql.Federation, central) -> None:  # type: ignore[no-untyped-def]
    """Partial aggregates, scalar values as literals and DISTINCT at the agencies,
    written for PostgreSQL and SQLite: results equal the oracle's."""
    got = mixed.sql(sql)
    assert diff_tables(got, central.sql(sql).to_arrow_table(), has_order_by(sql)) is None


def test_expressions_are_computed_at_duckdb_agencies_only(mixed: fedsql.Federation) -> None:
    """PostgreSQL and SQLite would compute them their own way: they send columns."""
    plan = mixed.plan(tpch_query(9))
    by = {f.agency: f.sql for f in plan.fragments}
    assert "__fedsql_e" not in by["trade"] and "__fedsql_e" not in by["registry"]


def test_catalog_reports_dialects_and_capabilities(mixed: fedsql.Federation) -> None:
    cats = mixed.catalog.catalogs
    assert (cats["trade"].backend, cats["trade"].dialect) == ("postgres", "postgres")
    assert (cats["registry"].backend, cats["registry"].dialect) == ("sqlite", "sqlite")
    # in fedsql's words, not the parser's
    assert not cats["registry"].capabilities.has("pattern_matching")
    assert cats["trade"].capabilities.has("plain_like")
    assert cats["trade"].capabilities.has("text_ordering")  # the mixed server runs --locale=C
    assert not cats["trade"].capabilities.has("exact_expressions")
    lineitem = next(t for t in cats["trade"].tables if t.name == "lineitem")
    assert lineitem.arrow_schema.field("l_quantity").type == pa.decimal128(15, 2)
    assert lineitem.arrow_schema.field("l_shipdate").type == pa.date32()
    assert lineitem.row_count_estimate > 50_000  # pg_class.reltuples after ANALYZE
    customer = next(t for t in cats["registry"].tables if t.name == "customer")
    assert customer.row_count_estimate == 1500
    assert customer.arrow_schema.field("c_acctbal").type == pa.decimal128(15, 2)


def test_sqlite_gets_only_what_it_computes_like_duckdb(mixed: fedsql.Federation, central) -> None:  # type: ignore[no-untyped-def]
    sql = (
        "SELECT c_name, c_acctbal * 2 AS twice FROM customer "
        "WHERE c_name LIKE '%00001%' AND c_nationkey = 3 ORDER BY c_name"
    )
    plan = mixed.plan(sql)
    (frag,) = [f for f in plan.fragments if f.agency == "registry"]
    assert "LIKE" not in frag.sql and "* 2" not in frag.sql and "c_nationkey = 3" in frag.sql
    assert diff_tables(mixed.sql(sql), central.sql(sql).to_arrow_table(), True) is None


def test_rejected_fragment_is_retried_smaller(mixed: fedsql.Federation, central) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL has no GROUP BY ALL: the connector says so (FAILED_PRECONDITION),
    and the coordinator plans again with plain scans at that agency."""
    sql = "SELECT o_orderpriority, count(*) AS n FROM orders GROUP BY ALL ORDER BY ALL"
    assert mixed.plan(sql).fragments[0].kind == "query"  # first try: all at trade
    got = mixed.sql(sql)
    assert diff_tables(got, central.sql(sql).to_arrow_table(), True) is None
    st = mixed.last_stats
    assert st is not None and [r.fragment.kind for r in st.fragments] == ["table"]


def test_masks_hold_on_postgres_and_sqlite(tmp_path: Path, pg_server: PostgresServer) -> None:
    """Policy views (hash included) run at the agency whatever its backend."""
    dsn = pg_server.create_database("policy_pg")
    with pgdb.connect(dsn) as con, con.cursor() as cur:
        cur.execute("CREATE TABLE people (nid TEXT, name TEXT, born DATE, income NUMERIC(12,2))")
        cur.execute(
            "INSERT INTO people VALUES ('NID1', 'Anna Smith', DATE '1980-05-06', 51234.5),"
            " ('NID2', 'Ben Okafor', DATE '1975-01-02', 72000), (NULL, NULL, NULL, NULL)"
        )
        con.commit()
    dsn = pg_server.create_reader("policy_pg", ["people"])
    sq = tmp_path / "tax.sqlite"
    with sqlite3.connect(sq) as con:
        con.execute("CREATE TABLE returns (nid VARCHAR, employer VARCHAR)")
        con.execute("INSERT INTO returns VALUES ('NID1', 'Acme'), ('NID2', 'Globex')")
    key = tmp_path / "k"
    key.write_text("0123456789abcdef0123456789abcdef")
    policy = (
        '[[mask]]\ntable = "{t}"\ncolumn = "nid"\nrule = "hash"\n\n'
        '[[mask]]\ntable = "{t}"\ncolumn = "{c}"\nrule = "{r}"\n'
    )
    tomls = [
        write_agency_toml(
            tmp_path / "pg.toml",
            "pg",
            "postgres",
            dsn,
            extra=policy.format(t="people", c="name", r="partial"),
        ),
        write_agency_toml(
            tmp_path / "sq.toml",
            "sq",
            "sqlite",
            sq,
            extra=policy.format(t="returns", c="employer", r="redact"),
        ),
    ]
    for t in tomls:
        t.write_text(t.read_text().replace("[backend]", f'hash_key_file = "{key}"\n\n[backend]'))
    with LocalFederation(tmp_path, tomls) as local, fedsql.connect(local.config_path) as fed:
        got = fed.sql(
            "SELECT p.name, p.born, p.income, r.employer FROM people p "
            "JOIN returns r ON p.nid = r.nid ORDER BY p.income"
        )
        assert got.to_pylist() == [
            {
                "name": "******mith",
                "born": dt.date(1980, 5, 6),
                "income": decimal.Decimal("51234.50"),
                "employer": "***",
            },
            {
                "name": "******afor",
                "born": dt.date(1975, 1, 2),
                "income": decimal.Decimal("72000.00"),
                "employer": "***",
            },
        ]
        assert fed.sql("SELECT count(*) FROM people WHERE nid = 'NID1'").column(0)[0].as_py() == 0


# -- type round-trips --------------------------------------------------------------

TYPES = pa.table(
    {
        "i64": pa.array([1, -(2**62), None], pa.int64()),
        "f64": pa.array([1.5, -0.25, None], pa.float64()),
        "dec": pa.array(
            [decimal.Decimal("12345.67"), decimal.Decimal("-0.01"), None], pa.decimal128(15, 2)
        ),
        "d": pa.array([dt.date(1992, 1, 2), dt.date(2038, 12, 31), None], pa.date32()),
        "ts": pa.array(
            [dt.datetime(2001, 2, 3, 4, 5, 6, 789000), dt.datetime(1970, 1, 1), None],
            pa.timestamp("us"),
        ),
        "b": pa.array([True, False, None], pa.bool_()),
        "s": pa.array(["plain", "ünïcødé ✓ 'quoted'", None], pa.string()),
    }
)


def _serve_types(kind: str, tmp_path: Path, pg: PostgresServer) -> Path:
    if kind in ("duckdb", "files"):
        target = tmp_path / ("t.duckdb" if kind == "duckdb" else "files")
        if kind == "files":
            target.mkdir()
            pq.write_table(TYPES, target / "types.parquet")
        else:
            con = duckdb.connect(str(target))
            con.register("src", TYPES)
            con.execute("CREATE TABLE types AS SELECT * FROM src")
            con.close()
        where: str | Path = target
    elif kind == "sqlite":
        where = tmp_path / "t.sqlite"
        with sqlite3.connect(where) as con:
            con.execute(
                "CREATE TABLE types (i64 BIGINT, f64 DOUBLE, dec DECIMAL(15,2), d DATE, "
                "ts TIMESTAMP, b BOOLEAN, s VARCHAR)"
            )
            con.executemany(
                "INSERT INTO types VALUES (?,?,?,?,?,?,?)",
                [
                    (1, 1.5, 12345.67, "1992-01-02", "2001-02-03 04:05:06.789", 1, "plain"),
                    (
                        -(2**62),
                        -0.25,
                        -0.01,
                        "2038-12-31",
                        "1970-01-01 00:00:00",
                        0,
                        "ünïcødé ✓ 'quoted'",
                    ),
                    (None,) * 7,
                ],
            )
    else:
        db = f"types_{abs(hash(str(tmp_path))) % 10**8}"
        where = pg.create_database(db)
        with pgdb.connect(where) as con, con.cursor() as cur:
            cur.execute(
                "CREATE TABLE types (i64 BIGINT, f64 DOUBLE PRECISION, dec NUMERIC(15,2),"
                " d DATE, ts TIMESTAMP, b BOOLEAN, s TEXT)"
            )
            cur.adbc_ingest("types", TYPES, mode="append")
            con.commit()
        where = pg.create_reader(db, ["types"])
    return write_agency_toml(tmp_path / "a.toml", "a", kind, where)


@pytest.mark.parametrize("kind", ["duckdb", "files", "sqlite", "postgres"])
def test_type_round_trip(kind: str, tmp_path: Path, pg_server: PostgresServer) -> None:
    toml = _serve_types(kind, tmp_path, pg_server)
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        got = fed.sql("SELECT * FROM types ORDER BY i64 NULLS LAST")
        want = TYPES.take([1, 0, 2])
        assert got.schema.types == want.schema.types, got.schema
        assert got.to_pylist() == want.to_pylist()
        # and computed on the way: filters, arithmetic, a NULL-aware aggregate
        t = fed.sql(
            "SELECT count(s) AS n, sum(dec) AS total, max(d) AS last FROM types "
            "WHERE b OR b IS NULL"
        )
        assert t.to_pylist() == [
            {"n": 1, "total": decimal.Decimal("12345.67"), "last": dt.date(1992, 1, 2)}
        ]


# -- read-only at the source ---------------------------------------------------------


def test_postgres_sessions_are_read_only(pg_server: PostgresServer, tmp_path: Path) -> None:
    dsn = pg_server.create_database("ro_check")  # as the superuser: the sessions alone refuse
    toml = write_agency_toml(
        tmp_path / "a.toml", "a", "postgres", dsn, extra="allow_writable_role = true\n"
    )
    backend = PostgresBackend(load_agency(toml).backend)
    try:
        for sql in ("CREATE TABLE x (a int)", "CREATE TEMP TABLE y AS SELECT 1 AS a"):
            with pytest.raises(BackendError):
                run = backend.execute(sql, 0)
                list(run.reader)
                run.close()
        run = backend.execute("SELECT current_setting('transaction_read_only') AS ro", 0)
        assert pa.Table.from_batches(list(run.reader)).column(0)[0].as_py() == "on"
        run.close()
    finally:
        backend.close()


def test_sqlite_is_opened_read_only(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (a INT)")
    backend = SQLiteBackend(db, None)
    with pytest.raises(BackendError):
        run = backend.execute("INSERT INTO t VALUES (1)", 0)
        list(run.reader)


def test_postgres_statement_timeout_and_bounded_pool(
    pg_server: PostgresServer, mixed_local: LocalFederation, tmp_path: Path
) -> None:
    trade = (mixed_local.work / "trade.toml").read_text()
    dsn = trade.split('dsn = "')[1].split('"')[0]
    toml = write_agency_toml(
        tmp_path / "t.toml",
        "trade",
        "postgres",
        dsn,
        extra="pool_size = 2\nstatement_timeout_seconds = 1\n",
    )
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        with pytest.raises(fedsql.FedSQLError, match="statement timeout"):
            fed.sql("SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_tax + b.l_tax > 1")
        results: list[int] = []
        errors: list[Exception] = []

        def worker() -> None:
            try:
                results.append(fed.sql("SELECT count(*) FROM orders").column(0)[0].as_py())
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and results == [15000] * 8


def test_postgres_schemas_are_qualified_names(pg_server: PostgresServer, tmp_path: Path) -> None:
    dsn = pg_server.create_database("schemas")
    with pgdb.connect(dsn) as con, con.cursor() as cur:
        cur.execute("CREATE SCHEMA sales")
        cur.execute("CREATE TABLE sales.invoices (id BIGINT, amount NUMERIC(10,2))")
        cur.execute("CREATE TABLE invoices (id BIGINT)")
        cur.execute("INSERT INTO sales.invoices VALUES (1, 9.99), (2, 20)")
        con.commit()
    dsn = pg_server.create_reader("schemas", ["sales.invoices", "invoices"])
    toml = write_agency_toml(tmp_path / "a.toml", "acct", "postgres", dsn)
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        got = fed.sql("SELECT sum(amount) AS s FROM acct.sales.invoices")
        assert got.column(0)[0].as_py() == decimal.Decimal("29.99")
        assert fed.sql("SELECT count(*) FROM acct.invoices").column(0)[0].as_py() == 0
        with pytest.raises(fedsql.CatalogError, match="unknown table"):
            fed.sql("SELECT * FROM acct.nosuch.invoices")


def test_postgres_config_errors(tmp_path: Path) -> None:
    bad = write_agency_toml(
        tmp_path / "a.toml", "a", "postgres", "postgresql://u:secret@127.0.0.1:1/db"
    )
    with pytest.raises(ConfigError, match="must not contain a password"):
        load_agency(bad)
    missing = write_agency_toml(
        tmp_path / "b.toml",
        "b",
        "postgres",
        "postgresql://u@127.0.0.1:1/db",
        extra='password_env = "FEDSQL_TEST_NO_SUCH_VAR"\n',
    )
    assert "FEDSQL_TEST_NO_SUCH_VAR" in start_error(missing)
    down = write_agency_toml(tmp_path / "c.toml", "c", "postgres", "postgresql://u@127.0.0.1:9/db")
    assert "cannot connect to PostgreSQL" in start_error(down)


LOCAL_ENGINE_QUERIES = {
    "q01": tpch_query(1),
    "q04": tpch_query(4),
    "q18": tpch_query(18),
    "q21": tpch_query(21),
    # the filter on the NULL-supplying side must not reach lineitem's scan
    "outer": "SELECT o.o_orderkey, l.l_linenumber FROM orders o LEFT JOIN lineitem l "
    "ON l.l_orderkey = o.o_orderkey AND l.l_quantity > 45 "
    "WHERE o.o_orderkey < 400 AND l.l_linenumber IS NULL ORDER BY 1",
    # a correlated scalar subquery: what "auto" sends to the node's DuckDB
    "correlated": "SELECT count(*) AS n FROM lineitem l WHERE l.l_quantity > "
    "(SELECT avg(l2.l_quantity) FROM lineitem l2 WHERE l2.l_orderkey = l.l_orderkey)",
}


@pytest.fixture(scope="module")
def local_engine(mixed_local: LocalFederation, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The mixed federation again, its PostgreSQL agency computing in its own DuckDB."""
    work = tmp_path_factory.mktemp("local-engine")
    if (mixed_local.work / "pki").exists():  # the same CA and coordinator certificate
        shutil.copytree(mixed_local.work / "pki", work / "pki")
    tomls = []
    for agency in ("trade", "registry", "industry"):
        text = (mixed_local.work / f"{agency}.toml").read_text()
        if agency == "trade":
            text = text.replace("[backend]\n", '[backend]\nengine = "local"\n', 1)
        (work / f"{agency}.toml").write_text(text)
        tomls.append(work / f"{agency}.toml")
    with LocalFederation(work, tomls) as local, fedsql.connect(local.config_path) as f:
        yield f, work


@pytest.mark.parametrize("name", LOCAL_ENGINE_QUERIES)
def test_postgres_local_engine_equals_the_oracle(name: str, local_engine, central) -> None:  # type: ignore[no-untyped-def]
    fed, work = local_engine
    sql = LOCAL_ENGINE_QUERIES[name]
    want = central.sql(sql).to_arrow_table()
    got = fed.sql(sql)
    assert diff_tables(got, want, has_order_by(sql)) is None
    assert got.schema.types == want.schema.types
    audit = [json.loads(line) for line in (work / "trade-audit.jsonl").read_text().splitlines()]
    assert audit and all(r.get("engine") == "local" for r in audit if r.get("outcome") == "ok")


def test_auto_engine_computes_correlated_subqueries_locally(
    mixed: fedsql.Federation, mixed_local: LocalFederation, central
) -> None:  # type: ignore[no-untyped-def]
    sql = LOCAL_ENGINE_QUERIES["correlated"]
    assert diff_tables(mixed.sql(sql), central.sql(sql).to_arrow_table(), False) is None
    last = json.loads((mixed_local.work / "trade-audit.jsonl").read_text().splitlines()[-1])
    assert last["engine"] == "local"
    mixed.sql(tpch_query(1))
    last = json.loads((mixed_local.work / "trade-audit.jsonl").read_text().splitlines()[-1])
    assert last["engine"] == "native"  # PostgreSQL aggregates in place faster than it exports


@pytest.mark.parametrize(
    "sql",
    [
        tpch_query(9),
        tpch_query(5),
        tpch_query(3),
        "SELECT count(*) AS n FROM orders o JOIN supplier s "
        "ON o.o_clerk = s.s_name WHERE s.s_acctbal > 0",
    ],
    ids=["q09", "q05", "q03", "string-keys"],
)
def test_key_sets_reach_postgres_as_arrays(
    sql: str,
    mixed: fedsql.Federation,
    mixed_local: LocalFederation,
    central,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many join keys travel to a PostgreSQL agency as an Arrow key set, which its
    connector writes into the query as ``= ANY(array)``: exact, and reduced."""
    import fedsql.execute

    monkeypatch.setattr(fedsql.planner.render, "INLINE_KEYS", 10)
    audit = mixed_local.work / "trade-audit.jsonl"
    before = len(audit.read_text().splitlines())
    got = mixed.sql(sql)
    assert diff_tables(got, central.sql(sql).to_arrow_table(), has_order_by(sql)) is None
    records = [json.loads(line) for line in audit.read_text().splitlines()[before:]]
    assert any(r.get("key_sets") for r in records if r["outcome"] == "ok")


def test_sqlite_type_change_past_the_first_batch_is_retried_with_scans(tmp_path: Path) -> None:
    """A pushed join whose text column is NULL for more rows than the first batch
    holds (sqlite.TYPED_ROWS) and text after: the driver fails mid-stream; the
    connector says 'unsupported' (not a refusal), and the coordinator's retry with
    table scans at that agency answers the query."""
    from fedsql.connectors.sqlite import TYPED_ROWS

    n = TYPED_ROWS + 20_000
    db = tmp_path / "lite.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE a (k INTEGER PRIMARY KEY)")
        con.execute("CREATE TABLE b (k INTEGER PRIMARY KEY, s TEXT)")
        con.executemany("INSERT INTO a VALUES (?)", ((i,) for i in range(n)))
        con.executemany("INSERT INTO b VALUES (?, ?)", ((i, f"s{i}") for i in range(n - 10, n)))
    toml = write_agency_toml(tmp_path / "lite.toml", "lite", "sqlite", db)
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        got = fed.sql("SELECT a.k, b.s FROM a LEFT JOIN b ON a.k = b.k")
        audit = (tmp_path / "lite-audit.jsonl").read_text().splitlines()
    assert got.num_rows == n
    assert sorted(s for s in got.column("s").to_pylist() if s is not None) == sorted(
        f"s{i}" for i in range(n - 10, n)
    )
    outcomes = [json.loads(line).get("outcome") for line in audit]
    assert "unsupported" in outcomes and outcomes[-1] == "ok", outcomes


def test_sqlite_whole_number_decimals_arrive_as_decimals(tmp_path: Path) -> None:
    """SQLite keeps a DECIMAL value that is a whole number as an INTEGER, so a batch
    of them (TPC-H's l_quantity) reaches the connector as int64, which Arrow will not
    cast to DECIMAL(15, 2) by type alone: scanned, filtered and summed, they are the
    decimals one DuckDB gives."""
    db = tmp_path / "q.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE items (k INTEGER, q DECIMAL(15,2), p DECIMAL(15,2))")
        con.executemany(
            "INSERT INTO items VALUES (?, ?, ?)",
            [(1, 17, 1.5), (2, 36, 2), (3, None, 0.25), (4, 8, 100)],
        )
    toml = write_agency_toml(tmp_path / "q.toml", "q", "sqlite", db)
    dec = decimal.Decimal
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        got = fed.sql("SELECT k, q, p FROM items ORDER BY k")
        assert got.schema.field("q").type == pa.decimal128(15, 2)
        assert got.column("q").to_pylist() == [dec("17.00"), dec("36.00"), None, dec("8.00")]
        assert got.column("p").to_pylist() == [dec("1.50"), dec("2.00"), dec("0.25"), dec("100.00")]
        total = fed.sql("SELECT sum(q) AS s, count(*) AS n FROM items WHERE q > 10")
        assert total.to_pylist() == [{"s": dec("53.00"), "n": 2}]


def test_sqlite_correlated_exists_runs_in_the_node_duckdb(tmp_path: Path) -> None:
    """SQLite runs a correlated EXISTS (or IN) once per outer row: TPC-H Q21 took three
    minutes at SF 0.1. With engine = "auto", such a fragment over enough rows runs in
    the node's own DuckDB over scans (audited engine "local"), answers as one DuckDB
    does, and a fragment without one still runs in SQLite."""
    from fedsql.connectors.execution import LOCAL_MIN_ROWS

    n = LOCAL_MIN_ROWS
    db = tmp_path / "c.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE a (k INTEGER, v INTEGER)")
        con.execute("CREATE TABLE b (k INTEGER, w INTEGER)")
        con.executemany("INSERT INTO a VALUES (?, ?)", ((i, i % 7) for i in range(n)))
        con.executemany("INSERT INTO b VALUES (?, ?)", ((i * 3, i % 5) for i in range(n // 3)))
    toml = write_agency_toml(tmp_path / "c.toml", "c", "sqlite", db)
    exists = (
        "SELECT count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w <> a.v)"
    )
    within = "SELECT count(*) AS n FROM a WHERE a.v IN (SELECT b.w FROM b WHERE b.k = a.k)"
    want = duckdb.connect()
    want.execute("CREATE TABLE a AS SELECT range AS k, range % 7 AS v FROM range($1)", [n])
    want.execute("CREATE TABLE b AS SELECT range * 3 AS k, range % 5 AS w FROM range($1)", [n // 3])
    with LocalFederation(tmp_path, [toml]) as local, fedsql.connect(local.config_path) as fed:
        audit = tmp_path / "c-audit.jsonl"
        for sql in (exists, within):
            got = fed.sql(sql).column("n").to_pylist()
            assert got == [want.execute(sql).fetchone()[0]], sql
            assert json.loads(audit.read_text().splitlines()[-1])["engine"] == "local", sql
        fed.sql("SELECT count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = 3)")
        assert json.loads(audit.read_text().splitlines()[-1])["engine"] == "native"
