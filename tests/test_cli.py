"""The CLI end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import PASSWORDS
from helpers import LocalService

from fedsql.local import LocalFederation
from fedsql.service.remote import Remote, RemoteError


def fedsql(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedsql", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


CROSS = (
    "SELECT n_name, count(*) AS customers FROM customer JOIN nation "
    "ON c_nationkey = n_nationkey GROUP BY n_name ORDER BY customers DESC, n_name LIMIT 3"
)


def test_query_prints_a_table_and_stats(tpch_local: LocalFederation) -> None:
    r = fedsql("query", "-c", str(tpch_local.config_path), "--user", "alice", CROSS)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["n_name", "|", "customers"]
    assert lines[-1] == "(3 rows)"
    assert "registry:" in r.stderr and "rows in" in r.stderr


def test_query_formats(tpch_local: LocalFederation, tmp_path: Path) -> None:
    cfg = str(tpch_local.config_path)
    r = fedsql("query", "-c", cfg, "--format", "csv", "SELECT r_name FROM region ORDER BY 1")
    assert r.stdout.splitlines()[:3] == ['"r_name"', '"AFRICA"', '"AMERICA"']
    r = fedsql(
        "query",
        "-c",
        cfg,
        "--format",
        "json",
        "-q",
        "SELECT r_regionkey, r_name FROM region ORDER BY 1 LIMIT 1",
    )
    assert json.loads(r.stdout) == {"r_regionkey": 0, "r_name": "AFRICA"}
    out = tmp_path / "r.parquet"
    r = fedsql("query", "-c", cfg, "--format", "parquet", "-o", str(out), CROSS)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).num_rows == 3


ALL_ROWS = "--max-rows N (0: all) or --format csv for all"


def test_query_table_says_how_to_see_every_row(tpch_local: LocalFederation) -> None:
    cfg = str(tpch_local.config_path)
    r = fedsql("query", "-c", cfg, "-q", "SELECT o_orderkey FROM orders ORDER BY 1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == f"… 1,000 of 15,000 rows shown; {ALL_ROWS}"
    assert len(lines) == 2 + 1000 + 1  # header, rule, rows, the note
    r = fedsql("query", "-c", cfg, "-q", "--max-rows", "0", "SELECT o_orderkey FROM orders")
    assert r.stdout.splitlines()[-1] == "(15000 rows)"
    r = fedsql("query", "-c", cfg, "-q", "--max-rows", "3", "SELECT n_name FROM nation ORDER BY 1")
    assert r.stdout.splitlines()[-4:] == [
        "ALGERIA",
        "ARGENTINA",
        "BRAZIL",
        f"… 3 of 25 rows shown; {ALL_ROWS}",
    ]


def test_json_keeps_decimals_as_numbers(
    tpch_local: LocalFederation, central: duckdb.DuckDBPyConnection
) -> None:
    sql = "SELECT o_orderkey, o_totalprice FROM orders ORDER BY 1 LIMIT 3"
    r = fedsql("query", "-c", str(tpch_local.config_path), "--format", "json", "-q", sql)
    assert r.returncode == 0, r.stderr
    assert re.match(r'\{"o_orderkey": 1, "o_totalprice": \d+\.\d\d\}$', r.stdout.splitlines()[0])
    got = [json.loads(line, parse_float=Decimal) for line in r.stdout.splitlines()]
    want = central.execute(sql).fetchall()
    assert [(g["o_orderkey"], g["o_totalprice"]) for g in got] == want  # exact, not floats


def test_queries_show_errors_and_readable_times(service: LocalService) -> None:
    remote = Remote(service.url, "alice", PASSWORDS["alice"], ca_file=service.ca)
    try:
        remote.sql("SELECT count(*) FROM region")
        with pytest.raises(RemoteError, match="unknown table 'nowhere'"):
            remote.sql("SELECT x FROM nowhere")
    finally:
        remote.close()
    args = ["queries", "--url", service.url, "--user", "alice", "--ca", str(service.ca)]
    args += ["--password-file", str(service.config.parent / "alice.password")]
    r = fedsql(*args)
    assert r.returncode == 0, r.stderr
    head, _, *rows = r.stdout.splitlines()
    assert [c.strip() for c in head.split("|")][:6] == [
        "id",
        "user",
        "state",
        "started",
        "time",
        "rows",
    ]
    assert "error" in head
    failed = next(line for line in rows if "| failed" in line)
    assert "unknown table 'nowhere'" in failed
    started, took = (c.strip() for c in failed.split("|")[3:5])
    assert re.fullmatch(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d", started), failed
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", took), failed
    done = next(line for line in rows if "| done" in line)
    assert re.search(r"\| 1 +\|", done), done  # one result row
    r = fedsql(*args, "--json")
    listed = json.loads(r.stdout)
    bad = next(q for q in listed if q["state"] == "failed")
    assert "unknown table 'nowhere'" in bad["error"] and isinstance(bad["seconds"], float)


def test_explain_shows_fragments_and_residual(tpch_local: LocalFederation) -> None:
    r = fedsql("explain", "-c", str(tpch_local.config_path), CROSS)
    assert r.returncode == 0, r.stderr
    assert "-> registry" in r.stdout and "residual" in r.stdout
    r = fedsql("explain", "-c", str(tpch_local.config_path), "--analyze", CROSS)
    assert "rows," in r.stdout and "bytes" in r.stdout and "total" in r.stdout


def test_bad_query_is_one_clear_line(tpch_local: LocalFederation) -> None:
    cfg = str(tpch_local.config_path)
    for sql, why in [
        ("SELECT * FROM lineitems", "unknown table 'lineitems'; did you mean"),
        (
            "SELEC 1",
            "syntax error at line 1, column 1: 'SELEC' starts no query (did you mean SELECT?)",
        ),
        ("SELECT nope FROM orders", "nope"),
        ("DROP TABLE orders", "only SELECT"),
    ]:
        r = fedsql("query", "-c", cfg, sql)
        assert r.returncode == 1
        assert r.stdout == ""
        err = r.stderr.strip().splitlines()
        assert err[0].startswith("error: ") and why in err[0], r.stderr
        # one line, or for a syntax error the line of the query and a caret under it
        assert len(err) == 1 or (len(err) == 3 and err[2].strip() == "^"), r.stderr


def test_unreachable_agency_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text('[[connector]]\nname = "ghost"\naddress = "127.0.0.1:9"\ninsecure = true\n')
    r = fedsql("query", "-c", str(cfg), "SELECT 1 FROM t", timeout=60)
    assert r.returncode == 1
    assert "agency 'ghost'" in r.stderr and "Traceback" not in r.stderr


def test_missing_config_and_unknown_user(tpch_local: LocalFederation, tmp_path: Path) -> None:
    r = fedsql("query", "-c", str(tmp_path / "none.toml"), "SELECT 1")
    assert r.returncode == 1 and "file not found" in r.stderr
    r = fedsql("query", "-c", str(tpch_local.config_path), "--user", "mallory", "SELECT 1")
    assert r.returncode == 1 and "unknown user 'mallory'" in r.stderr


def test_demo_runs_end_to_end() -> None:
    r = fedsql("demo", timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "connector trade" in out and "residual" in out and "bytes" in out
    assert "-- as alice" in out and "-- as audrey" in out and "at agency registry" in out
    assert "Demo done; connectors stopped." in out


def test_bench_tpch_small(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = fedsql(
        "bench",
        "tpch",
        "--sf",
        "0.01",
        "--runs",
        "1",
        "--queries",
        "3,17",
        "--json",
        str(out),
        "--link",
        "100,20",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "2/2 federated results equal the central copy's" in r.stdout
    assert "modelled" in r.stdout
    doc = json.loads(out.read_text())
    assert [q["query"] for q in doc["queries"]] == [3, 17] and all(q["ok"] for q in doc["queries"])
    assert doc["central_copy_bytes"] > 0 and doc["total_bytes_moved"] > 0
    assert out.with_suffix(".md").read_text().startswith("# TPC-H SF 0.01")
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_bench_scenario_auditor_sees_plain_federation(tmp_path: Path) -> None:
    """The policy views are transparent for the auditor and bite for the analyst."""
    from fedsql.bench import scenario as bench_scenario

    out = tmp_path / "scenario.json"
    report = bench_scenario.run(2000, runs=1, json_path=out, progress=lambda _: None)
    assert all(q.auditor_equals_plain for q in report.queries)
    by_name = {q.name: q for q in report.queries}
    visits = by_name["visits by diagnosis and region"]
    assert visits.rows["analyst"] < visits.rows["plain"]  # Smallville is suppressed
    assert "| analyst / plain |" in out.with_suffix(".md").read_text()
