"""What signed audit logs and receipts cost, per fragment (issue 16).

    .venv/bin/python benchmarks/audit_cost.py --sf 1 --runs 5

1. Micro-benchmarks (medians of ``--n`` repetitions, on this machine's disk):
   a connector's audit line written signed (ECDSA P-256) and unsigned, both
   fsync'ed; a receipt signed and serialized; a receipt checked by the
   coordinator (signature, certificate from the federation CA naming the
   agency, request fields); a coordinator query line with three receipts.
2. TPC-H at ``--sf`` on three DuckDB agencies over mutual TLS: the 22 queries
   run alternately on two federations of the same data, one whose connectors
   and coordinator keep no audit log, one where both do (signed lines,
   receipts logged). Receipts are signed in both: they are part of every
   response; their cost is in (1) and their bytes are counted here.

Writes benchmarks/results/audit-sf<SF>.json and .md. No asserts: figures only.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import fedsql
from fedsql import certs
from fedsql.audit.chain import Rotation
from fedsql.audit.coordinator import Call, CoordinatorAudit, ReceiptChecker
from fedsql.audit.receipts import Receipt, sign
from fedsql.audit.signing import NodeKey
from fedsql.bench.tpch import tpch_query
from fedsql.config import ClientTLS, ConnectorRef
from fedsql.connectors.audit import AuditLog
from fedsql.local import (
    LocalFederation,
    generate_tpch,
    local_pki,
    split_agencies,
    write_agency_toml,
)
from fedsql.wire import receipt_to_proto

RECORD = {  # a typical fragment line (TPC-H Q3's orders fragment, as a connector writes it)
    "time": "2025-01-01T00:00:00.000+00:00",
    "query_id": "0123456789abcdef",
    "peer": "ipv4:127.0.0.1:51234",
    "sql": "SELECT o_orderkey, o_orderdate, o_shippriority, o_custkey FROM orders "
    "WHERE o_orderdate < CAST('1995-03-15' AS DATE)",
    "sql_sha256": "ab" * 32,
    "nonce": "cd" * 16,
    "issued_unix_ms": 1735689600000,
    "principal_sig": "MEUCIQ" + "A" * 90,
    "keys_sha256": "ef" * 32,
    "coordinator_cert": "01" * 32,
    "coordinator": "coordinator",
    "user": "alice",
    "roles": ["analyst"],
    "purpose": "monthly statistics",
    "authenticated": True,
    "tables": ["orders"],
    "columns": ["orders.o_custkey", "orders.o_orderdate", "orders.o_orderkey"],
    "masks": [],
    "engine": "duckdb",
    "outcome": "ok",
    "rows": 727305,
    "bytes": 9876543,
    "seconds": 0.123456,
}


def _median_us(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def micro(work: Path, n: int) -> dict[str, float]:
    pki = local_pki(work)  # a CA and the coordinator's certificate; no processes
    certs.issue(pki, "connector", "trade", pki)
    key = NodeKey.load(pki / "trade.key", pki / "trade.crt", "bench")
    out: dict[str, float] = {}
    work.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, k in (("signed", key), ("unsigned", None)):
        path = work / f"micro-{name}.jsonl"
        log = AuditLog(path, k, name="trade")
        log.write(dict(RECORD))
        out[f"connector_line_{name}_us"] = _median_us(lambda lg=log: lg.write(dict(RECORD)), n)
        log.close()
        sizes[name] = len(path.read_text().splitlines()[-1]) + 1
    out["connector_line_signed_bytes"] = sizes["signed"]
    out["connector_line_unsigned_bytes"] = sizes["unsigned"]
    base = Receipt(
        "trade", "0123456789abcdef", "ab" * 32, "ok", 727305, 9876543, 1042, "12" * 32,
        int(time.time() * 1000), "coordinator", "alice", "cd" * 16,
    )  # fmt: skip
    out["receipt_sign_us"] = _median_us(lambda: receipt_to_proto(sign(base, key)), n)
    signed = sign(base, key)
    out["receipt_bytes"] = len(receipt_to_proto(signed).SerializeToString())
    tls = ClientTLS(pki / "ca.crt", pki / "coordinator.crt", pki / "coordinator.key")
    checker = ReceiptChecker(ConnectorRef("trade", "127.0.0.1:1", False, tls))

    def check() -> None:
        call = Call("trade", "f0", base.nonce, base.sql_sha256)
        assert checker.accept(call, signed, base.query_id) == ""

    out["receipt_check_us"] = _median_us(check, n)
    coordinator_key = NodeKey.load(pki / "coordinator.key", pki / "coordinator.crt", "bench")
    audit = CoordinatorAudit(work / "micro-coordinator.jsonl", coordinator_key, Rotation())
    calls = []
    for agency in ("trade", "registry", "industry"):
        c = Call(agency, "f0", base.nonce, base.sql_sha256, "ok", signed)
        calls.append(c)

    def query_line() -> None:
        audit.query(
            started="2025-01-01T00:00:00.000+00:00", query_id="0123456789abcdef", user="alice",
            roles=("analyst",), purpose="monthly statistics", sql=str(RECORD["sql"]),
            tables=("trade.orders", "registry.customer"), calls=calls, error=None, rows=10,
            seconds=0.2,
        )  # fmt: skip

    query_line()
    out["coordinator_query_line_3_receipts_us"] = _median_us(query_line, max(1, n // 4))
    audit.close()
    out["coordinator_query_line_3_receipts_bytes"] = (
        len((work / "micro-coordinator.jsonl").read_text().splitlines()[-1]) + 1
    )
    return out


def federation(work: Path, parquet: Path, audit: bool) -> LocalFederation:
    work.mkdir(parents=True, exist_ok=True)
    tomls = []
    for agency, (kind, where) in split_agencies(parquet, work, "duckdb").items():
        toml = write_agency_toml(work / f"{agency}.toml", agency, kind, where)
        if not audit:
            toml.write_text(re.sub(r"(?m)^audit_log = .*\n", "", toml.read_text()))
        tomls.append(toml)
    local = LocalFederation(work, tomls)
    if audit:
        cfg = local.config_path
        cfg.write_text('[coordinator]\naudit_log = "coordinator-audit.jsonl"\n\n' + cfg.read_text())
    return local


def tpch(sf: float, runs: int, work: Path, progress: Any = print) -> dict[str, Any]:
    parquet = generate_tpch(sf, Path.home() / ".cache" / "fedsql" / f"tpch-sf{sf:g}")
    plain = federation(work / "plain", parquet, audit=False)
    audited = federation(work / "audited", parquet, audit=True)
    rows = []
    try:
        with fedsql.connect(plain.config_path) as a, fedsql.connect(audited.config_path) as b:
            for n in range(1, 23):
                sql = tpch_query(n)
                a.sql(sql), b.sql(sql)  # warm-up
                times: dict[str, list[float]] = {"plain": [], "audited": []}
                for run in range(runs):
                    order = [("plain", a), ("audited", b)]
                    for name, fed in order if run % 2 == 0 else order[::-1]:
                        t = time.perf_counter()
                        fed.sql(sql)
                        times[name].append(time.perf_counter() - t)
                st = b.last_stats
                assert st is not None
                receipts = [r.receipt for r in st.fragments if r.receipt is not None]
                row = {
                    "query": n,
                    "fragments": len(st.fragments),
                    "plain_s": statistics.median(times["plain"]),
                    "audited_s": statistics.median(times["audited"]),
                    "receipt_bytes": sum(
                        len(receipt_to_proto(r).SerializeToString()) for r in receipts
                    ),
                    "response_bytes": st.bytes,
                }
                rows.append(row)
                progress(
                    f"Q{n:02d} {row['fragments']} fragments  plain {row['plain_s']:.4f} s  "
                    f"audited {row['audited_s']:.4f} s  receipts {row['receipt_bytes']} B"
                )
    finally:
        plain.stop()
        audited.stop()
    sizes = {p.name: p.stat().st_size for p in (work / "audited").glob("*-audit*.jsonl")}
    return {"queries": rows, "audit_log_bytes": sizes}


def markdown(sf: float, runs: int, m: dict[str, float], t: dict[str, Any]) -> str:
    q = t["queries"]
    frags = sum(r["fragments"] for r in q)
    plain, audited = sum(r["plain_s"] for r in q), sum(r["audited_s"] for r in q)
    rb = sum(r["receipt_bytes"] for r in q)
    lines = [
        f"# Audit cost: signed logs and receipts (TPC-H SF {sf:g}, medians of {runs} runs)",
        "",
        "## Per fragment, measured alone",
        "",
        "| what | µs | bytes |",
        "|---|---:|---:|",
        f"| connector line, unsigned (fsync) | {m['connector_line_unsigned_us']:.0f} | "
        f"{m['connector_line_unsigned_bytes']:.0f} |",
        f"| connector line, signed P-256 (fsync) | {m['connector_line_signed_us']:.0f} | "
        f"{m['connector_line_signed_bytes']:.0f} |",
        f"| receipt: sign + serialize | {m['receipt_sign_us']:.0f} | {m['receipt_bytes']:.0f} |",
        f"| receipt: coordinator's check | {m['receipt_check_us']:.0f} | |",
        f"| coordinator query line, 3 receipts (fsync) | "
        f"{m['coordinator_query_line_3_receipts_us']:.0f} | "
        f"{m['coordinator_query_line_3_receipts_bytes']:.0f} |",
        "",
        "## TPC-H, 22 queries, no audit logs vs signed logs on both sides",
        "",
        "| query | fragments | no logs s | signed logs s | receipt bytes | response bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| Q{r['query']:02d} | {r['fragments']} | {r['plain_s']:.4f} | {r['audited_s']:.4f} | "
        f"{r['receipt_bytes']} | {r['response_bytes']:,} |"
        for r in q
    ]
    lines += [
        "",
        f"total: {plain:.3f} s without logs, {audited:.3f} s with ({audited - plain:+.3f} s, "
        f"{(audited - plain) / frags * 1000:+.2f} ms per fragment over {frags} fragments; "
        "run-to-run noise is of the same order)",
        f"receipts: {rb} bytes over {frags} fragments ({rb / frags:.0f} B per response), "
        f"{rb / max(1, sum(r['response_bytes'] for r in q)) * 100:.3f} % of the bytes moved",
        f"audit logs written: {t['audit_log_bytes']}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=2000, help="repetitions of each micro-benchmark")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedsql-audit-bench-") as d:
        work = Path(d)
        t = tpch(args.sf, args.runs, work)
        m = micro(work / "micro", args.n)
    for k, v in m.items():
        print(f"{k:42} {v:10.1f}")
    out = Path(__file__).parent / "results"
    (out / f"audit-sf{args.sf:g}.json").write_text(
        json.dumps({"sf": args.sf, "runs": args.runs, "micro": m, "tpch": t}, indent=2) + "\n"
    )
    md = markdown(args.sf, args.runs, m, t)
    (out / f"audit-sf{args.sf:g}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
