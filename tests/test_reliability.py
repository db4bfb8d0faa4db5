"""Faults, cancellation, concurrency and bounded memory, with real connector
processes: agencies killed before and during a query, a slow agency past the
deadline, a dropped stream, Ctrl-C, 32 concurrent queries, back-pressure, the
status command, Prometheus metrics and the peak RSS of a streamed export."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

import fedsql
from fedsql.bench.compare import diff_tables, has_order_by, tpch_query
from fedsql.bench.memory import measure
from fedsql.connectors.metrics import TEST_DELAY_ENV
from fedsql.errors import ConfigError, ConnectorError, ExecutionError, QueryTimeout
from fedsql.local import (
    LocalConnector,
    LocalFederation,
    generate_tpch,
    split_agencies,
    start_connector,
    write_agency_toml,
)
from fedsql.resilience import Link
from fedsql.v1 import connector_pb2 as pb
from fedsql.v1 import connector_pb2_grpc as pb_grpc
from fedsql.wire import RemoteCatalog, RemoteTable, catalog_to_proto, reader_to_ipc_chunks

SUPPLIERS = 100  # TPC-H SF 0.01
NATIONS = 25
UNION = (
    "SELECT count(*) AS n FROM (SELECT n_nationkey AS k FROM registry.nation "
    "UNION ALL SELECT s_suppkey FROM industry.supplier)"
)


def _write_federation(path: Path, conns: dict[str, str], coordinator: str = "") -> Path:
    lines = []
    for name, address in conns.items():
        lines += ["[[connector]]", f'name = "{name}"', f'address = "{address}"', "insecure = true"]
    if coordinator:
        lines += ["[coordinator]", coordinator]
    path.write_text("\n".join(lines) + "\n")
    return path


def _status(address: str, fed: fedsql.Federation | None = None) -> pb.Status:
    """GetStatus of the connector at ``address`` (over ``fed``'s own mutual-TLS
    channel when given: the shared test federation's connectors require it)."""
    if fed is not None:
        link = next(lk for lk in fed._links.values() if lk.address == address)
        return link.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    link = Link("x", address, 2.0)
    try:
        return link.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    finally:
        link.close()


def _wait_idle(
    address: str, within: float = 10.0, fed: fedsql.Federation | None = None
) -> pb.Status:
    """The connector's status once no fragment runs there (fails after ``within`` s)."""
    end = time.monotonic() + within
    while True:
        st = _status(address, fed)
        if st.active_fragments == 0 or time.monotonic() > end:
            assert st.active_fragments == 0, f"{st.active_fragments} fragments still running"
            return st
        time.sleep(0.05)


@pytest.fixture(scope="module")
def agencies(tpch_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """AGENCY.toml per agency (DuckDB backends), not started: tests start their own."""
    work = tmp_path_factory.mktemp("reliability")
    data = split_agencies(tpch_parquet, work, "duckdb")
    return {a: write_agency_toml(work / f"{a}.toml", a, k, p) for a, (k, p) in data.items()}


@pytest.fixture(scope="module")
def registry(agencies: dict[str, Path]) -> Iterator[LocalConnector]:
    c = start_connector(agencies["registry"])
    yield c
    c.stop()


@pytest.fixture
def industry(agencies: dict[str, Path]) -> Iterator[LocalConnector]:
    """An industry connector of the test's own: tests kill it."""
    c = start_connector(agencies["industry"])
    yield c
    c.stop()


@pytest.fixture
def slow_industry(agencies: dict[str, Path]) -> Iterator[LocalConnector]:
    """Industry with the testing aid's delay: 5 s before every record batch."""
    c = start_connector(agencies["industry"], env={TEST_DELAY_ENV: "5"})
    yield c
    c.stop()


def _fed(tmp_path: Path, registry: LocalConnector, industry: LocalConnector, coord: str = ""):  # type: ignore[no-untyped-def]
    cfg = _write_federation(
        tmp_path / "federation.toml",
        {"registry": registry.address, "industry": industry.address},
        coord,
    )
    return fedsql.connect(cfg), cfg


def test_dead_agency_fails_fast_naming_it(tmp_path: Path, registry, industry) -> None:  # type: ignore[no-untyped-def]
    fed, _ = _fed(tmp_path, registry, industry)
    with fed:
        assert fed.sql(UNION).column("n").to_pylist() == [NATIONS + SUPPLIERS]
        industry.stop()  # killed before the next query
        t0 = time.monotonic()
        with pytest.raises(ConnectorError) as err:
            fed.sql(UNION, timeout=60)
        took = time.monotonic() - t0
    assert err.value.agency == "industry"
    msg = str(err.value)
    assert industry.address in msg and "fedsql connector serve" in msg
    assert took < 5.0, f"took {took:.1f} s to fail on a dead agency"
    print(f"\ntime to fail on a dead agency: {took:.2f} s")


def test_allow_partial_returns_the_rest_marked(
    tmp_path: Path, registry, industry, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # catalogs kept here
    fed, cfg = _fed(tmp_path, registry, industry, "allow_partial = false")
    with fed:
        assert fed.catalog.tables  # seen once: its catalog is kept for when it is down
        industry.stop()
    with fedsql.connect(cfg) as fed:  # a new coordinator: industry is down from the start
        table = fed.sql(UNION, allow_partial=True)
        assert table.column("n").to_pylist() == [NATIONS]  # industry's rows missing, marked
        assert table.schema.metadata[b"fedsql.missing_agencies"] == b"industry"
        assert fed.last_stats is not None and fed.last_stats.missing == ("industry",)
        # A join with the missing side: it contributes no rows (LEFT JOIN keeps nations).
        t = fed.sql(
            "SELECT n_name, s_name FROM registry.nation LEFT JOIN industry.supplier "
            "ON s_nationkey = n_nationkey",
            allow_partial=True,
        )
        assert t.num_rows == NATIONS and t.column("s_name").null_count == NATIONS
        assert fed.sql("SELECT count(*) AS n FROM registry.nation").num_rows == 1  # unaffected
        with pytest.raises(ConnectorError) as err:
            fed.sql(UNION)  # not asked for: the query fails, naming the agency
        assert err.value.agency == "industry"
    r = subprocess.run(
        [sys.executable, "-m", "fedsql", "query", "-c", str(cfg), "--allow-partial", UNION],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "warning: partial result: agencies industry could not be reached" in r.stderr
    assert str(NATIONS) in r.stdout


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AGENCY.toml of 'big': TPC-H SF 0.1 lineitem (600k rows) as a Parquet file."""
    cache = Path.home() / ".cache" / "fedsql" / "tpch-sf0.1"
    parquet = generate_tpch(0.1, cache)
    work = tmp_path_factory.mktemp("big")
    d = work / "files"
    d.mkdir()
    try:
        os.link(parquet / "lineitem.parquet", d / "lineitem.parquet")
    except OSError:
        import shutil

        shutil.copyfile(parquet / "lineitem.parquet", d / "lineitem.parquet")
    return write_agency_toml(work / "big.toml", "big", "files", d)


def test_agency_dying_mid_stream_is_an_error(tmp_path: Path, big: Path) -> None:
    """Killed after it sent part of the result: the query fails, never a short result."""
    c = start_connector(big, env={TEST_DELAY_ENV: "0.4"})
    try:
        cfg = _write_federation(tmp_path / "f.toml", {"big": c.address})
        with fedsql.connect(cfg) as fed:
            threading.Timer(1.5, c.proc.kill).start()  # after ~3 batches of 5
            t0 = time.monotonic()
            with pytest.raises(ConnectorError) as err:
                fed.sql("SELECT l_orderkey, l_linenumber FROM big.lineitem", timeout=60)
            assert err.value.agency == "big" and time.monotonic() - t0 < 6
            c.proc.wait()
            # The same through the stream API: batches came, then an error, no clean end.
            c2 = start_connector(big, env={TEST_DELAY_ENV: "0.4"})
            try:
                cfg2 = _write_federation(tmp_path / "f2.toml", {"big": c2.address})
                with fedsql.connect(cfg2) as fed2:
                    reader = fed2.stream("SELECT l_orderkey FROM big.lineitem", timeout=60)
                    got = 0
                    with pytest.raises(ConnectorError):
                        for batch in reader:
                            got += batch.num_rows
                            if got and c2.proc.poll() is None:
                                c2.proc.kill()
                    assert 0 < got < 600_572
            finally:
                c2.stop()
    finally:
        c.stop()


def test_deadline_cancels_the_fragment_at_the_connector(
    tmp_path: Path, registry: LocalConnector, slow_industry: LocalConnector
) -> None:
    fed, _ = _fed(tmp_path, registry, slow_industry)
    with fed:
        t0 = time.monotonic()
        with pytest.raises(QueryTimeout) as err:
            fed.sql(UNION, timeout=1.0)
        took = time.monotonic() - t0
    assert "industry" in str(err.value)
    assert took < 3.0, f"deadline of 1 s fired after {took:.1f} s"
    st = _wait_idle(slow_industry.address, within=3.0)  # it saw the cancellation
    assert st.fragments["cancelled"] >= 1


def test_dropping_a_stream_cancels_the_fragment(tmp_path: Path, big: Path) -> None:
    c = start_connector(big, env={TEST_DELAY_ENV: "0.3"})
    try:
        cfg = _write_federation(tmp_path / "f.toml", {"big": c.address})
        with fedsql.connect(cfg) as fed:
            reader = fed.stream("SELECT * FROM big.lineitem", timeout=120)
            first = reader.read_next_batch()
            assert first.num_rows > 0
            assert _status(c.address).active_fragments == 1
            del reader, first
            gc.collect()
            st = _wait_idle(c.address, within=3.0)
            assert st.fragments["cancelled"] == 1 and st.fragments.get("ok", 0) == 0
    finally:
        c.stop()


def test_ctrl_c_in_the_cli_cancels_and_exits_130(
    tmp_path: Path, registry: LocalConnector, slow_industry: LocalConnector
) -> None:
    _, cfg = _fed(tmp_path, registry, slow_industry)
    p = subprocess.Popen(
        [sys.executable, "-m", "fedsql", "query", "-c", str(cfg), UNION],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    end = time.monotonic() + 20
    while _status(slow_industry.address).active_fragments == 0:  # the query reached it
        assert time.monotonic() < end and p.poll() is None, "the query never started"
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted: the query was cancelled"
    assert "Traceback" not in err
    st = _wait_idle(slow_industry.address, within=3.0)
    assert st.fragments["cancelled"] >= 1


def test_connector_back_pressure_and_coordinator_retry(
    agencies: dict[str, Path], tmp_path: Path
) -> None:
    """Fragments beyond max_concurrent_fragments wait briefly, then are refused as
    busy (RESOURCE_EXHAUSTED); the coordinator retries such a fragment with backoff
    and the query succeeds once a slot is free."""
    toml = tmp_path / "industry.toml"
    text = agencies["industry"].read_text()
    text = text.replace(
        "[connector]\n", "[connector]\nmax_workers = 4\nmax_concurrent_fragments = 1\n"
    )
    toml.write_text(text)
    c = start_connector(toml, env={TEST_DELAY_ENV: "4"})
    link = Link("industry", c.address, 2.0)
    cfg = _write_federation(tmp_path / "f.toml", {"industry": c.address})
    query = "SELECT count(*) AS n FROM industry.supplier"
    try:
        with fedsql.connect(cfg) as fed, ThreadPoolExecutor(1) as pool:
            fed.plan(query)  # catalog and plan ready: its fragment goes out at once
            req = pb.ExecuteRequest(query_id="q1", sql="SELECT s_suppkey FROM supplier")
            first = link.stub.Execute(req, timeout=20)
            end = time.monotonic() + 10
            while _status(c.address).active_fragments == 0:
                assert time.monotonic() < end
                time.sleep(0.05)
            t0 = time.monotonic()
            retried = pool.submit(fed.sql, query, 30)
            with pytest.raises(grpc.RpcError) as err:
                list(link.stub.Execute(pb.ExecuteRequest(query_id="q2", sql=req.sql), timeout=20))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "busy" in (err.value.details() or "")
            assert 1.5 < time.monotonic() - t0 < 4  # waited for a slot first
            assert sum(len(m.arrow_ipc) for m in first) > 0  # the first one completes
            assert retried.result(timeout=30).column("n").to_pylist() == [SUPPLIERS]
        st = _wait_idle(c.address)
        # q2 and the coordinator's first attempt were refused; q1 and the retry ran.
        assert st.fragments["busy"] == 2 and st.fragments["ok"] == 2, dict(st.fragments)
    finally:
        link.close()
        c.stop()


def test_32_concurrent_queries_from_8_threads(
    fed: fedsql.Federation, central, tpch_local: LocalFederation
) -> None:  # type: ignore[no-untyped-def]
    numbers = [1, 3, 4, 5, 6, 10, 12, 14]
    want = {n: central.sql(tpch_query(n)).to_arrow_table() for n in numbers}
    jobs = [numbers[i % len(numbers)] for i in range(32)]
    fed.sql(tpch_query(1))  # catalog loaded once before the clock starts
    # Other tests refuse fragments at these connectors on purpose: count from here.
    before = {
        c.address: dict(_wait_idle(c.address, fed=fed).fragments) for c in tpch_local.connectors
    }

    def one(n: int) -> str | None:
        got = fed.sql(tpch_query(n))
        assert fed.last_stats is not None and fed.last_stats.result_rows == got.num_rows
        return diff_tables(got, want[n], has_order_by(tpch_query(n)))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        diffs = list(pool.map(one, jobs))
    took = time.perf_counter() - t0
    assert diffs == [None] * 32
    for c in tpch_local.connectors:
        st = _wait_idle(c.address, within=5, fed=fed)
        new = {k: v - before[c.address].get(k, 0) for k, v in st.fragments.items()}
        assert {k: n for k, n in new.items() if n and k != "ok"} == {}, new
    print(f"\n32 TPC-H queries from 8 threads: {took:.2f} s, {32 / took:.1f} queries/s")


def test_status_command(tmp_path: Path, registry, industry) -> None:  # type: ignore[no-untyped-def]
    _, cfg = _fed(tmp_path, registry, industry)

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fedsql", "status", "-c", str(cfg), "--timeout", "3"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = status()
    assert r.returncode == 0, r.stderr
    head, _, *rows = r.stdout.splitlines()
    assert [h.strip() for h in head.split(" | ")][:3] == ["agency", "address", "health"]
    assert "latency ms" in head and "tables" in head
    assert len(rows) == 2 and all(" | up " in row for row in rows)
    cells = {r.split("|")[0].strip(): [c.strip() for c in r.split("|")] for r in rows}
    assert cells["registry"][5] == "3" and cells["industry"][5] == "3"  # tables
    assert cells["registry"][2] == "up" and float(cells["registry"][4]) >= 0  # latency ms
    industry.stop()
    r = status()
    assert r.returncode == 1
    assert "DOWN: not listening" in r.stdout  # a short reason in the table ...
    assert "fedsql connector serve" in r.stderr  # ... what to do below it
    assert "1 of 2 agencies down (industry)" in r.stderr


def test_prometheus_metrics(agencies: dict[str, Path], tmp_path: Path) -> None:
    toml = tmp_path / "registry.toml"
    text = agencies["registry"].read_text()
    text = text.replace("[connector]\n", '[connector]\nmetrics_listen = "127.0.0.1:0"\n')
    toml.write_text(text)
    c = start_connector(toml)
    try:
        url = _status(c.address).metrics_url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        cfg = _write_federation(tmp_path / "f.toml", {"registry": c.address})
        with fedsql.connect(cfg) as fed:
            assert fed.sql("SELECT * FROM registry.nation").num_rows == NATIONS
            with pytest.raises(fedsql.FedSQLError):
                fed.sql("SELECT no_such_column FROM registry.nation")
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = resp.read().decode()
        lines = {
            ln.rsplit(" ", 1)[0]: ln.rsplit(" ", 1)[1] for ln in body.splitlines() if ln[0] != "#"
        }
        label = 'connector="registry"'
        assert lines[f'fedsql_fragments_total{{{label},outcome="ok"}}'] == "1"
        assert lines[f"fedsql_rows_total{{{label}}}"] == str(NATIONS)
        assert int(lines[f"fedsql_bytes_total{{{label}}}"]) > 0
        assert lines[f"fedsql_active_fragments{{{label}}}"] == "0"
        assert "fedsql_queries_total" in body and "fedsql_errors_total" in body
    finally:
        c.stop()


def test_streamed_export_memory_is_bounded(tmp_path: Path) -> None:
    """`fedsql query --format parquet -o FILE` of TPC-H SF 0.1 lineitem three times
    over (1.8 M rows, ~300 MB in Arrow, all of it one agency's answer): the CLI's
    peak RSS grows by less than half the result over the same command with a
    one-row result (holding the result would take more than all of it; SF 1:
    benchmarks/memory.py)."""
    query = " UNION ALL ".join(["SELECT * FROM big.lineitem"] * 3)
    figures = measure(0.1, tmp_path, query)
    assert figures["rows"] == 3 * 600_572
    print(f"\nstreamed export, 3 x SF 0.1 lineitem: {figures}")
    assert figures["export_extra_mb"] < 0.5 * figures["result_arrow_mb"], figures


def test_stream_equals_sql_through_the_merge(fed: fedsql.Federation, central) -> None:  # type: ignore[no-untyped-def]
    """A query with a residual streams DuckDB's merge result; names as fed.sql gives them."""
    for n in (3, 10):
        sql = tpch_query(n)
        got = fed.stream(sql).read_all()
        assert diff_tables(got, central.sql(sql).to_arrow_table(), has_order_by(sql)) is None
        st = fed.last_stats
        assert st is not None and st.result_rows == got.num_rows
        assert all(r.stats.rows >= 0 for r in st.fragments)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('memory_limit = "lots"', "memory_limit must look like '2GB'"),
        ("retries = 50", "retries must be between 0 and 10"),
        ("connect_timeout_seconds = 0", "connect_timeout_seconds must be a positive"),
        ('allow_partial = "yes"', "allow_partial: expected true or false"),
        ('compression = "gzip"', "compression must be zstd, lz4 or none"),
    ],
)
def test_coordinator_reliability_keys_are_checked(tmp_path: Path, line: str, message: str) -> None:
    from fedsql.config import load_federation

    cfg = _write_federation(tmp_path / "f.toml", {"a": "127.0.0.1:1"}, line)
    with pytest.raises(ConfigError, match=message):
        load_federation(cfg)


def test_connector_concurrency_keys_are_checked(agencies: dict[str, Path], tmp_path: Path) -> None:
    from fedsql.config import load_agency

    toml = tmp_path / "a.toml"
    toml.write_text(
        agencies["registry"]
        .read_text()
        .replace("[connector]\n", "[connector]\nmax_workers = 4\nmax_concurrent_fragments = 3\n")
    )
    with pytest.raises(ConfigError, match="max_workers - 2"):
        load_agency(toml)


class _TruncatingConnector(pb_grpc.ConnectorServicer):
    """A connector whose Execute ends without the closing stats message (as one
    that crashed between batches behind a proxy might), or with wrong stats."""

    def __init__(self, stats_rows: int | None) -> None:
        self.stats_rows = stats_rows
        self.table = pa.table({"k": pa.array(range(1000), pa.int64())})

    def GetCatalog(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        t = RemoteTable("", "t", self.table.schema, self.table.num_rows)
        return catalog_to_proto(RemoteCatalog("odd", "0", "duckdb", (t,)))

    def Execute(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        for chunk in reader_to_ipc_chunks(
            pa.RecordBatchReader.from_batches(self.table.schema, self.table.to_batches(100))
        ):
            yield pb.ExecuteResponse(arrow_ipc=chunk)
        if self.stats_rows is not None:
            yield pb.ExecuteResponse(stats=pb.ExecuteStats(rows=self.stats_rows))


@pytest.mark.parametrize(
    ("stats_rows", "error", "message"),
    [
        (None, ConnectorError, "ended without its closing stats message"),
        (999, ExecutionError, "reported 999 rows but sent 1000"),
    ],
)
def test_a_stream_without_its_end_marker_is_not_a_result(
    tmp_path: Path, stats_rows: int | None, error: type, message: str
) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ConnectorServicer_to_server(_TruncatingConnector(stats_rows), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        cfg = _write_federation(tmp_path / "f.toml", {"odd": f"127.0.0.1:{port}"})
        with fedsql.connect(cfg) as fed:
            for run in (
                lambda: fed.sql("SELECT * FROM odd.t"),
                lambda: fed.stream("SELECT * FROM odd.t").read_all(),
            ):
                with pytest.raises(error, match=message):
                    run()
    finally:
        server.stop(0)
