"""All 22 TPC-H queries, unmodified, across three real connector processes,
each equal to a single DuckDB holding the same data."""

from __future__ import annotations

from pathlib import Path

import pytest

import fedsql
from fedsql.bench.compare import diff_tables, has_order_by, tpch_query
from fedsql.local import LocalFederation, split_agencies, write_agency_toml


@pytest.mark.parametrize("n", range(1, 23), ids=lambda n: f"q{n:02d}")
def test_tpch_query_matches_central(n: int, fed: fedsql.Federation, central) -> None:  # type: ignore[no-untyped-def]
    sql = tpch_query(n)
    want = central.sql(sql).to_arrow_table()
    got = fed.sql(sql)
    assert diff_tables(got, want, has_order_by(sql)) is None
    st = fed.last_stats
    assert st is not None and st.result_rows == want.num_rows
    assert st.bytes > 0 and all(s.seconds >= 0 for s in st.connectors.values())


def test_files_backend_federation(tpch_parquet: Path, tmp_path: Path, central) -> None:  # type: ignore[no-untyped-def]
    """The same split served from directories of Parquet files."""
    data = split_agencies(tpch_parquet, tmp_path, "files")
    tomls = [write_agency_toml(tmp_path / f"{a}.toml", a, k, p) for a, (k, p) in data.items()]
    with LocalFederation(tmp_path, tomls) as local, fedsql.connect(local.config_path) as fed:
        for n in (3, 5, 13, 18, 21, 22):
            sql = tpch_query(n)
            want = central.sql(sql).to_arrow_table()
            assert diff_tables(fed.sql(sql), want, has_order_by(sql)) is None, f"q{n}"


def test_compression_choices_same_results(tpch_local: LocalFederation, central) -> None:  # type: ignore[no-untyped-def]
    """zstd is the default; lz4 and none give the same results, none the most bytes."""
    moved: dict[str, int] = {}
    for codec in ("default", "lz4", "none"):
        cfg = tpch_local.work / f"federation-{codec}.toml"
        head = "" if codec == "default" else f'[coordinator]\ncompression = "{codec}"\n\n'
        cfg.write_text(head + tpch_local.config_path.read_text())
        with fedsql.connect(cfg) as fed:
            moved[codec] = 0
            for n in (3, 9, 13):
                sql = tpch_query(n)
                got = fed.sql(sql)
                assert fed.last_stats is not None
                moved[codec] += fed.last_stats.bytes
                want = central.sql(sql).to_arrow_table()
                assert diff_tables(got, want, has_order_by(sql)) is None, (codec, n)
    assert moved["default"] < moved["lz4"] < moved["none"], moved
