"""What a TPC-H benchmark run measured, and how it is shown: tables, Markdown, a chart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from fedsql.bench.peers import PeerRun


@dataclass
class QueryResult:
    query: int
    rows: int
    central_seconds: float
    federated_seconds: float
    ratio: float
    bytes_moved: int
    rows_moved: int
    fragments: int
    plan_seconds: float  # median over the timed runs (the plan cache hits)
    bytes_by_agency: dict[str, int]
    ok: bool
    error: str | None = None
    plan_cold_seconds: float = 0.0  # the first run's planning, before any cache
    waves: int = 1  # sequential rounds of fragment calls (1 + semi-join chain depth)
    peers: dict[str, PeerRun] = field(default_factory=dict)  # "attach", "fdw"


@dataclass(frozen=True)
class Link:
    """A slower inter-agency link, for the modelled figures (``--link MBPS[,RTT_MS]``)."""

    mbps: float
    rtt_ms: float = 0.0

    def transfer(self, nbytes: int) -> float:
        return nbytes * 8 / (self.mbps * 1e6)

    @staticmethod
    def parse(text: str) -> Link:
        parts = text.split(",")
        return Link(float(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0)


def waves(runs: tuple[object, ...]) -> int:
    """1 + the longest chain of fragments waiting for another's join keys."""
    frags = {r.fragment.id: r.fragment for r in runs}  # type: ignore[attr-defined]
    depth: dict[str, int] = {}

    def d(fid: str) -> int:
        if fid not in depth:
            depth[fid] = 1 + max((d(r.build) for r in frags[fid].keys), default=-1)
        return depth[fid]

    return 1 + max((d(f) for f in frags), default=0)


@dataclass
class BenchReport:
    sf: float
    runs: int
    backend: str
    central_copy_seconds: float
    central_copy_bytes: int
    queries: list[QueryResult] = field(default_factory=list)

    @property
    def total_central(self) -> float:
        return sum(q.central_seconds for q in self.queries)

    @property
    def total_federated(self) -> float:
        return sum(q.federated_seconds for q in self.queries)

    @property
    def total_bytes(self) -> int:
        return sum(q.bytes_moved for q in self.queries)


PEER_NAMES = {"attach": "DuckDB-attach", "fdw": "postgres_fdw"}


def markdown(r: BenchReport) -> str:
    """The per-query table and the totals, as Markdown."""
    peers = _peers_of(r)
    lines = [
        f"# TPC-H SF {r.sf:g}, {r.backend} agencies (medians of {r.runs} runs)",
        "",
        "| query | rows | central s | federated s | ratio | fragments | bytes moved "
        "| plan ms (cold) | check |"
        + "".join(f" {PEER_NAMES[p]} s | {PEER_NAMES[p]} bytes |" for p in peers),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|" + "---:|---:|" * len(peers),
    ]
    for q in r.queries:
        cells = ""
        for p in peers:
            pr = q.peers.get(p)
            if pr is None:
                cells += " – | – |"
            elif not pr.ok:
                cells += f" FAIL: {pr.error} | {pr.bytes:,} |"
            else:
                cells += f" {pr.seconds:.4f} | {pr.bytes:,} |"
        lines.append(
            f"| Q{q.query:02d} | {q.rows} | {q.central_seconds:.4f} | {q.federated_seconds:.4f} "
            f"| {q.ratio:.1f} | {q.fragments} | {q.bytes_moved:,} "
            f"| {q.plan_seconds * 1000:.1f} ({q.plan_cold_seconds * 1000:.1f}) "
            f"| {'ok' if q.ok else 'FAIL: ' + (q.error or '')} |" + cells
        )
    lines += ["", summary(r).replace("\n", "  \n"), ""]
    return "\n".join(lines)


def chart(r: BenchReport, path: Path) -> None:
    """Per-query seconds, central vs federated (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = [f"Q{q.query:02d}" for q in r.queries]
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(
        [x - 0.2 for x in xs],
        [q.central_seconds for q in r.queries],
        0.4,
        label="central DuckDB copy",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [q.federated_seconds for q in r.queries],
        0.4,
        label="fedsql (federated)",
    )
    peers = _peers_of(r)
    width = 0.8 / (2 + len(peers))
    for i, p in enumerate(peers):
        ax.bar(
            [x + 0.2 + width * (i + 1) for x in xs],
            [q.peers[p].seconds if p in q.peers else 0 for q in r.queries],
            width,
            label=PEER_NAMES[p],
        )
    if peers:
        ax.set_yscale("log")
    ax.set_xticks(list(xs), names, rotation=60)
    ax.set_ylabel("seconds (median)")
    ax.set_title(
        f"TPC-H SF {r.sf:g}, {r.backend} agencies: federated {r.total_federated:.2f} s "
        f"vs central {r.total_central:.2f} s; {r.total_bytes / 1e6:.1f} MB moved"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


HEADER = (
    f"{'query':>5} {'rows':>6} {'central s':>10} {'fed s':>9} {'ratio':>7} "
    f"{'frags':>5} {'rows moved':>11} {'bytes moved':>12}  check"
)


def row(q: QueryResult) -> str:
    check = "ok" if q.ok else f"FAIL: {q.error}"
    return (
        f"Q{q.query:02d}  {q.rows:>6} {q.central_seconds:>10.4f} {q.federated_seconds:>9.4f} "
        f"{q.ratio:>7.1f} {q.fragments:>5} {q.rows_moved:>11} {q.bytes_moved:>12}  {check}"
    )


def link_summary(r: BenchReport, link: Link) -> str:
    """Modelled totals on a slower link: every moved byte crosses it (conservatively
    all through the coordinator's own link) and each wave of calls pays one RTT; the
    central copy must first cross the same link."""
    fed = sum(
        q.federated_seconds + link.transfer(q.bytes_moved) + q.waves * link.rtt_ms / 1e3
        for q in r.queries
    )
    copy = r.central_copy_seconds + link.transfer(r.central_copy_bytes)
    return (
        f"on a {link.mbps:g} Mbit/s link with {link.rtt_ms:g} ms RTT (modelled): federated "
        f"{fed:.2f} s for the 22 queries; the central copy needs {copy:.1f} s to move "
        f"{r.central_copy_bytes / 1e6:.0f} MB before its {r.total_central:.2f} s of queries "
        f"(and again whenever the data changes)"
    )


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3 if xs else float("nan")


def _geomean(r: BenchReport) -> float:
    ratios = [q.ratio for q in r.queries if q.ok and q.ratio > 0]
    return statistics.geometric_mean(ratios) if ratios else float("nan")


def _peers_of(r: BenchReport) -> list[str]:
    return [p for p in PEER_NAMES if any(p in q.peers for q in r.queries)]


def peer_summary(r: BenchReport, peer: str) -> str:
    """One line per peer: totals over the queries it answered correctly, beside
    fedsql's total over the same queries."""
    runs = [(q, q.peers[peer]) for q in r.queries if peer in q.peers]
    good = [(q, pr) for q, pr in runs if pr.ok]
    bad = len(runs) - len(good)
    p_total = sum(pr.seconds for _, pr in good)
    f_total = sum(q.federated_seconds for q, _ in good)
    p_bytes = sum(pr.bytes for _, pr in good)
    f_bytes = sum(q.bytes_moved for q, _ in good)
    ratio = f_total / p_total if p_total else float("nan")
    return (
        f"{PEER_NAMES[peer]}: {len(good)}/{len(runs)} correct, total {p_total:.3f} s, "
        f"{p_bytes / 1e6:.1f} MB moved; fedsql on the same queries {f_total:.3f} s "
        f"({ratio:.2f}x the peer's time), {f_bytes / 1e6:.1f} MB"
        + (f"; {bad} failed or timed out (excluded)" if bad else "")
    )


def summary(r: BenchReport) -> str:
    ok = sum(q.ok for q in r.queries)
    ratio = r.total_federated / r.total_central if r.total_central else float("nan")
    n = len(r.queries)
    return "\n".join(
        [
            f"TPC-H SF {r.sf:g}, {r.backend} agencies: {ok}/{n} federated results equal "
            "the central copy's",
            f"central DuckDB total {r.total_central:.3f} s; "
            f"federated total {r.total_federated:.3f} s "
            f"(ratio {ratio:.2f}x, geometric mean of per-query ratios {_geomean(r):.2f}x; "
            f"medians of {r.runs} runs)",
            f"bytes moved by federation: {r.total_bytes / 1e6:.1f} MB over {n} queries; "
            f"central copy: {r.central_copy_bytes / 1e6:.1f} MB "
            f"made in {r.central_copy_seconds:.2f} s",
            f"planning: median {_median_ms([q.plan_cold_seconds for q in r.queries]):.1f} ms "
            f"cold, {_median_ms([q.plan_seconds for q in r.queries]):.2f} ms cached",
            *(peer_summary(r, p) for p in _peers_of(r)),
        ]
    )
