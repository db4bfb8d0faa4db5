"""Fragment latency histograms: counted by outcome in cumulative buckets at the
connector, reported by GetStatus, served to Prometheus and shown by
`fedsql status --latency` (a real connector process, a slowed fragment)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import urllib.request
from pathlib import Path

import duckdb
import grpc
import pytest

import fedsql
from fedsql.connectors.metrics import LATENCY_BUCKETS, TEST_DELAY_ENV, NodeMetrics, fragment_seconds
from fedsql.latency import quantile
from fedsql.local import start_connector, write_agency_toml
from fedsql.resilience import Link
from fedsql.v1 import connector_pb2 as pb
from fedsql.wire import status_from_proto

DELAY = 0.3  # seconds the slowed connector waits before each record batch


def _samples(body: str) -> dict[str, float]:
    return {
        ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
        for ln in body.splitlines()
        if ln and ln[0] != "#"
    }


def test_buckets_are_cumulative_and_bounds_inclusive() -> None:
    m = NodeMetrics("health", 4)
    for s in (0.001, 0.005, 0.02, 0.7, 7.0, 1000.0):  # 0.005 is in the 5 ms bucket (le)
        m.finished("ok", seconds=s)
    m.finished("refused", seconds=0.002)
    m.finished("refused")  # not measured: counted, not in the histogram
    h = m.latency()["ok"]
    assert h.upper_bounds == LATENCY_BUCKETS and h.count == 6
    at = dict(zip(h.upper_bounds, h.cumulative_counts, strict=True))
    assert (at[0.005], at[0.01], at[0.025], at[0.5], at[1], at[10], at[300]) == (
        2,
        2,
        3,
        3,
        4,
        5,
        5,
    )
    assert list(h.cumulative_counts) == sorted(h.cumulative_counts)
    assert h.sum_seconds == pytest.approx(1007.726)
    assert m.latency()["refused"].count == 1 and m.snapshot()[1]["refused"] == 2
    assert quantile(h, 0.99) == float("inf")  # beyond 300 s: no bound to give
    text = _samples(m.prometheus())
    tag = 'connector="health",outcome="ok"'
    assert text[f'fedsql_fragment_seconds_bucket{{{tag},le="0.005"}}'] == 2
    assert text[f'fedsql_fragment_seconds_bucket{{{tag},le="300"}}'] == 5
    assert text[f'fedsql_fragment_seconds_bucket{{{tag},le="+Inf"}}'] == 6
    assert text[f"fedsql_fragment_seconds_count{{{tag}}}"] == 6
    assert text[f"fedsql_fragment_seconds_sum{{{tag}}}"] == pytest.approx(1007.726)


def test_latency_of_an_audit_line() -> None:
    assert fragment_seconds({"outcome": "ok", "seconds": 0.25, "time": "x"}) == 0.25
    arrived = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    took = fragment_seconds({"outcome": "refused", "time": arrived.isoformat()})
    assert took is not None and 2 <= took < 10
    assert fragment_seconds({"outcome": "refused"}) is None


def test_status_and_prometheus_show_fragment_latency(tmp_path: Path) -> None:
    db = tmp_path / "health.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE visits AS SELECT range AS id FROM range(10)")
    toml = write_agency_toml(tmp_path / "health.toml", "health", "duckdb", db.name)
    toml.write_text(
        toml.read_text().replace("[connector]\n", '[connector]\nmetrics_listen = "127.0.0.1:0"\n')
    )
    c = start_connector(toml, env={TEST_DELAY_ENV: str(DELAY)})
    try:
        fed_toml = tmp_path / "federation.toml"
        fed_toml.write_text(
            f'[[connector]]\nname = "health"\naddress = "{c.address}"\ninsecure = true\n'
        )
        with fedsql.connect(fed_toml) as fed:
            assert fed.sql("SELECT id FROM health.visits").num_rows == 10
        link = Link("health", c.address, 2.0)
        try:  # a fragment the connector itself refuses (not a read-only SELECT)
            with pytest.raises(grpc.RpcError):
                req = pb.ExecuteRequest(query_id="q-refused", sql="DELETE FROM visits")
                list(link.stub.Execute(req, timeout=5))
            status = status_from_proto(link.stub.GetStatus(pb.GetStatusRequest(), timeout=5))
        finally:
            link.close()
        ok = status.latency["ok"]
        assert ok.count == 1 and ok.sum_seconds >= DELAY
        at = dict(zip(ok.upper_bounds, ok.cumulative_counts, strict=True))
        assert at[0.25] == 0 and at[10] == 1  # slowed by DELAY, well within 10 s
        assert status.latency["refused"].count == 1
        with urllib.request.urlopen(status.metrics_url, timeout=5) as resp:
            body = _samples(resp.read().decode())
        tag = 'connector="health",outcome="ok"'
        assert body[f'fedsql_fragment_seconds_bucket{{{tag},le="+Inf"}}'] == 1
        assert body[f"fedsql_fragment_seconds_sum{{{tag}}}"] >= DELAY

        r = subprocess.run(
            [sys.executable, "-m", "fedsql", "status", "-c", str(fed_toml), "--latency"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        _, latency = r.stdout.split("fragment latency since each connector started")
        head, _, *rows = latency.strip().splitlines()[1:]
        assert [h.strip() for h in head.split("|")] == [
            "agency",
            "outcome",
            "fragments",
            "mean",
            "p50",
            "p95",
            "p99",
        ]
        cells = {row.split("|")[1].strip(): [x.strip() for x in row.split("|")] for row in rows}
        assert set(cells) == {"ok", "refused"}
        assert cells["ok"][0] == "health" and cells["ok"][2] == "1"
        assert cells["ok"][4].endswith(" ms") or cells["ok"][4].endswith(" s")
    finally:
        c.stop()
