"""Running and recent queries of the service (`fedsql queries`, `fedsql cancel`)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fedsql.execute import QueryWatch

SQL_SHOWN = 200  # characters of a query's text kept for the listing


@dataclass(slots=True)
class QueryEntry:
    """One query: filled in while it runs, frozen in spirit once it has ended."""

    id: str
    user: str
    sql: str
    watch: QueryWatch | None  # None once ended: its figures are kept in ``agencies``
    started: float = field(default_factory=time.time)
    ended: float | None = None
    state: str = "running"  # running | done | failed | cancelled
    rows: int | None = None
    error: str | None = None
    agencies: dict[str, tuple[int, int]] = field(default_factory=dict)  # rows, bytes

    def to_json(self) -> dict[str, Any]:
        agencies = self.watch.progress() if self.watch is not None else self.agencies
        return {
            "id": self.id,
            "user": self.user,
            "state": self.state,
            "started": self.started,
            "seconds": round((self.ended or time.time()) - self.started, 3),
            "rows": self.rows,
            "agencies": {a: {"rows": r, "bytes": b} for a, (r, b) in sorted(agencies.items())},
            "error": self.error,
            "sql": self.sql,
        }


class QueryBoard:
    """Queries now running, and the last ``history`` that ended."""

    def __init__(self, history: int = 200) -> None:
        self._running: dict[str, QueryEntry] = {}
        self._recent: deque[QueryEntry] = deque(maxlen=max(1, history))
        self._lock = threading.Lock()

    def start(self, user: str, sql: str) -> QueryEntry:
        text = " ".join(sql.split())
        entry = QueryEntry(
            id=uuid.uuid4().hex[:16],
            user=user,
            sql=text if len(text) <= SQL_SHOWN else text[: SQL_SHOWN - 3] + "...",
            watch=QueryWatch(),
        )
        with self._lock:
            self._running[entry.id] = entry
        return entry

    def end(self, entry: QueryEntry, state: str, rows: int | None, error: str | None) -> None:
        if entry.watch is not None:
            entry.agencies = entry.watch.progress()
        entry.watch = None  # a finished query keeps no connections or fetched tables
        entry.rows, entry.error, entry.state = rows, error, state
        entry.ended = time.time()
        with self._lock:
            self._running.pop(entry.id, None)
            self._recent.append(entry)

    def list(self, user: str | None) -> list[dict[str, Any]]:
        """Running first (oldest first), then recent (newest first); ``user``: only theirs."""
        with self._lock:
            entries = sorted(self._running.values(), key=lambda e: e.started)
            entries += reversed(self._recent)
        return [e.to_json() for e in entries if user is None or e.user == user]

    def cancel(self, query_id: str, user: str | None) -> str:
        """Cancel a running query; returns what happened ("cancelled", "finished", "unknown")."""
        with self._lock:
            entry = self._running.get(query_id)
            recent = any(e.id == query_id for e in self._recent if user in (None, e.user))
        if entry is None or (user is not None and entry.user != user):
            return "finished" if recent else "unknown"
        watch = entry.watch  # None if it ended meanwhile
        if watch is None:
            return "finished"
        watch.cancel()
        return "cancelled"
