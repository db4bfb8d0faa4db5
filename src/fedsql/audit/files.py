"""A log's files: which files a path names, and how rotated files chain in order."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsql.audit.chain import read_tail

LOG_SUFFIXES = (".jsonl",)  # what a directory contributes (rotated files keep it)


def log_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, with each directory replaced by the logs in it."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.suffix in LOG_SUFFIXES)
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            yield n, raw.rstrip(b"\n").decode("utf-8", "replace")


def parse_line(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


@dataclass(frozen=True, slots=True)
class _Ends:
    path: Path
    first: dict[str, Any]
    link: str  # what follows the last line
    last_seq: int


def _ends(path: Path) -> _Ends:
    with path.open("rb") as f:
        first = parse_line(f.readline().decode("utf-8", "replace")) or {}
    link, seq, _ = read_tail(path)
    return _Ends(path, first, link, seq)


def chains(paths: Iterable[Path]) -> list[list[Path]]:
    """Group log files into chains, each in order: a file follows another when its
    first line continues that file's last (by hash, else by the file name its
    ``rotate`` line gives)."""
    ends = [_ends(p) for p in log_files(paths)]
    by_name = {e.path.name: e for e in ends}
    follows: dict[Path, Path] = {}
    for e in ends:
        if e.first.get("kind") != "rotate":
            continue
        before = [
            o
            for o in ends
            if o is not e and o.link == e.first.get("prev") and o.last_seq + 1 == e.first.get("seq")
        ]
        named = by_name.get(str(e.first.get("prev_file", "")))
        pick = before[0] if before else named
        if pick is not None and pick is not e and pick.path not in follows.values():
            follows[e.path] = pick.path
    after = {v: k for k, v in follows.items()}
    out = []
    for e in ends:
        if e.path in follows:
            continue
        chain, p = [e.path], e.path
        while p in after and after[p] not in chain:
            p = after[p]
            chain.append(p)
        out.append(chain)
    placed = {p for c in out for p in c}
    out += [[e.path] for e in ends if e.path not in placed]  # a cycle of renamed copies
    return out


def line_time(value: object) -> dt.datetime | None:
    """A log line's time (ISO 8601, UTC unless it says otherwise); None if it is none.

    >>> line_time("2026-12-03T10:00:00"), line_time(7)
    (datetime.datetime(2026, 12, 3, 10, 0, tzinfo=datetime.timezone.utc), None)
    """
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
