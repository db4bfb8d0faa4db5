"""``fedsql bench scenario``: what masks and row filters cost on top of plain federation.

The agency scenario (population registry, health agency, tax agency; see
:mod:`fedsql.scenario`) scaled to ``people`` persons (visits: 3 per person,
tax returns: 3 in 4), run three ways on the same data and machine:

- *plain*: the agencies without any policy (the baseline);
- *auditor*: the agencies with their policies, queried by the ``auditor`` role,
  which sees raw values — the cost of the policy views alone; its results must
  equal plain's;
- *analyst*: the same agencies queried by an analyst — hashed national IDs
  (keyed HMAC at each agency), generalised dates, buckets, redaction and the
  suppressed region.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

import fedsql
from fedsql import scenario
from fedsql.bench.compare import diff_tables, has_order_by, median_time
from fedsql.local import LocalFederation

QUERIES: dict[str, str] = {
    "visits by diagnosis and region": (
        "SELECT diagnosis, region, count(*) AS visits, sum(cost) AS cost "
        "FROM health.visits GROUP BY ALL ORDER BY ALL"
    ),
    "people x visits by birth year (join on national_id)": (
        "SELECT year(p.birth_date) AS born, count(*) AS visits, avg(v.cost) AS avg_cost "
        "FROM registry.people p JOIN health.visits v ON p.national_id = v.national_id "
        "GROUP BY born ORDER BY born"
    ),
    "income bucket by region (join on national_id)": (
        "SELECT p.region, t.income, count(*) AS people FROM registry.people p "
        "JOIN tax.tax_returns t ON p.national_id = t.national_id GROUP BY ALL ORDER BY ALL"
    ),
    "visit cost by income bucket (three agencies)": (
        "SELECT t.income, count(*) AS visits, sum(v.cost) AS cost FROM registry.people p "
        "JOIN health.visits v ON p.national_id = v.national_id "
        "JOIN tax.tax_returns t ON t.national_id = p.national_id "
        "WHERE v.diagnosis = 'diabetes' GROUP BY t.income ORDER BY t.income"
    ),
    "contact list (masked columns out)": (
        "SELECT national_id, name, email, birth_date FROM registry.people "
        "WHERE region = 'North' ORDER BY national_id LIMIT 1000"
    ),
}
MODES = ("plain", "auditor", "analyst")


@dataclass
class ScenarioQuery:
    name: str
    seconds: dict[str, float] = field(default_factory=dict)  # mode -> median
    bytes: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    auditor_equals_plain: bool = False


@dataclass
class ScenarioReport:
    people: int
    runs: int
    queries: list[ScenarioQuery] = field(default_factory=list)

    def total(self, mode: str) -> float:
        return sum(q.seconds.get(mode, 0.0) for q in self.queries)


def _median(fed: fedsql.Federation, sql: str, runs: int) -> tuple[float, pa.Table, int]:
    fed.sql(sql)  # warm-up: catalog, channels, plan cache
    secs, out = median_time(fed.sql, sql, runs)
    assert fed.last_stats is not None
    return secs, out, fed.last_stats.bytes


def run(
    people: int = 200_000,
    runs: int = 3,
    json_path: Path | None = None,
    progress: Callable[[str], None] = print,
) -> ScenarioReport:
    report = ScenarioReport(people, runs, [ScenarioQuery(n) for n in QUERIES])
    with tempfile.TemporaryDirectory(prefix="fedsql-scenario-") as tmp:
        work = Path(tmp)
        progress(f"building the scenario for {people:,} people ...")
        plain_tomls = scenario.build(work, people, policies=False)
        policy_tomls = scenario.build(work, people, policies=True)
        results: dict[str, dict[str, pa.Table]] = {m: {} for m in MODES}
        for tomls, modes in ((plain_tomls, ("plain",)), (policy_tomls, ("auditor", "analyst"))):
            with LocalFederation(work, tomls, users=scenario.USERS) as local:
                for mode in modes:
                    user = {"plain": "alice", "auditor": "audrey", "analyst": "alice"}[mode]
                    with fedsql.connect(local.config_path, user=user) as fed:
                        for q in report.queries:
                            secs, out, nbytes = _median(fed, QUERIES[q.name], runs)
                            q.seconds[mode], q.bytes[mode] = secs, nbytes
                            q.rows[mode] = out.num_rows
                            results[mode][q.name] = out
                            progress(f"{mode:>8}  {secs:8.4f} s  {nbytes:>12,} B  {q.name}")
        for q in report.queries:
            sql = QUERIES[q.name]
            err = diff_tables(
                results["auditor"][q.name],
                results["plain"][q.name],
                has_order_by(sql),
            )
            q.auditor_equals_plain = err is None
            if err:
                progress(f"auditor differs from plain on {q.name!r}: {err}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(asdict(report), indent=2))
        json_path.with_suffix(".md").write_text(markdown(report))
    return report


def markdown(r: ScenarioReport) -> str:
    lines = [
        f"# Agency scenario, {r.people:,} people (medians of {r.runs} runs)",
        "",
        "| query | plain s | auditor s | analyst s | analyst / plain | bytes plain "
        "| bytes analyst | auditor = plain |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for q in r.queries:
        s = q.seconds
        lines.append(
            f"| {q.name} | {s['plain']:.4f} | {s['auditor']:.4f} | {s['analyst']:.4f} "
            f"| {s['analyst'] / s['plain']:.2f}x | {q.bytes['plain']:,} "
            f"| {q.bytes['analyst']:,} | {'yes' if q.auditor_equals_plain else 'NO'} |"
        )
    lines += ["", summary(r).replace("\n", "  \n"), ""]
    return "\n".join(lines)


def summary(r: ScenarioReport) -> str:
    plain, aud, ana = (r.total(m) for m in MODES)
    ok = sum(q.auditor_equals_plain for q in r.queries)
    return "\n".join(
        [
            f"agency scenario, {r.people:,} people: plain federation {plain:.3f} s, "
            f"with policies as auditor {aud:.3f} s ({aud / plain:.2f}x), "
            f"as analyst {ana:.3f} s ({ana / plain:.2f}x)",
            f"auditor results equal plain federation's on {ok}/{len(r.queries)} queries",
        ]
    )
