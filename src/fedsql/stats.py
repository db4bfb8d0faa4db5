"""What a query did, per fragment and per connector: ``fed.last_stats``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fedsql.audit.receipts import Receipt
from fedsql.planner import Fragment
from fedsql.wire import FragmentStats


@dataclass(frozen=True, slots=True)
class ConnectorStats:
    """What one connector did for one query."""

    fragments: int
    rows: int
    bytes: int
    seconds: float  # wall time from its first fragment's start to its last one's end


@dataclass(frozen=True, slots=True)
class FragmentRun:
    fragment: Fragment
    stats: FragmentStats
    sql: str = ""  # what was sent (the fragment, reduced by join keys where planned)
    # What the agency signed for it (checked: its key, its name, this request);
    # None from a plaintext connector older than receipts.
    receipt: Receipt | None = None


@dataclass(frozen=True, slots=True)
class QueryStats:
    """``fed.last_stats``: per-connector rows, bytes and seconds, plus phase timings."""

    query_id: str
    connectors: dict[str, ConnectorStats]
    fragments: tuple[FragmentRun, ...]
    plan_seconds: float
    fetch_seconds: float
    merge_seconds: float
    total_seconds: float
    result_rows: int
    extra: dict[str, float] = field(default_factory=dict)
    # Agencies that could not be reached and contributed no rows (allow_partial only).
    missing: tuple[str, ...] = ()

    def __getitem__(self, agency: str) -> ConnectorStats:
        return self.connectors[agency]

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.connectors.values())

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.connectors.values())

    def per_agency(self, seconds: bool = False) -> str:
        """``agency: N rows, X kB[, S s]; ...`` — the line CLI, shell and notebook show."""
        return "; ".join(
            f"{a}: {s.rows} rows, {human_bytes(s.bytes)}"
            + (f", {s.seconds:.3f} s" if seconds else "")
            for a, s in sorted(self.connectors.items())
        )

    def analyze_lines(self) -> list[str]:
        """What ``EXPLAIN ANALYZE`` adds to a plan: per fragment, the phases, per agency."""
        lines = ["analyze:"]
        for r in self.fragments:
            lines.append(
                f"  {r.fragment.id} @ {r.fragment.agency}: {r.stats.rows} rows, "
                f"{r.stats.bytes} bytes, {r.stats.seconds:.3f} s"
            )
        lines.append(
            f"  plan {self.plan_seconds:.3f} s, fetch {self.fetch_seconds:.3f} s, "
            f"merge {self.merge_seconds:.3f} s, total {self.total_seconds:.3f} s, "
            f"{self.result_rows} result rows"
        )
        for agency, c in sorted(self.connectors.items()):
            lines.append(
                f"  agency {agency}: {c.fragments} fragment(s), {c.rows} rows, "
                f"{c.bytes} bytes, {c.seconds:.3f} s"
            )
        return lines


def query_stats(
    qid: str,
    runs: tuple[FragmentRun, ...],
    t0: float,
    rows: int,
    missing: tuple[str, ...],
    plan_s: float = 0.0,
    fetch_s: float = 0.0,
    merge_s: float = 0.0,
) -> QueryStats:
    """A finished query's stats (``t0``: its ``perf_counter`` start)."""
    return QueryStats(
        query_id=qid,
        connectors=connector_stats(runs),
        fragments=runs,
        plan_seconds=plan_s,
        fetch_seconds=fetch_s,
        merge_seconds=merge_s,
        total_seconds=time.perf_counter() - t0,
        result_rows=rows,
        missing=missing,
    )


def human_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def connector_stats(runs: tuple[FragmentRun, ...]) -> dict[str, ConnectorStats]:
    by: dict[str, list[FragmentRun]] = {}
    for r in runs:
        by.setdefault(r.fragment.agency, []).append(r)
    return {
        a: ConnectorStats(
            fragments=len(rs),
            rows=sum(r.stats.rows for r in rs),
            bytes=sum(r.stats.bytes for r in rs),
            seconds=max(r.stats.seconds for r in rs),
        )
        for a, rs in by.items()
    }
