"""Results waiting for their DoGet, held to per-user caps (issue 17).

A statement runs at GetFlightInfo and its result waits, in memory, under a
one-time ticket. Unbounded, twelve unfetched calls took a service from 297 to
1,807 MiB in 8 s. Each user may now hold ``max_results_per_user`` results of at
most ``max_result_bytes_per_user`` bytes together, each for ``result_ttl_seconds``.

Over a cap, the user's *oldest* unread results are dropped rather than the new
one refused. Flight SQL clients fetch a result right after asking for it
(ADBC's ``execute`` then ``fetch``; JDBC's ``executeQuery``); results left unread
are ones a client abandoned (a notebook cell run again, a cursor never fetched,
a tool that stopped reading). Refusing the new query would punish the query the
analyst is waiting for, for the sake of ones nobody is; dropping the oldest
keeps memory bounded just as well, and a client that does come back for an
evicted result is told it is gone and to run the query again. A single result
over the byte cap is refused: no eviction makes it fit.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from fedsql.service.status import RESOURCE_EXHAUSTED, Refused


@dataclass(frozen=True, slots=True)
class _Held:
    user: str
    table: pa.Table
    nbytes: int
    expires: float


def too_big(nbytes: int, cap: int) -> Refused:
    return Refused(
        RESOURCE_EXHAUSTED,
        f"the result is {_mib(nbytes)}, over the {_mib(cap)} a user's results may hold "
        "([service] max_result_bytes_per_user); select fewer columns or rows (WHERE, "
        "LIMIT) or aggregate, or ask the service's operator for a larger cap",
    )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class ResultStore:
    """One-time results by handle; per user at most ``max_count`` and ``max_bytes``."""

    def __init__(
        self,
        max_count: int,
        max_bytes: int,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._held: dict[bytes, _Held] = {}  # insertion order: oldest first
        self._lock = threading.Lock()

    def put(self, user: str, table: pa.Table) -> bytes:
        """Keep ``table`` for ``user``; its handle. Refused if it alone is over the cap."""
        nbytes = table.nbytes
        if nbytes > self.max_bytes:
            raise too_big(nbytes, self.max_bytes)
        handle = secrets.token_bytes(16)
        now = self._clock()
        with self._lock:
            self._purge(now)
            mine = [(h, r) for h, r in self._held.items() if r.user == user]
            count, total = len(mine), sum(r.nbytes for _, r in mine)
            for h, r in mine:  # oldest first
                if count < self.max_count and total + nbytes <= self.max_bytes:
                    break
                del self._held[h]
                count, total = count - 1, total - r.nbytes
            self._held[handle] = _Held(user, table, nbytes, now + self.ttl)
        return handle

    def take(self, user: str, handle: bytes) -> pa.Table | None:
        """The result under ``handle`` if it is ``user``'s and still there (then gone)."""
        with self._lock:
            self._purge(self._clock())
            r = self._held.get(handle)
            if r is None or r.user != user:
                return None
            del self._held[handle]
        return r.table

    def drop(self, handle: bytes) -> None:
        with self._lock:
            self._held.pop(handle, None)

    def purge(self) -> None:
        """Drop expired results (the service calls this every few seconds)."""
        with self._lock:
            self._purge(self._clock())

    def held(self, user: str) -> tuple[int, int]:
        """(results, bytes) ``user`` holds now."""
        with self._lock:
            mine = [r for r in self._held.values() if r.user == user]
        return len(mine), sum(r.nbytes for r in mine)

    def _purge(self, now: float) -> None:
        for h in [h for h, r in self._held.items() if r.expires <= now]:
            del self._held[h]
