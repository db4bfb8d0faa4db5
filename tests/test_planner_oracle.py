"""Differential fuzzing of the planner at scale (issue 14).

Random queries from ``querygen`` (joins within and across agencies, outer joins
with conditions in ON and WHERE, filters, aggregates, subqueries of every
kind, derived tables, CTEs, set operations, window functions, computed
expressions, ORDER BY/LIMIT) run on three federations, each compared with one
DuckDB holding the same data: values (floats to a relative 1e-6), Arrow types
and column names; in order only when the ORDER BY is total.

- ``duckdb``: three DuckDB agencies (``fed``);
- ``mixed``: trade on PostgreSQL, registry on SQLite, industry on Parquet (``mixed``);
- ``files``: every agency on Parquet files (built here).

Plus a metamorphic check, ternary logic partitioning (SQLancer's TLP): for a
query Q and a predicate p, the rows of Q equal those of Q with p, with NOT p and
with p IS NULL together (WHERE, DISTINCT, HAVING, and SUM/COUNT/MIN/MAX folded
over the parts), each run through a federation.

``make test`` runs a fixed seed: 64 queries on each federation, 24 TLP cases
and ``FOUND`` (each bug class the fuzzer found, as its minimal query, and
issue 14's query) on each federation, 236 tests in all. At scale:

- ``FEDSQL_ORACLE_FUZZ=N`` runs N queries on each federation (and 2N/5 TLP
  cases) from a random seed, printed at the start and in every failure;
- ``FEDSQL_ORACLE_SEED=S`` fixes the seed (replay; with ``-k q0042`` one query);
- ``FEDSQL_ORACLE_REPORT=path`` appends one JSON line per finding;
- ``FEDSQL_ORACLE_REDUCE=1`` reduces each failing query to a minimal one that
  fails the same way (delta debugging over its syntax tree) and shows both.

Issue 14's run (10,500 queries and 1,400 TLP cases, about 30 minutes on two
shared cores)::

    FEDSQL_ORACLE_SEED=20261203 FEDSQL_ORACLE_FUZZ=3500 \
      FEDSQL_ORACLE_REPORT=fuzz.jsonl nohup pytest -q tests/test_planner_oracle.py &

A failure names its class: *generator* (the oracle refuses the query, or the
federation refuses it as outside the fragment language: a bug here), *error*
(any other FedSQLError), *crash* (any other exception), *wrong result*,
*wrong type*, *wrong names*.
"""

from __future__ import annotations

import decimal
import json
import math
import os
import random
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from querygen import (
    MAX_ROWS,
    Query,
    generate,
    generate_tlp,
    has_order_by,
    oracle_spelling,
    reduce_sql,
)

import fedsql
from fedsql.bench.compare import diff_tables
from fedsql.local import LocalFederation, split_agencies, write_agency_toml
from fedsql.planner.plan import parse

DEFAULT_SEED = 20260514
DEFAULT_QUERIES = 64  # each on the three federations
DEFAULT_TLP = 24  # each on one federation, in turn

_FUZZ = os.environ.get("FEDSQL_ORACLE_FUZZ")
_SEED = os.environ.get("FEDSQL_ORACLE_SEED")
SEED = int(_SEED) if _SEED else (random.randrange(1 << 31) if _FUZZ else DEFAULT_SEED)
N_QUERIES = int(_FUZZ) if _FUZZ else DEFAULT_QUERIES
N_TLP = max(1, N_QUERIES * 2 // 5) if _FUZZ else DEFAULT_TLP
REPORT = os.environ.get("FEDSQL_ORACLE_REPORT")
REDUCE = os.environ.get("FEDSQL_ORACLE_REDUCE", "") not in ("", "0")

FEDERATIONS = {"duckdb": "fed", "mixed": "mixed", "files": "files_fed"}
ORACLE_SECONDS = 5.0  # a draw the oracle needs longer for is not kept
FED_SECONDS = 120.0
NOT_IN_LANGUAGE = ("is not in the fragment language", "fedsql accepts the SQL described")


# ---- the files federation ------------------------------------------------------


@pytest.fixture(scope="session")
def files_local(
    tpch_parquet: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFederation]:
    """All three agencies on Parquet files."""
    work = tmp_path_factory.mktemp("files-federation")
    data = split_agencies(tpch_parquet, work, backend="files")
    tomls = [write_agency_toml(work / f"{a}.toml", a, k, p) for a, (k, p) in data.items()]
    with LocalFederation(work, tomls) as local:
        yield local


@pytest.fixture(scope="session")
def files_fed(files_local: LocalFederation) -> Iterator[fedsql.Federation]:
    with fedsql.connect(files_local.config_path) as f:
        yield f


# ---- the oracle and the corpus --------------------------------------------------


class Oracle:
    """The single DuckDB, with a deadline per statement."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def run(self, sql: str, seconds: float = 60.0) -> pa.Table:
        timer = threading.Timer(seconds, self.con.interrupt)
        timer.start()
        try:
            return self.con.sql(sql).to_arrow_table()
        finally:
            timer.cancel()


class Corpus:
    """Queries drawn lazily (query ``i`` is the same whichever tests run), kept to
    draws the oracle answers within ``ORACLE_SECONDS`` and ``MAX_ROWS`` rows;
    most empty answers are drawn again too, as they tell little."""

    def __init__(self, oracle: Oracle, seed: int) -> None:
        self.oracle, self.seed = oracle, seed
        self.queries: dict[int, Query] = {}
        self.tlps: dict[int, Query] = {}
        self.rejected: Counter[str] = Counter()

    def fits(self, q: Query) -> bool:
        try:
            t = time.perf_counter()
            n = self.oracle.run(f"SELECT count(*) FROM ({q.oracle_sql})", ORACLE_SECONDS)
            rows = n.column(0)[0].as_py()
        except Exception as e:  # noqa: BLE001 - any refusal means: draw again
            self.rejected["oracle error: " + str(e).split("\n")[0][:60]] += 1
            return False
        if time.perf_counter() - t > ORACLE_SECONDS / 2:
            self.rejected["slow"] += 1
            return False
        if rows > MAX_ROWS:
            self.rejected["too many rows"] += 1
            return False
        if rows == 0 and zlib.crc32(q.sql.encode()) % 4 != 0:
            self.rejected["empty"] += 1
            return False
        return True

    def query(self, i: int) -> Query:
        if i not in self.queries:
            self.queries[i] = generate(self.seed, i, self.fits)
        return self.queries[i]

    def tlp(self, i: int) -> Query:
        if i not in self.tlps:
            self.tlps[i] = generate_tlp(self.seed, i, self.fits)
        return self.tlps[i]


@pytest.fixture(scope="session")
def corpus(central: Any, request: pytest.FixtureRequest) -> Iterator[Corpus]:
    c = Corpus(Oracle(central), SEED)
    _say(
        request,
        f"planner oracle fuzz: seed {SEED}, {N_QUERIES} queries x {len(FEDERATIONS)} "
        f"federations, {N_TLP} TLP cases (replay: FEDSQL_ORACLE_SEED={SEED} "
        f"FEDSQL_ORACLE_FUZZ={N_QUERIES})",
    )
    yield c
    if c.rejected:
        why = ", ".join(f"{k}: {v}" for k, v in c.rejected.most_common())
        _say(request, f"planner oracle fuzz: draws not kept (drawn again): {why}")


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal, past pytest's output capture."""
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    cap = request.config.pluginmanager.getplugin("capturemanager")
    if tr is None or cap is None:
        return
    with cap.global_and_fixture_disabled():
        tr.write_line(line)


# ---- comparing ------------------------------------------------------------------


def _norm(v: Any) -> Any:
    """A value as rows are sorted and matched by: decimals exact (normalised, so
    1.50 and 1.5 match), floating values to 6 significant digits."""
    if isinstance(v, decimal.Decimal):
        return v.normalize() if v.is_finite() else str(v)
    if isinstance(v, float):
        return v if math.isnan(v) or math.isinf(v) else float(f"{v:.6g}")
    return v


def _rows(t: pa.Table) -> list[tuple[Any, ...]]:
    cols = [c.to_pylist() for c in t.columns]
    return list(zip(*cols, strict=True)) if t.num_rows else []


def _row_key(row: tuple[Any, ...], floats: list[int]) -> tuple[Any, ...]:
    """Exact columns first, floating ones (rounded) last: equal values sort alike
    whatever their last bits. (A column holds one type, so values compare.)"""
    order = [i for i in range(len(row)) if i not in floats] + floats
    out = []
    for i in order:
        v = _norm(row[i])
        nan = isinstance(v, float) and math.isnan(v)
        out.append((v is None, nan, 0 if v is None or nan else v))
    return tuple(out)


def _sorted(t: pa.Table) -> pa.Table:
    floats = [i for i, f in enumerate(t.schema) if pa.types.is_floating(f.type)]
    rows = _rows(t)
    idx = sorted(range(len(rows)), key=lambda i: _row_key(rows[i], floats))
    return t.take(pa.array(idx, pa.int64())) if rows else t


def _show(row: tuple[Any, ...]) -> str:
    return "(" + ", ".join(repr(_norm(v)) for v in row) + ")"


def row_diff(got: pa.Table, want: pa.Table, limit: int = 8) -> str:
    """The rows only one side has (as multisets), at most ``limit`` of each."""
    g = Counter(tuple(_norm(v) for v in r) for r in _rows(got))
    w = Counter(tuple(_norm(v) for v in r) for r in _rows(want))
    extra, missing = list((g - w).elements()), list((w - g).elements())
    lines = [f"  got {got.num_rows} rows, expected {want.num_rows}"]
    lines += [f"  - expected, missing: {_show(r)}" for r in missing[:limit]]
    lines += [f"  + got, not expected: {_show(r)}" for r in extra[:limit]]
    if len(missing) > limit or len(extra) > limit:
        lines.append(f"  ... {len(missing)} missing, {len(extra)} extra in all")
    return "\n".join(lines)


def compare(
    got: pa.Table, want: pa.Table, ordered: bool, types: bool = True
) -> tuple[str, str] | None:
    """None when equal, else (class, description with a diff): values first, then
    types, then column names (so a naming slip does not hide a wrong value)."""
    named = got
    if got.num_columns == want.num_columns and got.column_names != want.column_names:
        named = got.rename_columns(want.column_names)
    g, w = (named, want) if ordered else (_sorted(named), _sorted(want))
    d = diff_tables(g, w, True)
    if d is not None:
        extra = ""
        if ordered and diff_tables(_sorted(named), _sorted(want), True) is None:
            extra = " (the same rows, in another order)"
        return "wrong result", f"{d}{extra}\n{row_diff(got, want)}"
    if types and got.schema.types != want.schema.types:
        pairs = [
            f"{n}: {a} (expected {b})"
            for n, a, b in zip(want.column_names, got.schema.types, want.schema.types, strict=True)
            if a != b
        ]
        return "wrong type", "types differ: " + "; ".join(pairs)
    if got.column_names != want.column_names:
        pairs = [
            f"{a!r} (expected {b!r})"
            for a, b in zip(got.column_names, want.column_names, strict=True)
            if a != b
        ]
        return "wrong names", "column names differ: " + "; ".join(pairs)
    return None


# ---- findings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    cls: str
    federation: str
    sql: str
    detail: str
    check: str  # "oracle" or "tlp:<kind>"
    ordered: bool = False
    types: bool = True
    minimal: str = ""

    def signature(self) -> str:
        """What makes two findings the same: the class, and for errors the first
        line of the message with names and numbers blanked."""
        if self.cls in ("wrong result", "wrong names"):
            return self.cls + (" (order)" if "in another order" in self.detail else "")
        line = self.detail.split("\n")[0]
        if self.cls == "wrong type":
            line = re.sub(r"\b\w+: ", "", line)
        line = re.sub(r"'[^']*'", "'…'", line)
        line = re.sub(r"\b[a-z]{1,4}\d+\b", "tN", line)
        return self.cls + ": " + re.sub(r"\d+", "N", line)

    def text(self, q: Query) -> str:
        replay = (
            f"FEDSQL_ORACLE_SEED={q.seed} FEDSQL_ORACLE_FUZZ={max(N_QUERIES, q.index + 1)} "
            f"pytest tests/test_planner_oracle.py -k '{'tlp' if q.tlp else 'q'}{q.index:04d}"
            f"-{self.federation}'"
        )
        minimal = f"minimal query (fails the same way):\n  {self.minimal}\n" if self.minimal else ""
        return (
            f"[{self.cls}] federation {self.federation}, check {self.check}\n"
            f"query:\n  {self.sql}\n{minimal}{self.detail}\nreplay: {replay}"
        )


def _report(f: Finding, q: Query) -> None:
    if not REPORT:
        return
    rec = {
        "class": f.cls,
        "federation": f.federation,
        "check": f.check,
        "seed": q.seed,
        "index": q.index,
        "sql": f.sql,
        "minimal": f.minimal,
        "signature": f.signature(),
        "detail": f.detail,
        "features": sorted(q.features),
    }
    with open(REPORT, "a") as out:
        out.write(json.dumps(rec, default=str) + "\n")


def _run(fed: fedsql.Federation, name: str, sql: str, check: str = "") -> pa.Table | Finding:
    try:
        return fed.sql(sql, timeout=FED_SECONDS)
    except fedsql.FedSQLError as e:
        msg = str(e)
        cls = "generator" if any(m in msg for m in NOT_IN_LANGUAGE) else "error"
        return Finding(cls, name, sql, f"{type(e).__name__}: {msg}", check)
    except Exception as e:  # noqa: BLE001 - anything else is a crash, reported as such
        return Finding("crash", name, sql, f"{type(e).__name__}: {e}", check)


def differential(
    fed: fedsql.Federation,
    name: str,
    sql: str,
    oracle_sql: str,
    ordered: bool,
    oracle: Oracle,
    check: str = "oracle",
    types: bool = True,
) -> Finding | None:
    """``sql`` through the federation against ``oracle_sql`` in the oracle."""
    return _differential(fed, name, sql, oracle_sql, ordered, oracle, check, types)[0]


def _differential(
    fed: fedsql.Federation,
    name: str,
    sql: str,
    oracle_sql: str,
    ordered: bool,
    oracle: Oracle,
    check: str,
    types: bool = True,
) -> tuple[Finding | None, pa.Table | None]:
    try:
        want = oracle.run(oracle_sql)
    except Exception as e:  # noqa: BLE001
        return Finding("generator", name, sql, f"the oracle refuses it: {e}", check, ordered), None
    got = _run(fed, name, sql, check)
    if isinstance(got, Finding):
        return Finding(got.cls, name, sql, got.detail, check, ordered, types), None
    bad = compare(got, want, ordered, types)
    if bad is not None:
        return Finding(bad[0], name, sql, bad[1], check, ordered, types), got
    return None, got


def check_query(q: Query, fed: fedsql.Federation, name: str, oracle: Oracle) -> Finding | None:
    return differential(fed, name, q.sql, q.oracle_sql, q.ordered, oracle)


def _distinct(t: pa.Table) -> pa.Table:
    seen: dict[tuple[Any, ...], int] = {}
    for i, r in enumerate(_rows(t)):
        seen.setdefault(tuple(_norm(v) for v in r), i)
    return t.take(pa.array(sorted(seen.values()), pa.int64())) if t.num_rows else t


def check_tlp(q: Query, fed: fedsql.Federation, name: str, oracle: Oracle) -> Finding | None:
    """The parts of Q together against Q, both through ``fed``. When they differ,
    each part is compared with the oracle, so that the finding is a query with
    a wrong answer (which reduces like any other)."""
    t = q.tlp
    assert t is not None
    check = f"tlp:{t.kind}"
    # the unpartitioned query is a differential case too
    found, base = _differential(
        fed, name, t.base, t.oracle[0], False, oracle, check + " (Q itself)"
    )
    if found is not None:
        return found
    assert base is not None
    head = f"predicate p: {t.predicate}\n"
    if t.combined:
        got = _run(fed, name, t.combined, check)
        if isinstance(got, Finding):
            return got
        shown = t.combined
    else:
        parts = []
        for p in t.parts:
            r = _run(fed, name, p, check)
            if isinstance(r, Finding):
                return r
            if r.schema.types != base.schema.types:
                why = f"{head}a part's types {r.schema.types}, the query's {base.schema.types}"
                return Finding("wrong type", name, p, why, check)
            parts.append(r)
        got = pa.concat_tables(parts)
        if t.kind == "distinct":
            got = _distinct(got)
        shown = "\n  ".join(t.parts)
    # the folded aggregates change types (a SUM of COUNTs is a HUGEINT): values only
    bad = compare(got, base, False, types=t.kind != "aggregate")
    if bad is None:
        return None
    pairs = (
        [(t.combined, t.oracle[4])]
        if t.combined
        else list(zip(t.parts, t.oracle[1:4], strict=True))
    )
    for sql, osql in pairs:
        found = differential(
            fed, name, sql, osql, False, oracle, check + " (a part)", t.kind != "aggregate"
        )
        if found is not None:
            return Finding(
                found.cls, name, sql, head + found.detail, found.check, False, found.types
            )
    detail = (
        f"{head}parts:\n  {shown}\n{bad[1]}\n"
        "(each part equals the oracle's: TLP does not hold in the oracle either)"
    )
    return Finding("generator", name, t.base, detail, check)


def reduce(f: Finding, fed: fedsql.Federation, oracle: Oracle) -> Finding:
    """The finding, with the smallest variant of its query that fails the same way
    (and that variant's own message)."""
    sig = f.signature()
    last: list[Finding] = []

    def fails(sql: str) -> bool:
        ordered = f.ordered and has_order_by(sql)
        try:
            o = oracle_spelling(sql)
        except Exception:  # noqa: BLE001
            return False
        g = differential(fed, f.federation, sql, o, ordered, oracle, f.check, f.types)
        if g is not None and g.signature() == sig:
            last[:] = [g]
            return True
        return False

    minimal = reduce_sql(f.sql, fails)
    if not last or minimal == f.sql:
        return f
    why = last[0].detail
    detail = f"{f.detail}\nthe minimal query's own answer:\n{why}" if why != f.detail else f.detail
    return Finding(f.cls, f.federation, f.sql, detail, f.check, f.ordered, f.types, minimal)


# ---- the tests ------------------------------------------------------------------


def _fail(f: Finding, q: Query, fed: fedsql.Federation, oracle: Oracle) -> None:
    if REDUCE and f.cls != "generator":
        f = reduce(f, fed, oracle)
    _report(f, q)
    pytest.fail(f.text(q), pytrace=False)


@pytest.mark.parametrize("federation", list(FEDERATIONS))
@pytest.mark.parametrize("index", range(N_QUERIES), ids=lambda i: f"q{i:04d}")
def test_query_equals_the_oracle(
    index: int, federation: str, corpus: Corpus, request: pytest.FixtureRequest
) -> None:
    q = corpus.query(index)
    fed = request.getfixturevalue(FEDERATIONS[federation])
    found = check_query(q, fed, federation, corpus.oracle)
    if found is not None:
        _fail(found, q, fed, corpus.oracle)


@pytest.mark.parametrize(
    ("index", "federation"),
    [(i, list(FEDERATIONS)[i % len(FEDERATIONS)]) for i in range(N_TLP)],
    ids=[f"tlp{i:04d}-{list(FEDERATIONS)[i % len(FEDERATIONS)]}" for i in range(N_TLP)],
)
def test_ternary_logic_partitioning(
    index: int, federation: str, corpus: Corpus, request: pytest.FixtureRequest
) -> None:
    q = corpus.tlp(index)
    fed = request.getfixturevalue(FEDERATIONS[federation])
    found = check_tlp(q, fed, federation, corpus.oracle)
    if found is not None:
        _fail(found, q, fed, corpus.oracle)


# ---- what the fuzzer found, on every federation ---------------------------------

# Each minimal query of a bug class the fuzzer found (and issue 14's own query),
# kept on the three federations; the fix is named beside it.
FOUND = {
    # issue 14: a filter pushed down after an earlier group rebuilt the WHERE
    "issue-14": "SELECT p_brand, count(*) AS n FROM part JOIN lineitem ON p_partkey = l_partkey "
    "JOIN orders ON l_orderkey = o_orderkey JOIN customer ON o_custkey = c_custkey "
    "WHERE c_mktsegment = 'AUTOMOBILE' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    # eager aggregation: AVG(x) FILTER (...) became (SUM/COUNT) FILTER (...), a
    # syntax error; the FILTER now goes into each partial aggregate
    "filter-avg-eager": "SELECT c_acctbal, c_name, avg(848.514) FILTER "
    "(WHERE o_orderdate <= DATE '1997-05-05') AS a2, count(o_totalprice) + count(*) AS a3 "
    "FROM customer, orders WHERE c_custkey = o_custkey GROUP BY c_acctbal, c_name",
    "filter-count-eager": "SELECT s_comment, CASE WHEN count(*) > 7 THEN sum(l_quantity) END "
    "AS a1, count(*) FILTER (WHERE l_commitdate IN (DATE '1995-07-05', NULL)) AS a2, "
    "count(DISTINCT l_linenumber) FILTER (WHERE l_tax > 0.02) AS a3 FROM supplier, lineitem "
    "WHERE s_suppkey = l_suppkey GROUP BY s_comment ORDER BY 1, 2, 3 LIMIT 12",
    # PostgreSQL got EXTRACT(DAYOFYEAR ...): the date_parts capability
    "extract-doy-dow": "SELECT extract(doy FROM o_orderdate) AS d, "
    "extract(dow FROM o_orderdate) AS w, count(*) AS n FROM orders "
    "WHERE o_orderkey < 3000 GROUP BY 1, 2",
    # two tables of an agency joined only by an inequality were one fragment (a
    # near cross product: a timeout on PostgreSQL); only equalities group
    "inequality-self-join": "SELECT c_mktsegment, count(*) AS n, sum(t8.o_totalprice) AS s "
    "FROM customer, orders t7, orders t8 WHERE c_custkey = t7.o_custkey "
    "AND c_nationkey = t8.o_custkey AND t8.o_totalprice > t7.o_totalprice "
    "AND t7.o_orderkey < 100 GROUP BY 1",
    # SQLite types an all-NULL column (the empty side of an outer join) as an
    # integer, which did not cast to DECIMAL(15, 2): NULLs conform to any type
    "sqlite-all-null-decimal": "SELECT t6.c_acctbal, t6.c_mktsegment FROM customer AS t6 "
    "RIGHT JOIN nation ON t6.c_nationkey = nation.n_nationkey AND t6.c_address = ' '",
    # SQLite's ADBC driver typed each column from its first 1,024 rows: a FULL JOIN's
    # side NULL there (an integer) and text later aborted the stream; the backend now
    # types from one large first batch (sqlite.TYPED_ROWS)
    "sqlite-type-from-first-batch": "SELECT * FROM customer t1 FULL JOIN customer t2 "
    "ON t1.c_custkey = t2.c_custkey AND t1.c_nationkey = t2.c_nationkey "
    "AND t2.c_phone = '21-'",
    # three equal pre-aggregated fragments: the second was derived from the third and
    # the first from the second, which was gone (the residual read a dropped
    # fragment); a fragment others are derived from now stays fetched
    "derived-from-derived": "SELECT max(a) FROM ("
    + " UNION ALL ".join(
        [
            "SELECT max(s_acctbal) AS a FROM supplier WHERE s_acctbal > (SELECT "
            f"min(o_totalprice) - {i} FROM orders JOIN customer ON o_custkey = c_custkey "
            "WHERE o_comment LIKE '%final%requests%')"
            for i in range(3)
        ]
    )
    + ") AS t",
    # QUALIFY with ORDER BY and LIMIT pushed to PostgreSQL: sqlglot writes it as a
    # subquery that sorts and limits before the QUALIFY filter (0 rows, not 19);
    # QUALIFY is a capability (qualify) only DuckDB declares
    "qualify-before-limit": "SELECT d2.c1 AS a0, AVG(d2.c0) OVER (PARTITION BY d2.c2, d2.c0) "
    "AS a1 FROM (SELECT t1.o_shippriority AS c0, t1.o_clerk AS c1, t1.o_custkey AS c2 "
    "FROM orders AS t1 WHERE TRUE) AS d2 QUALIFY MAX(d2.c2) OVER (PARTITION BY d2.c2, d2.c1) "
    "<= 3 ORDER BY 1 ASC, 2 LIMIT 24",
}


@pytest.mark.parametrize("federation", list(FEDERATIONS))
@pytest.mark.parametrize("name", list(FOUND))
def test_found_by_the_fuzzer(
    name: str, federation: str, corpus: Corpus, request: pytest.FixtureRequest
) -> None:
    sql = FOUND[name]
    fed = request.getfixturevalue(FEDERATIONS[federation])
    found = differential(
        fed, federation, sql, oracle_spelling(sql), has_order_by(sql), corpus.oracle
    )
    assert found is None, found.text(Query(sql, sql, False, frozenset())) if found else ""


# ---- the generator itself (no federation needed) -------------------------------

REQUIRED = {
    "join:comma", "join:join", "join:left", "join:right", "join:full", "join:cross",
    "join:cross-agency", "join:on-filter",
    "between", "in-list", "not-in-list", "like", "is-null", "or", "not",
    "agg:count*", "agg:count", "agg:countd", "agg:sum", "agg:sumd", "agg:avg",
    "agg:min", "agg:max", "aggregate", "aggregate:global", "having",
    "sub:scalar", "sub:corr-scalar", "sub:in", "sub:not-in", "sub:exists",
    "sub:not-exists", "sub:select-list", "derived", "cte", "cte-ref",
    "setop:UNION", "setop:UNION ALL", "setop:INTERSECT", "setop:EXCEPT",
    "window:row_number", "window:rank", "window:sum",
    "case", "cast", "extract", "substring", "division", "order", "limit", "distinct",
    "tlp:where", "tlp:distinct", "tlp:aggregate", "tlp:having",
}  # fmt: skip


def test_generated_queries_stay_in_the_fragment_language() -> None:
    """Every generated query (and every TLP part) parses and passes the
    language check the coordinator applies, without a federation."""
    for i in range(150):
        q = generate(DEFAULT_SEED, i)
        t = generate_tlp(DEFAULT_SEED, i).tlp
        assert t is not None
        for sql in (q.sql, t.base, *t.parts, *([t.combined] if t.combined else [])):
            parse(sql)


def test_generator_covers_the_brief() -> None:
    seen: set[str] = set()
    for i in range(600):
        seen |= generate(DEFAULT_SEED, i).features
        seen |= generate_tlp(DEFAULT_SEED, i).features
    assert not REQUIRED - seen, sorted(REQUIRED - seen)
