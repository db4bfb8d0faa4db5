"""``fedsql demo``: three agencies on loopback, a few federated queries, then shut down."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import fedsql
from fedsql.local import tpch_federation

DEMO_QUERIES = [
    (
        "Cross-agency join: revenue by nation (registry ⋈ trade)",
        """SELECT n_name AS nation, count(*) AS orders, sum(o_totalprice) AS revenue
FROM orders JOIN customer ON o_custkey = c_custkey JOIN nation ON c_nationkey = n_nationkey
WHERE o_orderdate >= DATE '1995-01-01'
GROUP BY n_name ORDER BY revenue DESC LIMIT 5""",
    ),
    (
        "Aggregate pushed whole to one agency (TPC-H Q1 style, trade only)",
        """SELECT l_returnflag, l_linestatus, count(*) AS lines, sum(l_quantity) AS qty
FROM lineitem WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY ALL ORDER BY ALL""",
    ),
    (
        "Three agencies: suppliers' parts shipped per region",
        """SELECT r_name AS region, count(DISTINCT s_suppkey) AS suppliers, sum(l_quantity) AS qty
FROM lineitem, supplier, nation, region
WHERE l_suppkey = s_suppkey AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey
  AND l_shipdate BETWEEN DATE '1996-01-01' AND DATE '1996-03-31'
GROUP BY r_name ORDER BY r_name""",
    ),
]


def run_demo(
    show_table: Callable[[object], str], out: Callable[[str], None] = print, sf: float = 0.01
) -> None:
    with tempfile.TemporaryDirectory(prefix="fedsql-demo-") as tmp:
        work = Path(tmp)
        out(
            f"Generating TPC-H SF {sf:g} and splitting it over three agencies "
            "(trade: orders, lineitem; registry: customer, nation, region; "
            "industry: part, partsupp, supplier) ..."
        )
        local, _ = tpch_federation(work, sf, backend="duckdb")
        with local:
            for c in local.connectors:
                out(f"  connector {c.name:<9} pid {c.proc.pid:<7} on {c.address}")
            with fedsql.connect(local.config_path) as fed:
                for title, sql in DEMO_QUERIES:
                    out("")
                    out(f"== {title}")
                    out(sql)
                    out("-- plan:")
                    out(fed.explain(sql))
                    table = fed.sql(sql)
                    out("-- result:")
                    out(show_table(table))
                    st = fed.last_stats
                    assert st is not None
                    out(f"-- {st.result_rows} rows in {st.total_seconds:.3f} s; moved per agency:")
                    for agency, s in sorted(st.connectors.items()):
                        out(
                            f"   {agency:<9} {s.fragments} fragment(s), {s.rows:>8} rows, "
                            f"{s.bytes:>10} bytes, {s.seconds:.3f} s"
                        )
        out("")
        out("Demo done; connectors stopped.")
