"""Load and health of a connector node: admission (a bounded number of fragments
at once), counters, latency histograms, and Prometheus text metrics on an
optional HTTP port.

Prometheus text exposition format 0.0.4:
https://prometheus.io/docs/instrumenting/exposition_formats/ ; histograms as
Prometheus client libraries write them (cumulative ``_bucket{le=...}``, ``_sum``,
``_count``): https://prometheus.io/docs/concepts/metric_types/#histogram
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fedsql.wire import LatencyHistogram

log = logging.getLogger(__name__)

# A fragment waits this long for a free slot before it is refused as busy
# (the coordinator retries with backoff): short queues absorb bursts, long
# ones only hide overload.
SLOT_WAIT_SECONDS = 2.0
# TESTING AID ONLY: seconds a connector waits before each record batch it
# sends, to simulate a slow agency in the reliability tests. Never set it in
# production; the connector warns at start when it is set.
TEST_DELAY_ENV = "FEDSQL_TEST_DELAY_SECONDS"
# Upper bounds (seconds) of the fragment latency buckets: Prometheus' default
# buckets (5 ms to 10 s), then on to the default [limits] max_seconds (300 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)


def test_delay_seconds() -> float:
    raw = os.environ.get(TEST_DELAY_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        return 0.0


class NodeMetrics:
    """Counters of one connector node since it started (thread-safe)."""

    def __init__(
        self, name: str, max_concurrent: int, user_share: int = 0, coordinator_share: int = 0
    ) -> None:
        self.name = name
        self.started = time.time()
        self.max_concurrent = max_concurrent
        self.user_share = user_share or max_concurrent
        self.coordinator_share = coordinator_share or max_concurrent
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self.active = 0
        self._by_user: dict[str, int] = {}
        self._by_coordinator: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        # outcome -> (fragments per bucket, one more for +Inf; sum of seconds)
        self._latency: dict[str, tuple[list[int], list[float]]] = {}
        self.rows = 0
        self.bytes = 0

    def _full(self, user: str, coordinator: str) -> str:
        """Why a fragment of (user, coordinator) may not start now ("" when it may)."""
        if self.active >= self.max_concurrent:
            return "node"
        if self._by_user.get(user, 0) >= self.user_share:
            return "user"
        if self._by_coordinator.get(coordinator, 0) >= self.coordinator_share:
            return "coordinator"
        return ""

    def admit(self, wait: float, user: str = "", coordinator: str = "") -> str:
        """Take a fragment slot within this user's and this coordinator's share,
        waiting at most ``wait`` seconds. Returns "" when admitted, else what is
        full: "node", "user" or "coordinator"."""
        end = time.monotonic() + max(0.0, wait)
        with self._freed:
            while True:
                full = self._full(user, coordinator)
                if not full:
                    break
                left = end - time.monotonic()
                if left <= 0:
                    return full
                self._freed.wait(left)
            self.active += 1
            self._by_user[user] = self._by_user.get(user, 0) + 1
            self._by_coordinator[coordinator] = self._by_coordinator.get(coordinator, 0) + 1
        return ""

    def release(self, user: str = "", coordinator: str = "") -> None:
        with self._freed:
            self.active -= 1
            for counts, key in ((self._by_user, user), (self._by_coordinator, coordinator)):
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]
            self._freed.notify_all()

    def finished(
        self, outcome: str, rows: int = 0, nbytes: int = 0, seconds: float | None = None
    ) -> None:
        """Count one finished fragment (``seconds``: its latency, None: not measured)."""
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.rows += rows
            self.bytes += nbytes
            if seconds is not None:
                counts, total = self._latency.setdefault(
                    outcome, ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
                )
                counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: v <= bound
                total[0] += seconds

    def record(self, line: Mapping[str, Any]) -> None:
        """Count the fragment an audit line (see ``server.py``) records."""
        self.finished(
            line["outcome"], line.get("rows", 0), line.get("bytes", 0), fragment_seconds(line)
        )

    def snapshot(self) -> tuple[int, dict[str, int], int, int]:
        with self._lock:
            return self.active, dict(self.outcomes), self.rows, self.bytes

    def latency(self) -> dict[str, LatencyHistogram]:
        """Latency histograms by outcome (cumulative, as Prometheus has them)."""
        with self._lock:
            raw = {o: (list(c), t[0]) for o, (c, t) in self._latency.items()}
        out = {}
        for outcome, (counts, total) in sorted(raw.items()):
            cumulative, n = [], 0
            for c in counts[:-1]:
                n += c
                cumulative.append(n)
            out[outcome] = LatencyHistogram(
                LATENCY_BUCKETS, tuple(cumulative), n + counts[-1], total
            )
        return out

    def prometheus(self) -> str:
        active, outcomes, rows, nbytes = self.snapshot()
        label = f'connector="{_escape(self.name)}"'
        errors = sum(n for o, n in outcomes.items() if o not in ("ok", "cancelled"))
        lines = [
            "# HELP fedsql_fragments_total Fragments finished, by outcome.",
            "# TYPE fedsql_fragments_total counter",
            *(
                f'fedsql_fragments_total{{{label},outcome="{_escape(o)}"}} {n}'
                for o, n in sorted(outcomes.items())
            ),
            "# HELP fedsql_queries_total Fragments received (one per query per connector "
            "unless a query sends several).",
            "# TYPE fedsql_queries_total counter",
            f"fedsql_queries_total{{{label}}} {sum(outcomes.values()) + active}",
            "# HELP fedsql_errors_total Fragments that failed, were refused or found the node "
            "busy.",
            "# TYPE fedsql_errors_total counter",
            f"fedsql_errors_total{{{label}}} {errors}",
            "# HELP fedsql_rows_total Rows streamed to coordinators.",
            "# TYPE fedsql_rows_total counter",
            f"fedsql_rows_total{{{label}}} {rows}",
            "# HELP fedsql_bytes_total Arrow IPC bytes streamed to coordinators.",
            "# TYPE fedsql_bytes_total counter",
            f"fedsql_bytes_total{{{label}}} {nbytes}",
            "# HELP fedsql_active_fragments Fragments executing now.",
            "# TYPE fedsql_active_fragments gauge",
            f"fedsql_active_fragments{{{label}}} {active}",
            "# HELP fedsql_max_concurrent_fragments Fragments that may execute at once.",
            "# TYPE fedsql_max_concurrent_fragments gauge",
            f"fedsql_max_concurrent_fragments{{{label}}} {self.max_concurrent}",
            "# HELP fedsql_uptime_seconds Seconds since the node started.",
            "# TYPE fedsql_uptime_seconds gauge",
            f"fedsql_uptime_seconds{{{label}}} {time.time() - self.started:.3f}",
            "# HELP fedsql_fragment_seconds Fragment latency, from the call's arrival to its "
            "audit line, by outcome.",
            "# TYPE fedsql_fragment_seconds histogram",
        ]
        for outcome, h in self.latency().items():
            tag = f'{label},outcome="{_escape(outcome)}"'
            lines += [
                f'fedsql_fragment_seconds_bucket{{{tag},le="{b:g}"}} {n}'
                for b, n in zip(h.upper_bounds, h.cumulative_counts, strict=True)
            ]
            lines += [
                f'fedsql_fragment_seconds_bucket{{{tag},le="+Inf"}} {h.count}',
                f"fedsql_fragment_seconds_sum{{{tag}}} {h.sum_seconds:.6f}",
                f"fedsql_fragment_seconds_count{{{tag}}} {h.count}",
            ]
        return "\n".join(lines) + "\n"


def fragment_seconds(line: Mapping[str, Any]) -> float | None:
    """A fragment's latency from its audit line: ``seconds`` where it ran (measured
    from its arrival), else from the line's ``time`` (its arrival, in milliseconds)
    to now; None when the line has neither."""
    if "seconds" in line:
        return max(0.0, float(line["seconds"]))
    try:
        arrived = dt.datetime.fromisoformat(str(line["time"]))
    except (KeyError, ValueError):
        return None
    if arrived.tzinfo is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - arrived).total_seconds())


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve_metrics(metrics: NodeMetrics, listen: str) -> ThreadingHTTPServer:
    """Serve ``GET /metrics`` on ``listen`` (HOST:PORT) from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = metrics.prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("metrics: " + format, *args)

    host, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
