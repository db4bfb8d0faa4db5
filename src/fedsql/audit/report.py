"""``fedsql audit report``: the auditor's view of who read which agency's tables.

From connector logs (each fragment line names its tables, user, purpose, rows
and bytes) and coordinator logs (each query names its tables and holds the
agencies' receipts), an access is one fragment that read one table. A
connector log is the agency's own account; coordinator lines fill in only for
agencies whose logs were not given, so nothing is counted twice. Rows and
bytes are those of the fragments that read the table (a fragment over two
tables counts for both).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsql.audit.files import line_time
from fedsql.audit.verify import chains, records, verify_chain

BAR = "█"
COLUMNS = (
    "user",
    "agency",
    "table",
    "accesses",
    "refused",
    "rows",
    "bytes",
    "purposes",
    "first",
    "last",
)


@dataclass(frozen=True, slots=True)
class Access:
    time: dt.datetime
    user: str
    agency: str
    table: str
    purpose: str
    rows: int
    bytes: int
    outcome: str
    query_id: str


@dataclass(frozen=True, slots=True)
class Filters:
    user: str | None = None
    agency: str | None = None
    since: dt.datetime | None = None
    table: str | None = None

    def keep(self, a: Access) -> bool:
        if self.user is not None and a.user != self.user:
            return False
        if self.agency is not None and a.agency != self.agency:
            return False
        if self.since is not None and a.time < self.since:
            return False
        if self.table is not None:
            t = self.table.lower()
            name = a.table.lower()
            return t in {name, f"{a.agency}.{name}", name.split(".")[-1]}
        return True


def parse_since(text: str) -> dt.datetime:
    """An ISO date or date-time; UTC unless it says otherwise."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is not an ISO date or time (e.g. 2025-03-01)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def accesses(paths: Iterable[Path]) -> list[Access]:
    """Every access recorded in the logs, in time order."""
    own: list[Access] = []
    seen_by_coordinator: list[Access] = []
    agencies_with_logs: set[str] = set()
    streams: dict[str, dict[str, Any]] = {}  # a stream's query line, until its query_end
    for files in chains(paths):
        v = verify_chain(files)
        name = v.name or files[0].name.split(".")[0].removesuffix("-audit")
        for _, _, r in records(files):
            t = line_time(r.get("time"))
            if t is None:
                continue
            kind = r.get("kind")
            if kind is None and "query_id" in r and r.get("rpc") != "GetCatalog":
                agencies_with_logs.add(name)
                for table in r.get("tables") or ["-"]:
                    own.append(
                        Access(
                            t,
                            str(r.get("user", "")),
                            name,
                            str(table),
                            str(r.get("purpose", "")),
                            int(r.get("rows", 0)),
                            int(r.get("bytes", 0)),
                            str(r.get("outcome", "")),
                            str(r.get("query_id", "")),
                        )
                    )
            elif kind == "query" and r.get("outcome") == "streaming":
                streams[str(r.get("query_id"))] = r
            elif kind == "query":
                seen_by_coordinator += _from_query(r, r, t)
            elif kind == "query_end":
                head = streams.pop(str(r.get("query_id")), r)
                seen_by_coordinator += _from_query(head, r, line_time(head.get("time")) or t)
    merged = own + [a for a in seen_by_coordinator if a.agency not in agencies_with_logs]
    return sorted(merged, key=lambda a: (a.time, a.agency, a.table))


def _from_query(head: dict[str, Any], r: dict[str, Any], t: dt.datetime) -> list[Access]:
    """The accesses a coordinator's query line ``head`` shows, with the calls and
    receipts of ``r`` (the same line, or a stream's query_end)."""
    out = []
    for call in r.get("fragments", []):
        agency = str(call.get("agency", ""))
        receipt = call.get("receipt") or {}
        tables = [
            q.split(".", 1)[1]
            for q in head.get("tables", [])
            if q.split(".", 1)[0] == agency and "." in q
        ]
        for table in tables or ["-"]:
            out.append(
                Access(
                    t,
                    str(head.get("user", "")),
                    agency,
                    table,
                    str(head.get("purpose", "")),
                    int(receipt.get("rows", 0)),
                    int(receipt.get("ipc_bytes", 0)),
                    str(call.get("outcome", "")),
                    str(head.get("query_id", "")),
                )
            )
    return out


def summary(items: list[Access]) -> list[dict[str, Any]]:
    """Accesses grouped by (user, agency, table), most accessed first."""
    groups: dict[tuple[str, str, str], list[Access]] = {}
    for a in items:
        groups.setdefault((a.user, a.agency, a.table), []).append(a)
    rows = []
    for (user, agency, table), g in groups.items():
        rows.append(
            {
                "user": user,
                "agency": agency,
                "table": table,
                "accesses": len(g),
                "refused": sum(1 for a in g if a.outcome != "ok"),
                "rows": sum(a.rows for a in g),
                "bytes": sum(a.bytes for a in g),
                "purposes": "; ".join(sorted({a.purpose for a in g if a.purpose})),
                "first": min(a.time for a in g).isoformat(timespec="seconds"),
                "last": max(a.time for a in g).isoformat(timespec="seconds"),
            }
        )
    return sorted(rows, key=lambda r: (-r["accesses"], r["user"], r["agency"], r["table"]))


def buckets(items: list[Access]) -> tuple[str, list[tuple[str, dict[str, int]]]]:
    """(unit, [(bucket label, accesses per agency)]): by hour when the accesses span
    two days or less, else by day; empty buckets in between are kept."""
    if not items:
        return "day", []
    lo, hi = items[0].time, items[-1].time
    hourly = hi - lo <= dt.timedelta(days=2)
    step = dt.timedelta(hours=1) if hourly else dt.timedelta(days=1)

    def floor(t: dt.datetime) -> dt.datetime:
        t = t.astimezone(dt.UTC)
        return (
            t.replace(minute=0, second=0, microsecond=0)
            if hourly
            else t.replace(hour=0, minute=0, second=0, microsecond=0)
        )

    counts: dict[dt.datetime, dict[str, int]] = {}
    for a in items:
        b = counts.setdefault(floor(a.time), {})
        b[a.agency] = b.get(a.agency, 0) + 1
    out = []
    t = floor(lo)
    while t <= floor(hi):
        out.append((t.strftime("%Y-%m-%d %H:00" if hourly else "%Y-%m-%d"), counts.get(t, {})))
        t += step
    return ("hour" if hourly else "day"), out


def bar_chart(items: list[Access], width: int = 40) -> str:
    """Accesses over time as a terminal bar chart."""
    unit, rows = buckets(items)
    if not rows:
        return "(no accesses)"
    most = max(sum(c.values()) for _, c in rows) or 1
    label = max(len(b) for b, _ in rows)
    lines = [f"accesses per {unit} (UTC)"]
    for b, c in rows:
        n = sum(c.values())
        bar = BAR * max(1 if n else 0, round(n / most * width))
        lines.append(f"{b.ljust(label)} | {bar} {n}")
    return "\n".join(lines)


def png_chart(items: list[Access], path: Path) -> str:
    """Write accesses over time per agency as a PNG; returns "" or why it was not written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'fedsql[bench]'): no PNG written"
    unit, rows = buckets(items)
    agencies = sorted({a.agency for a in items})
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.4), 4))
    bottom = [0] * len(rows)
    for agency in agencies:
        heights = [c.get(agency, 0) for _, c in rows]
        ax.bar(range(len(rows)), heights, bottom=bottom, label=agency)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(range(len(rows)), [b for b, _ in rows], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("accesses (fragments × tables)")
    ax.set_title(f"Accesses per {unit} (UTC)")
    if agencies:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ""
