"""A running query's handle for other threads: progress per agency, and cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import duckdb

from fedsql.errors import QueryCancelled

if TYPE_CHECKING:
    from fedsql.fetch import Fetch
    from fedsql.stats import QueryStats

INTERRUPT_EVERY = 0.05  # seconds between interrupts of a cancelled query's merge


class QueryWatch:
    """Another thread's handle on a running query: rows and bytes per agency as they
    stream in, and ``cancel()``, which cancels the in-flight calls (the query then
    fails and each agency is sent a Cancel for its id, as on any failure)."""

    def __init__(
        self,
        on_progress: Callable[[QueryWatch], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self.on_progress = on_progress
        self.on_cancel = on_cancel  # what else the first cancel() stops (e.g. a remote query)
        self.cancelled = False
        self.stats: QueryStats | None = None  # set when the query has finished
        self._fetches: list[Fetch] = []
        self._merges: set[duckdb.DuckDBPyConnection] = set()  # merge cursors now running
        self._lock = threading.Lock()

    def progress(self) -> dict[str, tuple[int, int]]:
        """agency -> (rows, bytes) received so far."""
        with self._lock:
            fetches = list(self._fetches)
        out: dict[str, tuple[int, int]] = {}
        for f in fetches:
            rows, nbytes = out.get(f.fragment.agency, (0, 0))
            out[f.fragment.agency] = (rows + f.rows, nbytes + f.bytes)
        return out

    def cancel(self) -> None:
        with self._lock:
            first = not self.cancelled
            self.cancelled = True
            fetches = list(self._fetches)
        for f in fetches:
            f.cancel()
        if first:  # and the merge: DuckDB's interrupt, until the merge has stopped
            threading.Thread(target=self._interrupt_merges, daemon=True).start()
            if self.on_cancel is not None:
                threading.Thread(target=self.on_cancel, daemon=True).start()

    def _interrupt_merges(self) -> None:
        # A cursor interrupted just before its statement starts would run it to the
        # end (DuckDB clears the flag when a statement begins): interrupt again
        # until no merge of this query runs.
        while True:
            with self._lock:
                merges = list(self._merges)
            if not merges:
                return
            for con in merges:
                con.interrupt()
            time.sleep(INTERRUPT_EVERY)

    def merging(self, con: duckdb.DuckDBPyConnection) -> None:
        """``con`` runs this query's merge now (a cancel interrupts it)."""
        with self._lock:
            self._merges.add(con)
            cancelled = self.cancelled
        if cancelled:
            self._merges.discard(con)
            raise QueryCancelled("the query was cancelled")

    def merged(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._merges.discard(con)

    def attach(self, fetches: list[Fetch]) -> None:
        with self._lock:
            self._fetches.extend(fetches)
            for f in fetches:
                f.watch = self
            cancelled = self.cancelled
        if cancelled:
            raise QueryCancelled("the query was cancelled")

    def moved(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)
