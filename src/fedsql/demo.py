"""``fedsql demo``: three agencies on loopback, a few federated queries, then shut down."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import fedsql
from fedsql import scenario
from fedsql.audit import report
from fedsql.audit.reconcile import reconcile
from fedsql.audit.verify import chains, verify_chain
from fedsql.local import LocalFederation, tpch_federation

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
            out(
                f"  mutual TLS: a federation CA and certificates in {local.pki}; each connector "
                "admits only coordinator 'coordinator', which signs every analyst's request"
            )
            for c in local.connectors:
                out(f"  connector {c.name:<9} pid {c.proc.pid:<7} on {c.address} (TLS)")
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
        run_scenario(work / "agencies", show_table, out)
        out("")
        out("Demo done; connectors stopped.")


SCENARIO_QUERIES = [
    (
        "What an analyst sees of the population registry",
        "SELECT national_id, name, birth_date, email, address, region FROM people "
        "ORDER BY email LIMIT 3",
    ),
    (
        "Cross-agency statistics joined on hashed national IDs: visits and income by birth decade",
        """SELECT year(p.birth_date) // 10 * 10 AS decade, count(*) AS visits,
       round(avg(v.cost), 2) AS avg_cost, round(avg(t.income)) AS avg_income
FROM visits v JOIN people p ON v.national_id = p.national_id
LEFT JOIN tax_returns t ON t.national_id = p.national_id
GROUP BY decade ORDER BY decade""",
    ),
    (
        "A curious analyst: look a person up by their raw national ID, count the small region",
        """SELECT (SELECT count(*) FROM people WHERE national_id = 'NID000007919') AS by_raw_id,
       (SELECT count(*) FROM people WHERE region = 'Smallville') AS smallville""",
    ),
]


def run_scenario(
    work: Path, show_table: Callable[[object], str], out: Callable[[str], None] = print
) -> None:
    out("== Agency scenario: population registry, health and tax agencies")
    out("   Each agency masks at the source: national IDs are hashed with the federation's")
    out("   shared key (so they still join), birth dates become years, addresses are")
    out("   redacted, incomes bucketed, and the small region 'Smallville' is filtered out.")
    out("   alice is an analyst; audrey is an auditor and sees raw values.")
    local = LocalFederation(work, scenario.build(work), users=scenario.USERS)
    # The coordinator keeps its own signed log of every query and the agencies' receipts.
    cfg = local.config_path
    cfg.write_text('[coordinator]\naudit_log = "coordinator-audit.jsonl"\n\n' + cfg.read_text())
    purposes = {"alice": "regional health statistics", "audrey": "audit of the health data"}
    with local:
        for user in ("alice", "audrey"):
            with fedsql.connect(local.config_path, user=user, purpose=purposes[user]) as fed:
                for title, sql in SCENARIO_QUERIES:
                    out("")
                    out(f"-- as {user}: {title}")
                    out(show_table(fed.sql(sql)))
        out("")
        out("-- which policies applied where (fedsql explain, as alice):")
        with fedsql.connect(local.config_path, user="alice") as fed:
            plan = fed.explain(SCENARIO_QUERIES[1][1])
            out(plan[plan.index("policies:") :])
    run_audit(work, show_table, out)


def run_audit(work: Path, show_table: Callable[[object], str], out: Callable[[str], None]) -> None:
    """The end of the scenario: what each side kept, checked, and the auditor's view."""
    import pyarrow as pa

    out("")
    out("-- audit: every call, refused ones too, is a signed line in its agency's log; the")
    out("   coordinator logged each query with the receipts the agencies signed for it")
    for files in chains([work]):
        v = verify_chain(files, None)
        state = "intact" if v.ok else f"BROKEN at line {v.broken_line}"
        signed = f"signed by '{v.signers[0]}'" if v.signed else "UNSIGNED"
        out(f"   {files[0].name:<26} {v.lines:>3} lines, {state}, {signed}")
    r = reconcile([work])
    verdict = "both sides agree" if r.ok else f"{len(r.findings)} problems"
    out(f"   receipts held against agency lines (`fedsql audit reconcile`): {r.matched}, {verdict}")
    out("")
    out("-- the auditor's view (`fedsql audit report DIR`): who read which agency's tables, why")
    items = report.accesses([work])
    rows = report.summary(items)
    keep = ("user", "agency", "table", "accesses", "refused", "rows", "purposes")
    out(show_table(pa.Table.from_pylist([{k: r[k] for k in keep} for r in rows])))
    out(report.bar_chart(items))
