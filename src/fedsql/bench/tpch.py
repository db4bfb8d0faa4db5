"""``fedsql bench tpch``: the 22 queries federated and on a centralized DuckDB copy.

The central copy's cost (time to copy every table into one DuckDB, and its
size) is measured in the same run. Every federated result is checked against
the central one.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import duckdb
import pyarrow as pa

import fedsql
from fedsql.bench import peers as peer_runs
from fedsql.bench.compare import (
    diff_tables,
    has_order_by,
    median_time,
    paired_median_times,
    tpch_query,
)
from fedsql.bench.report import (  # re-exported: the CLI's names
    HEADER,
    PEER_NAMES,
    BenchReport,
    Link,
    QueryResult,
    chart,
    link_summary,
    markdown,
    peer_summary,
    row,
    summary,
    waves,
)
from fedsql.local import TPCH_SPLIT, central_duckdb, tpch_federation
from fedsql.pgserver import PostgresServer


def build_central_copy(agency_dbs: dict[str, Path], path: Path) -> tuple[float, int]:
    """Copy every agency's tables into one DuckDB file; returns (seconds, bytes of the copy)."""
    path.unlink(missing_ok=True)
    t = time.perf_counter()
    con = duckdb.connect(str(path))
    for agency, db in agency_dbs.items():
        con.execute(f"ATTACH '{db}' AS src_{agency} (READ_ONLY)")
        for table in TPCH_SPLIT[agency]:
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM src_{agency}."{table}"')
        con.execute(f"DETACH src_{agency}")
    con.execute("CHECKPOINT")
    con.close()
    return time.perf_counter() - t, path.stat().st_size


def build_central_copy_from_postgres(dsns: dict[str, str], path: Path) -> tuple[float, int]:
    """Copy every PostgreSQL agency's tables into one DuckDB file (Arrow through ADBC)."""
    import adbc_driver_postgresql.dbapi as pgdb

    from fedsql.connectors.backend import arrow_type_of_declared, conform

    path.unlink(missing_ok=True)
    t = time.perf_counter()
    con = duckdb.connect(str(path))
    for agency, dsn in dsns.items():
        with pgdb.connect(dsn) as pg, pg.cursor() as cur:
            for table in TPCH_SPLIT[agency]:
                cur.execute(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    f"WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 ORDER BY a.attnum"
                )
                schema = pa.schema([(n, arrow_type_of_declared(ty)) for n, ty in cur.fetchall()])
                cur.execute(f'SELECT * FROM "{table}"')
                src = cur.fetch_record_batch()
                reader = pa.RecordBatchReader.from_batches(
                    schema, (conform(b, schema) for b in src)
                )
                con.register("src", reader)
                con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM src')
                con.unregister("src")
    con.execute("CHECKPOINT")
    con.close()
    return time.perf_counter() - t, path.stat().st_size


def run(
    sf: float,
    runs: int = 3,
    queries: list[int] | None = None,
    work: Path | None = None,
    json_path: Path | None = None,
    progress: Callable[[str], None] = print,
    backend: str = "duckdb",
    peers: tuple[str, ...] = (),
    pg_locale: str | None = None,
) -> BenchReport:
    """``peers`` (``attach``, ``fdw``) run only with ``backend="postgres"``;
    ``pg_locale`` is its server's ``initdb --locale`` (None: initdb's default, the
    environment's locale, as agencies run it; ``"C"``: byte order)."""
    queries = queries or list(range(1, 23))
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedsql-bench-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    data_dir = Path.home() / ".cache" / "fedsql" / f"tpch-sf{sf:g}"
    progress(f"preparing TPC-H SF {sf:g} on {backend} agencies (data cached in {data_dir}) ...")
    pg = PostgresServer(locale=pg_locale) if backend == "postgres" else None
    try:
        fed_local, _ = tpch_federation(work, sf, backend=backend, data_dir=data_dir, pg=pg)
    except BaseException:
        if pg is not None:
            pg.stop()
        raise
    try:
        if pg is not None:
            dsns = {a: pg.dsn(a) for a in TPCH_SPLIT}
            copy_s, copy_bytes = build_central_copy_from_postgres(dsns, work / "central.duckdb")
        else:
            central_duckdb(data_dir, work / "agencies-src.duckdb") if backend != "duckdb" else None
            agency_dbs = (
                {a: work / f"{a}.duckdb" for a in TPCH_SPLIT}
                if backend == "duckdb"
                else {a: work / "agencies-src.duckdb" for a in TPCH_SPLIT}
            )
            copy_s, copy_bytes = build_central_copy(agency_dbs, work / "central.duckdb")
        progress(f"central copy: {copy_s:.2f} s, {copy_bytes / 1e6:.1f} MB")
        report = BenchReport(sf, runs, backend, copy_s, copy_bytes)
        central = duckdb.connect(str(work / "central.duckdb"), read_only=True)
        fed = fedsql.connect(fed_local.config_path)
        wants: dict[int, pa.Table] = {}
        for n in queries:
            sql = tpch_query(n)

            def on_central(q: str) -> pa.Table:
                return central.sql(q).to_arrow_table()

            want = on_central(sql)  # warm-up
            wants[n] = want
            try:
                fed.sql(sql)  # warm-up (catalog, channels, plan cache)
                assert fed.last_stats is not None
                cold_plan = fed.last_stats.plan_seconds
                (c_s, want), (f_s, got) = paired_median_times([on_central, fed.sql], sql, runs)
                st = fed.last_stats
                assert st is not None
                err = diff_tables(got, want, has_order_by(sql))
                q = QueryResult(
                    n,
                    want.num_rows,
                    c_s,
                    f_s,
                    f_s / c_s if c_s else float("inf"),
                    st.bytes,
                    st.rows,
                    len(st.fragments),
                    st.plan_seconds,
                    {a: s.bytes for a, s in st.connectors.items()},
                    err is None,
                    err,
                    cold_plan,
                    waves(st.fragments),
                )
            except fedsql.FedSQLError as e:
                c_s, _ = median_time(on_central, sql, runs)
                q = QueryResult(
                    n,
                    want.num_rows,
                    c_s,
                    float("nan"),
                    float("nan"),
                    0,
                    0,
                    0,
                    0.0,
                    {},
                    False,
                    str(e),
                )
            report.queries.append(q)
            progress(row(q))
        central.close()
        fed.close()
        if pg is not None:
            _run_peers(report, pg, wants, peers, runs, work, progress)
    finally:
        fed_local.stop()
        if pg is not None:
            pg.stop()
        if tmp is not None:
            tmp.cleanup()
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        doc = asdict(report) | {
            "total_central_seconds": report.total_central,
            "total_federated_seconds": report.total_federated,
            "total_bytes_moved": report.total_bytes,
        }
        if pg is not None:  # what the agencies' server sorted text by
            doc["pg_locale"] = pg_locale or "initdb default"
        json_path.write_text(json.dumps(doc, indent=2))
        json_path.with_suffix(".md").write_text(markdown(report))
        chart(report, json_path.with_suffix(".png"))
    return report


def _run_peers(
    report: BenchReport,
    pg: PostgresServer,
    wants: dict[int, pa.Table],
    peers: tuple[str, ...],
    runs: int,
    work: Path,
    progress: Callable[[str], None],
) -> None:
    by_query = {q.query: q for q in report.queries}
    queries = {n: tpch_query(n) for n in wants}
    for peer in peers:
        if peer == "attach":
            results = peer_runs.run_attach(pg, TPCH_SPLIT, queries, runs, work, progress)
        else:
            results = peer_runs.run_fdw(pg, TPCH_SPLIT, queries, runs, progress)
        try:
            for n, pr, got in results:
                if got is not None:
                    want = wants[n]
                    err = diff_tables(
                        peer_runs.conform_result(got, want), want, has_order_by(queries[n])
                    )
                    pr.ok, pr.error = err is None, err
                by_query[n].peers[peer] = pr
                check = "ok" if pr.ok else f"FAIL: {pr.error}"
                progress(
                    f"{PEER_NAMES[peer]:>13} Q{n:02d} {pr.seconds:>9.4f} s "
                    f"{pr.bytes:>12} bytes  {check}"
                )
        except fedsql.FedSQLError as e:
            progress(f"{PEER_NAMES[peer]} skipped: {e}")


__all__ = [
    "HEADER",
    "BenchReport",
    "Link",
    "QueryResult",
    "link_summary",
    "peer_summary",
    "run",
    "summary",
]
