"""``fedsql status --latency``: the connectors' fragment latency histograms as a table.

Each connector counts its fragments' latencies in cumulative buckets
(``connectors/metrics.py``, ``LATENCY_BUCKETS``); quantiles are estimated from
them the way Prometheus' ``histogram_quantile`` does, so the figures here are
the ones a Prometheus dashboard over the same connector shows.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from fedsql.wire import LatencyHistogram, NodeStatus

QUANTILES = (0.5, 0.95, 0.99)


def quantile(h: LatencyHistogram, q: float) -> float | None:
    """The ``q``-quantile of ``h`` in seconds: linear within the bucket the rank falls
    in (Prometheus' ``histogram_quantile``); ``inf`` when it is beyond the highest
    bound; None with no fragments.

    >>> h = LatencyHistogram((0.1, 1.0), (50, 100), 100, 20.0)
    >>> quantile(h, 0.5), round(quantile(h, 0.75), 3)
    (0.1, 0.55)
    >>> quantile(LatencyHistogram((0.1,), (0,), 2, 9.0), 0.5)
    inf
    """
    if h.count == 0:
        return None
    rank = q * h.count
    below, lower = 0, 0.0
    for bound, cumulative in zip(h.upper_bounds, h.cumulative_counts, strict=True):
        if cumulative >= rank and cumulative > below:
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        below, lower = cumulative, bound
    return float("inf")


def duration(seconds: float | None) -> str:
    """Seconds as people read them.

    >>> duration(0.0123), duration(2.5), duration(float("inf")), duration(None)
    ('12.3 ms', '2.50 s', 'over the top bucket', '')
    """
    if seconds is None:
        return ""
    if seconds == float("inf"):
        return "over the top bucket"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def latency_table(statuses: Iterable[tuple[str, NodeStatus | None]]) -> pa.Table:
    """One row per (agency, outcome): fragments, mean and quantiles of their latency."""
    cols: dict[str, list[object]] = {"agency": [], "outcome": [], "fragments": [], "mean": []}
    cols |= {f"p{round(q * 100)}": [] for q in QUANTILES}
    for agency, status in statuses:
        for outcome, h in sorted((status.latency if status else {}).items()):
            cols["agency"].append(agency)
            cols["outcome"].append(outcome)
            cols["fragments"].append(h.count)
            cols["mean"].append(duration(h.sum_seconds / h.count if h.count else None))
            for q in QUANTILES:
                cols[f"p{round(q * 100)}"].append(duration(quantile(h, q)))
    types = {"fragments": pa.int64()}
    return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in cols.items()})
