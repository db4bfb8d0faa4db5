"""One conformance suite for every backend (after Trino's BaseConnectorTest).

The same tests run against a DuckDB, a files, a SQLite and two PostgreSQL
agencies (``--locale=C`` and initdb's default locale): types round trip; each
capability a backend declares is pushed to it and answered as the oracle
answers, each one it lacks is not pushed and still answered right; refusals;
masks and row filters; cancel; limits; one audit line per call. A capability a
backend declares is a capability this suite proves.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fedsql
from fedsql import reasons
from fedsql.capabilities import ALL_FEATURES
from fedsql.channels import open_channel
from fedsql.config import load_federation
from fedsql.local import LocalFederation, split_agencies, write_agency_toml
from fedsql.pgserver import PostgresServer
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import ipc_chunks_to_reader

ROWS = 3000  # more join keys than travel inline, so key sets are shipped
BACKENDS = {
    "duck": "duckdb",
    "files": "files",
    "lite": "sqlite",
    "pgc": "postgres",
    "pgd": "postgres",
}
POLICY = """
[[mask]]
table = "p"
column = "secret"
rule = "redact"
unless_role = ["auditor"]

[[row_filter]]
table = "p"
where = "level < 3"
unless_role = ["auditor"]

[limits]
max_seconds = 5
"""


def _tables() -> dict[str, pa.Table]:
    ids = list(range(ROWS))
    return {
        "t": pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "amount": pa.array(
                    [decimal.Decimal(i % 997) / 100 for i in ids], pa.decimal128(10, 2)
                ),
                "d": pa.array([dt.date(1990 + i % 30, 1 + i % 12, 1 + i % 28) for i in ids]),
                "name": [("abc", "Bcd", "zeta", "Ärger", "a_b")[i % 5] + str(i % 7) for i in ids],
                "score": pa.array([float(i % 13) / 3 for i in ids]),
            }
        ),
        "u": pa.table({"id": pa.array(ids[::3], pa.int64()), "tag": ["abc0", "zeta1"] * 500}),
        "p": pa.table(
            {
                "id": pa.array(ids[:50], pa.int64()),
                "level": pa.array([i % 5 for i in ids[:50]], pa.int32()),
                "secret": [f"NID{i:04d}" for i in ids[:50]],
            }
        ),
    }


@dataclass
class Suite:
    fed: fedsql.Federation
    auditor: fedsql.Federation
    oracle: duckdb.DuckDBPyConnection
    local: LocalFederation
    stubs: dict[str, pb_grpc.ConnectorStub]

    def raw(self, agency: str, sql: str, timeout: float = 30) -> pa.Table:
        req = pb.ExecuteRequest(
            query_id=f"conf-{time.monotonic_ns()}",
            sql=sql,
            principal=pb.Principal(user="conformance", roles=["analyst"]),
        )
        msgs = list(self.stubs[agency].Execute(req, timeout=timeout))
        return ipc_chunks_to_reader(m.arrow_ipc for m in msgs if m.arrow_ipc).read_all()

    def audit(self, agency: str) -> list[dict[str, object]]:
        path = self.local.work / f"{agency}-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory,
    pg_server: PostgresServer,
    pg_server_default_locale: PostgresServer,
) -> Iterator[Suite]:
    work = tmp_path_factory.mktemp("conformance")
    parquet = work / "parquet"
    parquet.mkdir()
    tables = _tables()
    for name, table in tables.items():
        pq.write_table(table, parquet / f"{name}.parquet")
    names = tuple(tables)
    data = split_agencies(
        parquet,
        work,
        {a: k for a, k in BACKENDS.items() if a != "pgd"},
        {a: names for a in BACKENDS if a != "pgd"},
        pg=pg_server,
    )
    data |= split_agencies(parquet, work, "postgres", {"pgd": names}, pg=pg_server_default_locale)
    data |= split_agencies(parquet, work, "duckdb", {"hub": ("u",)})
    tomls = [
        write_agency_toml(work / f"{a}.toml", a, kind, where, POLICY if a != "hub" else "")
        for a, (kind, where) in data.items()
    ]
    oracle = duckdb.connect()
    for name, table in tables.items():
        oracle.register(f"raw_{name}", table)
    oracle.execute("CREATE TABLE t AS SELECT * FROM raw_t")
    oracle.execute("CREATE TABLE u AS SELECT * FROM raw_u")
    oracle.execute(
        "CREATE TABLE p AS SELECT id, level, CASE WHEN secret IS NULL THEN NULL ELSE '***' END "
        "AS secret FROM raw_p WHERE level < 3"
    )
    users = '[user.ana]\nroles = ["analyst"]\n\n[user.aud]\nroles = ["auditor"]\n'
    with LocalFederation(work, tomls, users=users) as local:
        cfg = load_federation(local.config_path)
        channels = {a: open_channel(cfg.connector(a)) for a in data}
        with (
            fedsql.connect(local.config_path, user="ana") as fed,
            fedsql.connect(local.config_path, user="aud") as auditor,
        ):
            stubs = {a: pb_grpc.ConnectorStub(ch) for a, (ch, _) in channels.items()}
            yield Suite(fed, auditor, oracle, local, stubs)
        for _, closer in channels.values():
            closer.close()


AGENCIES = list(BACKENDS)


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    def norm(v: object) -> object:
        return round(v, 9) if isinstance(v, float) else v

    return sorted((tuple(norm(v) for v in row.values()) for row in table.to_pylist()), key=repr)


def _agrees(suite: Suite, agency: str, sql: str) -> None:
    got = suite.fed.sql(sql.format(a=f"{agency}."))
    want = suite.oracle.sql(sql.format(a="")).to_arrow_table()
    assert _rows(got) == _rows(want), (agency, sql)
    assert [f.type for f in got.schema] == [f.type for f in want.schema], (agency, sql)


@pytest.mark.parametrize("agency", AGENCIES)
def test_types_round_trip(suite: Suite, agency: str) -> None:
    _agrees(suite, agency, "SELECT * FROM {a}t")
    _agrees(suite, agency, "SELECT * FROM {a}u")


# Each feature, and one query that needs it (and, as far as possible, only it).
NEEDS = {
    "decimal_arithmetic": "SELECT sum(amount * 2) AS s, avg(amount) AS m FROM {a}t",
    "dates": "SELECT extract(year FROM d) AS y, count(*) AS n FROM {a}t GROUP BY 1",
    "date_parts": "SELECT extract(DAYOFYEAR FROM d) AS y, extract(DAYOFWEEK FROM d) AS w FROM {a}t",
    "casts": "SELECT CAST(id AS VARCHAR) AS s FROM {a}t WHERE id < 20",
    "plain_like": "SELECT count(*) AS n FROM {a}t WHERE name LIKE 'a%'",
    "pattern_matching": "SELECT count(*) AS n FROM {a}t WHERE name LIKE 'a\\_%' OR name ILIKE 'B%'",
    "string_functions": "SELECT left(name, 2) AS l, count(*) AS n FROM {a}t GROUP BY 1",
    "string_functions_extra": "SELECT md5(name) AS h FROM {a}t WHERE id < 5",
    "negative_substring": "SELECT substr(name, -2) AS s FROM {a}t WHERE id < 5",
    "unicode_case": "SELECT lower(name) AS l, count(*) AS n FROM {a}t GROUP BY 1",
    "extended_aggregates": "SELECT arg_max(name, id) AS m, arg_min(name, id) AS n FROM {a}t",
    "math_functions": "SELECT sum(sqrt(score)) AS s FROM {a}t",
    "duckdb_functions": "SELECT hash(id) AS h FROM {a}t WHERE id < 5",
    "list_aggregates": "SELECT string_agg(name, ',' ORDER BY id) AS s FROM {a}t WHERE id < 9",
    "statistics": "SELECT stddev_samp(score) AS s FROM {a}t",
    "text_ordering": "SELECT name FROM {a}t WHERE name > 'Bcd' ORDER BY name, id LIMIT 4",
    "qualify": "SELECT id, name FROM {a}t "
    "QUALIFY row_number() OVER (PARTITION BY name ORDER BY id) = 1 ORDER BY id LIMIT 3",
    "correlated_subqueries": "SELECT count(*) AS n FROM {a}t WHERE id > "
    "(SELECT max(u.id) FROM {a}u AS u WHERE u.tag = t.name)",
}


def _pushed_whole(suite: Suite, agency: str, sql: str) -> bool:
    plan = suite.fed.plan(sql.format(a=f"{agency}."))
    return plan.residual is None and len(plan.fragments) == 1


@pytest.mark.parametrize("agency", AGENCIES)
@pytest.mark.parametrize("feature", list(NEEDS))
def test_each_capability_is_pushed_where_declared_and_right_everywhere(
    suite: Suite, agency: str, feature: str
) -> None:
    caps = suite.fed.catalog.catalogs[agency].capabilities
    sql = NEEDS[feature]
    assert _pushed_whole(suite, agency, sql) == caps.has(feature), (agency, feature)
    _agrees(suite, agency, sql)
    if caps.has(feature):  # declared: the connector itself answers it, as written
        suite.raw(agency, sql.format(a=""))


def test_declared_capabilities_are_the_vocabulary(suite: Suite) -> None:
    for agency in AGENCIES:
        caps = suite.fed.catalog.catalogs[agency].capabilities
        assert caps.features <= ALL_FEATURES and caps.version == "1"
    cats = suite.fed.catalog.catalogs
    assert cats["pgc"].capabilities.has("text_ordering")
    assert not cats["pgd"].capabilities.has("text_ordering")  # a non-C collation


def test_default_collation_keeps_dates_and_numbers_pushed(suite: Suite) -> None:
    """Only text ordering depends on the collation (issue 15): a date range, COUNT(*)
    and GROUP BY ... ORDER BY on numbers go to a default-locale PostgreSQL whole."""
    sql = (
        "SELECT extract(month FROM d) AS m, count(*) AS n FROM {a}t "
        "WHERE d BETWEEN DATE '1995-01-01' AND DATE '1996-12-31' AND id > 10 "
        "GROUP BY 1 ORDER BY 1"
    )
    assert _pushed_whole(suite, "pgd", sql)
    _agrees(suite, "pgd", sql)


@pytest.mark.parametrize("agency", AGENCIES)
def test_exact_expressions_and_key_sets(suite: Suite, agency: str) -> None:
    """Across agencies: computed values where declared (exact_expressions), key sets
    as Arrow where declared (arrow_key_sets), written into the SQL elsewhere."""
    sql = (
        "SELECT count(*) AS n, sum(t.amount * (1 - t.amount)) AS s FROM {a}t AS t "
        "JOIN hub.u AS u ON t.id = u.id WHERE t.amount > 1"
    )
    got = suite.fed.sql(sql.format(a=f"{agency}."))
    want = suite.oracle.sql(sql.format(a="").replace("hub.", "")).to_arrow_table()
    assert _rows(got) == _rows(want)
    caps = suite.fed.catalog.catalogs[agency].capabilities
    plan = suite.fed.plan(sql.format(a=f"{agency}."))
    mine = next(f for f in plan.fragments if f.agency == agency)
    assert mine.arrow_keys == caps.has("arrow_key_sets")
    computed = "1 - " in mine.sql
    assert computed == caps.has("exact_expressions"), mine.sql


@pytest.mark.parametrize("agency", AGENCIES)
def test_refusals(suite: Suite, agency: str) -> None:
    for sql, why in {
        "SELECT * FROM raw_t": "not exposed",
        "SELECT * FROM t UNPIVOT (v FOR k IN (name))": "PIVOT/UNPIVOT",
        "SELECT current_setting('threads')": "current_setting",
        "DROP TABLE t": "only a SELECT",
    }.items():
        with pytest.raises(grpc.RpcError) as info:
            suite.raw(agency, sql)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in (info.value.details() or ""), (agency, sql, info.value.details())
        explained = reasons.read(info.value)  # for programs: no message parsing
        assert explained is not None and explained.reason == reasons.REFUSED


@pytest.mark.parametrize("agency", AGENCIES)
def test_masks_and_row_filters(suite: Suite, agency: str) -> None:
    _agrees(suite, agency, "SELECT * FROM {a}p")
    _agrees(suite, agency, "SELECT level, count(*) AS n FROM {a}p GROUP BY level")
    got = suite.auditor.sql(f"SELECT count(*) AS n, min(secret) AS s FROM {agency}.p")
    assert got.to_pylist() == [{"n": 50, "s": "NID0000"}]
    raw = suite.raw(agency, "SELECT secret FROM p WHERE secret LIKE 'NID%'")
    assert raw.num_rows == 0  # predicates see masked values


@pytest.mark.parametrize("agency", AGENCIES)
def test_cancel_limits_and_one_audit_line_per_call(suite: Suite, agency: str) -> None:
    before = len(suite.audit(agency))
    # max_seconds = 5 ([limits] above): a fragment that runs longer is stopped
    slow = (
        "SELECT count(*) FROM t AS a, t AS b, t AS c "
        "WHERE (a.id * 7 + b.id * 13 + c.id) % 1000003 = 17"
    )
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        suite.raw(agency, slow, timeout=60)
    assert info.value.code() in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,  # declined (too many scans): also clean
    ), info.value.details()
    explained = reasons.read(info.value)
    assert explained is not None and explained.reason in (reasons.LIMIT, reasons.UNSUPPORTED)
    if explained.reason == reasons.LIMIT:
        assert explained.metadata["limit"] == "max_seconds"
    assert time.monotonic() - t0 < 30
    # cancelled by the coordinator going away
    call = suite.stubs[agency].Execute(
        pb.ExecuteRequest(
            query_id="cancel-me",
            sql=slow,
            principal=pb.Principal(user="conformance", roles=["analyst"]),
        ),
        timeout=60,
    )
    threading.Timer(0.5, call.cancel).start()
    with pytest.raises(grpc.RpcError):
        list(call)
    suite.raw(agency, "SELECT count(*) FROM t")
    with pytest.raises(grpc.RpcError):
        suite.raw(agency, "SELECT * FROM nowhere")
    deadline = time.monotonic() + 10
    while len(suite.audit(agency)) < before + 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = suite.audit(agency)[before:]
    assert len(lines) == 4, lines
    assert {str(x["outcome"]) for x in lines} >= {"ok", "refused"}
    assert any(x["outcome"] in ("limit", "unsupported") for x in lines)


def test_suite_covers_every_feature() -> None:
    covered = set(NEEDS) | {"exact_expressions", "arrow_key_sets"}
    assert covered == set(ALL_FEATURES)


def test_every_function_of_the_language_is_core_or_a_feature() -> None:
    from fedsql.capabilities import CORE_FUNCTIONS, FEATURES
    from fedsql.lang.spec import FUNCTIONS

    covered = {k for f in FEATURES.values() for k in f.kinds} | CORE_FUNCTIONS
    language = {k.__name__ for kinds in FUNCTIONS.values() for k in kinds}
    assert language <= covered, sorted(language - covered)
