"""The connector's audit log: one JSON line per fragment, hash-chained.

Every line carries ``prev``, the SHA-256 (hex) of the previous line's bytes
(the first line of a log chains from ``GENESIS``), ``seq``, its position
(1-based), and ``hash``, the SHA-256 of the line's own canonical JSON without
the ``hash`` key. Editing, deleting, inserting or reordering a line breaks the
chain at that place; ``verify`` (``fedsql audit verify LOG``) names the first
line where it breaks. What a chain alone cannot show is the removal of the
last lines: compare the head hash ``verify`` prints with one kept elsewhere.

Lines are appended, flushed and fsync'ed before the fragment's last result
message leaves the connector. A restarted connector continues the chain from
the last line already in the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlglot import exp

from fedsql.connectors.guard import EXPOSED_META

GENESIS = hashlib.sha256(b"fedsql audit log v1").hexdigest()


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(record: dict[str, Any], prev: str, seq: int) -> str:
    """The line (without newline) for ``record`` after a line hashing to ``prev``."""
    body = {k: v for k, v in record.items() if k not in ("hash", "prev", "seq")}
    body.update(prev=prev, seq=seq)
    body["hash"] = _digest(_canonical(body))
    return _canonical(body)


class AuditLog:
    """Append-only, hash-chained JSON lines, durable before results leave."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self.path = path
        self._prev, self._seq = GENESIS, 0
        self._fd: int | None = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._prev, self._seq = _tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if path.stat().st_size and not _ends_with_newline(path):
            # A line cut short by a crash: end it, so that it stays one (broken) line
            # that verify reports, instead of gluing the next record onto it.
            os.write(self._fd, b"\n")

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        with self._lock:
            line = seal(record, self._prev, self._seq + 1)
            data = (line + "\n").encode("utf-8")
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
            self._prev, self._seq = _digest(line), self._seq + 1

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _tail(path: Path) -> tuple[str, int]:
    """(hash of the last line, its seq) of an existing log, or the genesis."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return GENESIS, 0
    if size == 0:
        return GENESIS, 0
    with path.open("rb") as f:
        back = min(size, 1 << 16)
        while True:
            f.seek(size - back)
            chunk = f.read(back)
            lines = chunk.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or back == size:
                break
            back = min(size, back * 4)
    last = lines[-1].decode("utf-8", "replace")
    try:
        seq = int(json.loads(last).get("seq", 0))
    except (ValueError, AttributeError):
        seq = 0  # a damaged last line: keep chaining from its bytes; verify will show it
    return _digest(last), seq


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    lines: int  # lines checked (up to and including the first broken one)
    head: str  # hash of the last good line (GENESIS for an empty log)
    broken_line: int | None = None
    reason: str = ""
    outcomes: tuple[tuple[str, int], ...] = ()  # (outcome, count) over intact lines


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            yield n, raw.rstrip(b"\n").decode("utf-8", "replace")


def verify(path: Path) -> Verdict:
    """Check the whole chain; the verdict names the first line where it breaks."""
    prev, n = GENESIS, 0
    counts: dict[str, int] = {}

    def broken(line: int, why: str) -> Verdict:
        return Verdict(False, line, prev, line, why, tuple(sorted(counts.items())))

    for n, line in _lines(path):
        try:
            rec = json.loads(line)
        except ValueError:
            return broken(n, "not a JSON line (edited or truncated)")
        if not isinstance(rec, dict) or not {"prev", "seq", "hash"} <= rec.keys():
            return broken(n, "not an audit record (no prev/seq/hash)")
        if rec["prev"] != prev:
            return broken(
                n,
                f"does not follow line {n - 1}: a line before it was edited, deleted, "
                "inserted or moved"
                if n > 1
                else "does not start the chain: lines were removed from the start",
            )
        if rec["seq"] != n:
            return broken(n, f"is record #{rec['seq']}, expected #{n}: lines were deleted or moved")
        body = {k: v for k, v in rec.items() if k != "hash"}
        if _digest(_canonical(body)) != rec["hash"] or _canonical(rec) != line:
            return broken(n, "its content does not match its hash: the line was edited")
        prev = _digest(line)
        out = str(rec.get("outcome", "?"))
        counts[out] = counts.get(out, 0) + 1
    return Verdict(True, n, prev, None, "", tuple(sorted(counts.items())))


MAX_AUDITED_SQL = 64 * 1024  # characters of a fragment's SQL kept in its audit line


def audited_sql(sql: str) -> dict[str, Any]:
    """A fragment's SQL as its audit line keeps it: all of it up to
    :data:`MAX_AUDITED_SQL` characters, else the start, its length and its SHA-256
    (one request must not write megabytes to the log)."""
    if len(sql) <= MAX_AUDITED_SQL:
        return {"sql": sql}
    return {
        "sql": sql[:MAX_AUDITED_SQL],
        "sql_truncated": True,
        "sql_chars": len(sql),
        "sql_sha256": hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest(),
    }


_DQUOTED = re.compile(r'"([^"]*)"')
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[\w.@+~-]+[/\\])+[\w.@+~-]*")


def public_message(msg: str, known: frozenset[str] = frozenset()) -> str:
    """An error message fit to leave the agency: string literals (they may be data
    values) and file paths are blanked; double-quoted names stay only if they are
    ``known`` table or column names (lower case).

    Messages quote values without escaping them, so a value may hold the quote
    itself (``'O'Brien'``): everything from the first single quote to the last is
    blanked as one, and from the first double-quoted text that is not a known name
    to the last double quote.

    >>> public_message("Could not convert string 'NID42' to INT32 in /srv/a/b.duckdb")
    "Could not convert string '…' to INT32 in <path>"
    >>> public_message("Could not convert string 'O'Brien, 1' to INT32")
    "Could not convert string '…' to INT32"
    >>> public_message('invalid input syntax for type integer: "a"b"c" in "people"', {"people"})
    'invalid input syntax for type integer: "…"'
    """
    first, last = msg.find("'"), msg.rfind("'")
    if first >= 0:
        msg = msg[:first] + "'…'" + (msg[last + 1 :] if last > first else "")
    for m in _DQUOTED.finditer(msg):
        if m.group(1).lower() not in known:
            end = msg.rfind('"')
            msg = msg[: m.start()] + '"…"' + msg[end + 1 :]
            break
    else:
        if msg.count('"') % 2:  # an unmatched quote: what follows it may be a value
            msg = msg[: msg.rfind('"')] + '"…"'
    return _PATH.sub("<path>", msg)


def touched(tree: exp.Expr, schemas: dict[str, pa.Schema]) -> tuple[list[str], list[str]]:
    """(exposed tables, their columns) a checked fragment reads, for the audit log.

    A column counts when its name is a column of a table the fragment reads
    (``*`` counts them all): an over-approximation, never an omission.
    """
    tables = sorted(
        {str(t.meta[EXPOSED_META]) for t in tree.find_all(exp.Table) if EXPOSED_META in t.meta}
    )
    star = any(not isinstance(s.parent, exp.Count) for s in tree.find_all(exp.Star))
    names = {c.name.lower() for c in tree.find_all(exp.Column)}
    cols = sorted(
        f"{t}.{f.name}" for t in tables for f in schemas[t] if star or f.name.lower() in names
    )
    return tables, cols
