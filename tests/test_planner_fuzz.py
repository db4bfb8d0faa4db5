"""Random federated queries against the oracle: cross-agency joins with computed
expressions, scalar and IN/EXISTS subqueries, DISTINCT, and aggregates (also
DISTINCT and AVG) over joins and over UNION ALLs of agencies. Values and types
must equal one DuckDB's. A fixed seed in ``make test``;
``FEDSQL_PLANNER_FUZZ=N`` runs N more queries from a random seed."""

from __future__ import annotations

import os
import random

import pytest

import fedsql
from fedsql.bench.compare import diff_tables, has_order_by

AGGREGATES = [
    "sum({x})",
    "count({x})",
    "count(*)",
    "min({x})",
    "max({x})",
    "avg({x})",
    "count(DISTINCT {x})",
    "sum(DISTINCT {x})",
]
JOIN_VALUES = [
    "o_totalprice",
    "o_totalprice * 2",
    "o_shippriority",
    "CASE WHEN c_mktsegment LIKE 'B%' THEN o_totalprice ELSE 0 END",
    "o_totalprice - c_acctbal",
]
JOIN_GROUPS = [
    "c_mktsegment",
    "extract(year FROM o_orderdate)",
    "substring(c_phone, 1, 2)",
    "o_orderpriority",
    "n_name",
]
JOIN_FILTERS = [
    "",
    " AND o_orderdate < DATE '1995-01-01'",
    " AND c_acctbal > (SELECT avg(s_acctbal) FROM supplier)",
    " AND o_totalprice > (SELECT max(p_retailprice) * 100 FROM part)",
    " AND c_custkey IN (SELECT o2.o_custkey FROM orders o2 WHERE o2.o_orderstatus = 'F')",
    " AND NOT EXISTS (SELECT 1 FROM lineitem l WHERE l.l_orderkey = o_orderkey"
    " AND l.l_quantity > 49)",
]
JOIN = "FROM customer, orders, nation WHERE o_custkey = c_custkey AND c_nationkey = n_nationkey"


def _join_query(r: random.Random) -> str:
    group, where = r.choice(JOIN_GROUPS), r.choice(JOIN_FILTERS)
    if r.random() < 0.15:
        return f"SELECT DISTINCT {group} AS g {JOIN}{where} ORDER BY 1"
    value = r.choice(JOIN_VALUES)
    aggs = ", ".join(
        f"{r.choice(AGGREGATES).format(x=value)} AS a{i}" for i in range(r.randint(1, 3))
    )
    having = r.choice(["", " HAVING count(*) > 3"])
    return f"SELECT {group} AS g, {aggs} {JOIN}{where} GROUP BY 1{having} ORDER BY 1"


def _union_query(r: random.Random) -> str:
    value = r.choice(["v", "v * 2", "k"])
    aggs = ", ".join(
        f"{r.choice(AGGREGATES).format(x=value)} AS a{i}" for i in range(r.randint(1, 3))
    )
    branches = [
        r.choice(["", " WHERE c_acctbal > 5000"]),
        r.choice(["", " WHERE s_suppkey < 50"]),
    ]
    union = (
        f"SELECT c_nationkey AS k, c_acctbal AS v FROM customer{branches[0]}"
        f" UNION ALL SELECT s_nationkey, s_acctbal FROM supplier{branches[1]}"
    )
    if r.random() < 0.3:  # a branch of another type: not split
        union += " UNION ALL SELECT n_nationkey, CAST(n_regionkey AS DECIMAL(15, 2)) FROM nation"
    where = r.choice(["", " WHERE k < 10", " WHERE v > 0"])
    if r.random() < 0.5:
        return f"SELECT k, {aggs} FROM ({union}) t{where} GROUP BY k ORDER BY k"
    return f"SELECT {aggs} FROM ({union}) t{where}"


def _queries(seed: int, n: int) -> list[str]:
    r = random.Random(seed)
    return [_join_query(r) if r.random() < 0.6 else _union_query(r) for _ in range(n)]


EXTRA = int(os.environ.get("FEDSQL_PLANNER_FUZZ", "0"))


QUERIES = _queries(20261127, 40) + _queries(random.randrange(1 << 30), EXTRA)


@pytest.mark.parametrize("sql", QUERIES, ids=[f"q{i:03d}" for i in range(len(QUERIES))])
def test_random_query_equals_the_oracle(sql: str, fed: fedsql.Federation, central) -> None:  # type: ignore[no-untyped-def]
    want = central.sql(sql).to_arrow_table()
    got = fed.sql(sql)
    assert diff_tables(got, want, has_order_by(sql)) is None, sql
    assert got.schema.types == want.schema.types, sql
