"""The coordinator's merge: fragment results streamed into DuckDB tables of the
query's own schema, read for join keys, and dropped when the query ends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import fedsql
from fedsql.bench.compare import diff_tables
from fedsql.errors import ExecutionError
from fedsql.execute import TEMP_TABLE_ROWS, MergeEngine

# 60k lineitem rows at SF 0.01: the trade fragment is far over TEMP_TABLE_ROWS.
WIDE_JOIN = (
    "SELECT l.l_orderkey, l.l_linenumber, c.c_name FROM lineitem l, orders o, "
    "customer c WHERE l.l_orderkey = o.o_orderkey AND o.o_custkey = c.c_custkey"
)


def _schemas(fed: fedsql.Federation) -> list[str]:
    rows = fed._merger._db.sql(
        "SELECT schema_name FROM duckdb_schemas() WHERE schema_name LIKE 'fedsql_q%'"
    ).fetchall()
    return [r[0] for r in rows]


def _batches(n: int, step: int = 4096, fail_at: int = -1) -> Iterator[pa.RecordBatch]:
    for start in range(0, n, step):
        if 0 <= fail_at <= start:
            raise ExecutionError("the stream broke")
        k = pa.array(range(start, min(n, start + step)), pa.int64())
        yield pa.record_batch({"k": pc.divide(k, 2), "v": k})


def test_session_loads_large_results_and_keeps_small_ones() -> None:
    engine = MergeEngine()
    schema = pa.schema({"k": pa.int64(), "v": pa.int64()})
    with engine.session() as s:
        assert s.load("big", schema, _batches(3 * TEMP_TABLE_ROWS)) == 3 * TEMP_TABLE_ROWS
        assert s.load("small", schema, _batches(10)) == 10
        s.alias("big2", "big")
        keys = s.keys("big2", "k")  # read from the DuckDB table, through the alias
        assert sorted(keys.to_pylist()) == list(range(3 * TEMP_TABLE_ROWS // 2))
        assert sorted(s.keys("small", "k").to_pylist()) == [0, 1, 2, 3, 4]
        assert s.row_counts() == {"big": 30_000, "small": 10, "big2": 30_000}
        got = s.run(
            "SELECT count(*) AS n, CAST(sum(b.v) AS BIGINT) AS total FROM big2 b, small s "
            "WHERE b.k = s.k",
            deadline=time.monotonic() + 60,
        )
        assert got.to_pylist() == [{"n": 20, "total": 90}]  # keys 0-4: 2 rows each side
        assert engine._db.sql(f"SELECT count(*) FROM {s.schema}.big").fetchall() == [(30_000,)]
    # Closed: the query's tables are gone.
    left = engine._db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'big'")
    assert left.fetchall() == [(0,)]


def test_a_stream_failing_mid_load_raises_its_own_error() -> None:
    engine = MergeEngine()
    schema = pa.schema({"k": pa.int64(), "v": pa.int64()})
    with engine.session() as s:
        with pytest.raises(ExecutionError, match="the stream broke"):
            s.load("big", schema, _batches(5 * TEMP_TABLE_ROWS, fail_at=2 * TEMP_TABLE_ROWS))
        # Nothing half-loaded stays, and the same name can be loaded again (a retry).
        assert s.load("big", schema, _batches(TEMP_TABLE_ROWS)) == TEMP_TABLE_ROWS


def test_query_schemas_are_dropped_after_success_failure_and_dropped_streams(
    fed: fedsql.Federation, central
) -> None:  # type: ignore[no-untyped-def]
    want = central.sql(WIDE_JOIN).to_arrow_table()
    assert diff_tables(fed.sql(WIDE_JOIN), want, ordered=False) is None
    st = fed.last_stats
    assert st is not None and max(r.stats.rows for r in st.fragments) > TEMP_TABLE_ROWS
    assert _schemas(fed) == []

    # Streamed through the merge, read to the end, and dropped half-read.
    assert diff_tables(fed.stream(WIDE_JOIN).read_all(), want, ordered=False) is None
    reader = fed.stream(WIDE_JOIN)
    reader.read_next_batch()
    del reader
    assert _schemas(fed) == []

    # The residual fails at the coordinator (after the fragments were loaded).
    with pytest.raises(ExecutionError, match="residual query failed"):
        fed.sql(
            "SELECT CAST(c.c_name AS INTEGER) AS n FROM lineitem l, orders o, "
            "customer c WHERE l.l_orderkey = o.o_orderkey AND o.o_custkey = c.c_custkey"
        )
    assert _schemas(fed) == []
