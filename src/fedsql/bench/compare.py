"""Compare a federated result with the oracle's (a single DuckDB)."""

from __future__ import annotations

import decimal
import math
import re
import statistics
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import pyarrow as pa

REL_TOL = 1e-6


def tpch_query(n: int) -> str:
    return resources.files("fedsql.bench").joinpath(f"queries/q{n:02d}.sql").read_text()


def median_time(fn: Callable[[str], pa.Table], sql: str, runs: int) -> tuple[float, pa.Table]:
    """Run ``fn(sql)`` ``runs`` times: (median seconds, the last result)."""
    times = []
    out = pa.table({})
    for _ in range(runs):
        t = time.perf_counter()
        out = fn(sql)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def paired_median_times(
    fns: list[Callable[[str], pa.Table]], sql: str, runs: int
) -> list[tuple[float, pa.Table]]:
    """Each of ``fns`` run ``runs`` times on ``sql``, taking turns (a, b, a, b, ...),
    so that a shared machine's slow spells fall on both sides alike:
    [(median seconds, the last result)] in the order of ``fns``."""
    times: list[list[float]] = [[] for _ in fns]
    outs = [pa.table({}) for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            outs[i] = fn(sql)
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(ts), out) for ts, out in zip(times, outs, strict=True)]


def has_order_by(sql: str) -> bool:
    return re.search(r"\border\s+by\b", sql, re.IGNORECASE) is not None


def _norm(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def _close(a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            return False
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return math.isclose(fa, fb, rel_tol=REL_TOL, abs_tol=1e-9)
    return bool(a == b)


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    out = []
    for v in row:
        v = _norm(v)
        if isinstance(v, float):
            v = round(v, 4)
        out.append((v is None, "" if v is None else str(type(v)), v if v is not None else 0))
    return tuple(out)


def diff_tables(got: pa.Table, want: pa.Table, ordered: bool) -> str | None:
    """None when equal (floats to a relative 1e-6, order respected when ``ordered``),
    else a one-line description of the first difference."""
    if got.num_columns != want.num_columns:
        return f"{got.num_columns} columns, expected {want.num_columns}"
    if got.column_names != want.column_names:
        return f"column names {got.column_names}, expected {want.column_names}"
    if got.num_rows != want.num_rows:
        return f"{got.num_rows} rows, expected {want.num_rows}"
    g_rows = list(zip(*(c.to_pylist() for c in got.columns), strict=True)) if got.num_rows else []
    w_rows = list(zip(*(c.to_pylist() for c in want.columns), strict=True)) if want.num_rows else []
    if not ordered:
        g_rows.sort(key=_sort_key)
        w_rows.sort(key=_sort_key)
    for i, (g, w) in enumerate(zip(g_rows, w_rows, strict=True)):
        for j, (a, b) in enumerate(zip(g, w, strict=True)):
            if not _close(a, b):
                return f"row {i}, column {got.column_names[j]}: {a!r}, expected {b!r}"
    return None
